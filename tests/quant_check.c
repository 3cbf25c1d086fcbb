/*
 * quant_check.c — checks the C block decoders and dot products against
 * tensors written by tests/reference/quants.py: for every tensor NAME of a
 * quantised type with a float32 companion NAME.ref (the Python decoder's
 * values), each row decoded by dw_dequant_row must equal NAME.ref bit for
 * bit, and dw_vec_dot of each row with the F32 vector "x" must equal the
 * float64 dot of NAME.ref with x within 1e-5 of Σ|terms| (f32 accumulation).
 *
 * usage: quant_check FILE.gguf   (exit 0: all agree; 1: a mismatch, printed)
 */
#include "llm/gguf.h"
#include "llm/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: quant_check FILE.gguf\n");
    return 2;
  }
  dw_gguf *g;
  if (dw_gguf_open(argv[1], false, &g) != DW_OK) {
    fprintf(stderr, "quant_check: %s\n", dw_last_error());
    return 2;
  }
  const dw_gguf_tensor *xt = dw_gguf_tensor_find(g, "x");
  if (!xt || xt->type != GGML_F32) {
    fprintf(stderr, "quant_check: no F32 tensor 'x'\n");
    return 2;
  }
  const float *x = (const float *)xt->data;
  int bad = 0, checked = 0;
  for (uint64_t i = 0; i < g->n_tensors; i++) {
    const dw_gguf_tensor *t = &g->tensors[i];
    if (t->type == GGML_F32) continue;
    char rn[80];
    snprintf(rn, sizeof rn, "%s.ref", t->name);
    const dw_gguf_tensor *ref = dw_gguf_tensor_find(g, rn);
    if (!ref || ref->type != GGML_F32 || ref->n_elems != t->n_elems || t->ne[0] > xt->ne[0]) {
      fprintf(stderr, "quant_check: %s: no matching %s\n", t->name, rn);
      return 2;
    }
    if (!dw_quant_supported(t->type)) {
      printf("FAIL %-12s type %s not supported\n", t->name, dw_ggml_type_name(t->type));
      bad++;
      continue;
    }
    int64_t n = (int64_t)t->ne[0], rows = (int64_t)(t->n_elems / t->ne[0]);
    size_t rb = dw_quant_row_bytes(t->type, n);
    float *row = malloc((size_t)n * sizeof *row);
    int64_t diff = 0, first = -1;
    float got_first = 0;
    double worst = 0;
    for (int64_t r = 0; r < rows; r++) {
      const uint8_t *q = t->data + (size_t)r * rb;
      const float *want = (const float *)ref->data + r * n;
      dw_dequant_row(t->type, q, row, n);
      for (int64_t k = 0; k < n; k++)
        if (memcmp(&row[k], &want[k], 4)) {
          if (first < 0) first = r * n + k, got_first = row[k];
          diff++;
        }
      double s = 0, mag = 0;
      for (int64_t k = 0; k < n; k++) s += (double)want[k] * x[k], mag += fabs((double)want[k] * x[k]);
      double e = fabs((double)dw_vec_dot(t->type, q, x, n) - s) / (mag > 0 ? mag : 1);
      if (e > worst) worst = e;
    }
    bool ok = diff == 0 && worst <= 1e-5;
    printf("%s %-14s %-6s %8lld elements: %s, dot error %.1e of sum|terms|\n", ok ? "ok  " : "FAIL", t->name,
           dw_ggml_type_name(t->type), (long long)t->n_elems,
           diff ? "decoded values differ" : "decoded bit for bit", worst);
    if (diff)
      printf("     first difference at element %lld: %.9g, reference %.9g\n", (long long)first,
             (double)got_first, (double)((const float *)ref->data)[first]);
    bad += !ok, checked++;
    free(row);
  }
  dw_gguf_close(g);
  printf("%d tensors checked, %d failed\n", checked, bad);
  return bad || !checked;
}
