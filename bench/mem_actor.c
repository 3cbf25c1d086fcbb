/*
 * mem_actor.c — the actor of the memory-state benchmark: "fill N" fills N
 * MiB of its heap with text-like bytes (16 letters: zstd halves them),
 * "sum" reads every byte back and emits a checksum, "write" changes one
 * byte in every 4 KiB page.
 */
#include <driftwood_guest.h>

#include <stdlib.h>
#include <string.h>

static unsigned char *heap;
static size_t heap_len;

__attribute__((export_name("dw_alloc"))) void *dw_alloc(uint32_t len) { return malloc(len ? len : 1); }

__attribute__((export_name("dw_on_message"))) int32_t dw_on_message(char *msg, uint32_t len) {
  char cmd[16] = {0};
  memcpy(cmd, msg, len < 15 ? len : 15);
  free(msg);
  if (!strncmp(cmd, "fill ", 5)) {
    size_t n = (size_t)atoi(cmd + 5) << 20;
    unsigned char *p = realloc(heap, n);
    if (!p) return DWG_ERR_NOMEM;
    heap = p, heap_len = n;
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
      x ^= x << 13, x ^= x >> 17, x ^= x << 5;
      heap[i] = (unsigned char)('a' + (x & 15));
    }
    return 0;
  }
  if (!strcmp(cmd, "sum")) {
    uint64_t s = 0;
    for (size_t i = 0; i < heap_len; i++) s = s * 31 + heap[i];
    char out[32];
    int k = 0;
    for (int b = 60; b >= 0; b -= 4) out[k++] = "0123456789abcdef"[(s >> b) & 15];
    out[k++] = '\n';
    return dwg_emit(out, (uint32_t)k);
  }
  if (!strcmp(cmd, "write")) {
    for (size_t i = 0; i < heap_len; i += 4096) heap[i]++;
    return 0;
  }
  return DWG_ERR_INVALID_ARG;
}
