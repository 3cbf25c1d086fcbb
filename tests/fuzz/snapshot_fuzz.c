/*
 * snapshot_fuzz.c — libFuzzer target for thawing: the container parser,
 * section checksums, decompression and every section decoder, against a
 * real runtime, module (the tests' echo actor) and model.
 *
 * Each input is thawed as it is, and also spliced into a valid snapshot
 * (DW_FUZZ_SNAPSHOT): its first byte picks a section whose payload the rest
 * of the input replaces, re-sealed with a correct checksum, so mutations
 * reach the section decoders instead of stopping at the checksum.
 *
 * Environment: DW_FUZZ_MODULE (echo_actor.wasm), DW_FUZZ_MODEL (a GGUF),
 * DW_FUZZ_SNAPSHOT (a snapshot of that actor).
 */
#include "actor/snapshot.h"
#include "driftwood.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static dw_runtime *rt;
static dw_module *mod;
static uint8_t *base;
static size_t base_len;
static dw_snap base_snap;

static void init(void) {
  dw_runtime_config rc = {.backend = "cpu", .threads = 1};
  FILE *f = fopen(getenv("DW_FUZZ_SNAPSHOT") ? getenv("DW_FUZZ_SNAPSHOT") : "", "rb");
  if (!f || dw_runtime_create(&rc, &rt) || dw_runtime_add_model(rt, "default", getenv("DW_FUZZ_MODEL")) ||
      dw_module_load(rt, getenv("DW_FUZZ_MODULE"), &mod, NULL)) {
    fprintf(stderr, "snapshot_fuzz: set DW_FUZZ_MODULE, DW_FUZZ_MODEL, DW_FUZZ_SNAPSHOT (%s)\n", dw_last_error());
    abort();
  }
  fseek(f, 0, SEEK_END);
  base_len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  base = malloc(base_len);
  if (fread(base, 1, base_len, f) != base_len || dw_snap_parse(base, base_len, &base_snap) || !base_snap.n) abort();
  fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!rt) init();
  dw_actor *a = NULL;
  if (dw_actor_thaw(rt, mod, data, size, &a, NULL) == DW_OK) dw_actor_destroy(a);
  if (size < 1) return 0;
  uint32_t pick = data[0] % base_snap.n;
  dw_bytes b;
  dw_snap_begin(&b);
  for (uint32_t i = 0; i < base_snap.n; i++) {
    const dw_snap_sec *s = &base_snap.sec[i];
    if (i == pick) {
      dw_snap_add(&b, s->type, data + 1, size - 1, data[0] & 0x80);
      continue;
    }
    const uint8_t *raw;
    bool owned;
    if (dw_snap_payload(s, &raw, &owned)) abort();
    dw_snap_add(&b, s->type, raw, s->raw_len, s->flags);
    if (owned) free((void *)raw);
  }
  if (dw_snap_end(&b) == DW_OK && dw_actor_thaw(rt, mod, b.p, b.n, &a, NULL) == DW_OK) dw_actor_destroy(a);
  free(b.p);
  return 0;
}
