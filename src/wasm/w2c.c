/*
 * w2c.c — the wasm2c (wabt 1.0.32) glue: run the translator, parse the
 * generated header, write the shim described in w2c.h.
 *
 * Header facts relied on (checked here and nowhere else):
 *  - the instance struct is `typedef struct Z_guest_instance_t { ... }`
 *    with one field per line: `<type> <name>;`;
 *  - `/\* import: 'mod' 'field' *\/` is followed by the C declaration
 *    `<ret> <sym>(struct Z_..._instance_t*, <params>);`;
 *  - `/\* export: 'name' *\/` is followed by `<ret> <sym>(Z_guest_instance_t*, ...);`
 *    or, for a memory, `wasm_rt_memory_t* <sym>(...)`;
 *  - the instantiate function takes one pointer per imported module, in the
 *    order the header forward-declares their structs.
 * And facts of the generated C: memory.fill and memory.copy call memset
 * and memmove (the shim routes them through wrappers that flag them for
 * the time limit); each element segment is a
 *    `static const wasm_elem_segment_expr_t elem_segment_exprs_<x>[] = {`
 *    with one `  {type index, function, module offset},` line per element,
 *    closed by `};`, and the module's type ids are in `func_types`.
 */
#define _GNU_SOURCE
#include "wasm/w2c.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define XSTR(...) STR(__VA_ARGS__)
#define STR(...) #__VA_ARGS__

int dw_w2c_spawn(char *const argv[], char *err, size_t err_cap) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pipefd[1]);
  size_t got = 0;
  char sink[4096];
  for (;;) {
    char *dst = got + 1 < err_cap ? err + got : sink;
    size_t room = got + 1 < err_cap ? err_cap - 1 - got : sizeof sink;
    ssize_t r = read(pipefd[0], dst, room);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    if (dst != sink) got += (size_t)r;
  }
  close(pipefd[0]);
  if (err_cap) err[got] = 0;
  if (rc != 0) {
    if (err_cap) snprintf(err, err_cap, "cannot run %s: %s", argv[0], strerror(rc));
    return -1;
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

dw_status dw_w2c_translate(const char *wasm_path, const char *out_c) {
  char err[4096];
  char *argv[] = {"wasm2c", "-n", "guest", "--enable-exceptions", (char *)wasm_path, "-o", (char *)out_c, NULL};
  int rc = dw_w2c_spawn(argv, err, sizeof err);
  if (rc < 0) return dw_error_set(DW_ERR_COMPILE, "%s (install Debian's wabt package)", err);
  if (rc != 0) {
    size_t n = strlen(err);
    while (n && (err[n - 1] == '\n' || err[n - 1] == ' ')) err[--n] = 0;
    return dw_error_set(DW_ERR_BAD_MODULE, "invalid WebAssembly module %s: %s", wasm_path, err);
  }
  return DW_OK;
}

/* ---- header parsing ------------------------------------------------------ */

typedef struct decl {
  char sym[512];
  char first[512]; /* the first parameter's type: the instance pointer */
  char sig[64];
} decl;

static char type_code(const char *t) {
  if (!strcmp(t, "u32")) return 'i';
  if (!strcmp(t, "u64")) return 'I';
  if (!strcmp(t, "f32")) return 'f';
  if (!strcmp(t, "f64")) return 'F';
  if (!strcmp(t, "void")) return 'v';
  return '?';
}

static void trim(char *s) {
  char *p = s;
  while (*p == ' ') p++;
  memmove(s, p, strlen(p) + 1);
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == ';')) s[--n] = 0;
}

/* Parses "<ret> <sym>(<first>, <t>, <t>);" skipping the first parameter. */
static bool parse_decl(const char *line, decl *d) {
  char buf[2048];
  snprintf(buf, sizeof buf, "%s", line);
  char *lp = strchr(buf, '('), *rp = strrchr(buf, ')');
  if (!lp || !rp) return false;
  *lp = 0;
  *rp = 0;
  char *sp = strrchr(buf, ' ');
  if (!sp) return false;
  *sp = 0;
  snprintf(d->sym, sizeof d->sym, "%s", sp + 1);
  trim(buf);
  size_t n = 0;
  d->sig[n++] = type_code(buf);
  d->sig[n++] = ':';
  char *save, *tok = strtok_r(lp + 1, ",", &save);
  if (!tok) return false;
  snprintf(d->first, sizeof d->first, "%s", tok);
  trim(d->first);
  tok = strtok_r(NULL, ",", &save); /* the instance pointer is not part of the signature */
  for (; tok && n + 2 < sizeof d->sig; tok = strtok_r(NULL, ",", &save)) {
    trim(tok);
    d->sig[n++] = type_code(tok);
  }
  d->sig[n] = 0;
  return true;
}

static bool quoted(const char *s, char *out, size_t cap, const char **end) {
  const char *a = strchr(s, '\'');
  if (!a) return false;
  const char *b = strchr(a + 1, '\'');
  if (!b || (size_t)(b - a - 1) >= cap) return false;
  memcpy(out, a + 1, (size_t)(b - a - 1));
  out[b - a - 1] = 0;
  if (end) *end = b + 1;
  return true;
}

static const char *ctype_of(char c) {
  switch (c) {
  case 'i': return "u32";
  case 'I': return "u64";
  case 'f': return "f32";
  case 'F': return "f64";
  }
  return "void";
}

const dw_hostfn *dw_w2c_resolve(const dw_host_set *hosts, const char *module, const char *field,
                                const char *sig) {
  for (int t = 0; hosts && t < hosts->n_tables; t++)
    for (const dw_hostfn *f = hosts->tables[t]; f->module; f++)
      if (!strcmp(f->module, module) && !strcmp(f->field, field)) {
        if (!strcmp(f->sig, sig)) return f;
        dw_error_set(DW_ERR_UNKNOWN_IMPORT, "import %s.%s has signature %s; Driftwood provides %s",
                     module, field, sig, f->sig);
        return NULL;
      }
  dw_error_set(DW_ERR_UNKNOWN_IMPORT, "unknown import %s.%s: Driftwood does not provide it", module, field);
  return NULL;
}

/* Emits the conversion of args[i] into a C value of type code c. */
static void emit_arg(FILE *f, char c, int i) {
  switch (c) {
  case 'i': fprintf(f, ", (u32)a[%d]", i); break;
  case 'I': fprintf(f, ", (u64)a[%d]", i); break;
  case 'f': fprintf(f, ", dw_f32(a[%d])", i); break;
  case 'F': fprintf(f, ", dw_f64(a[%d])", i); break;
  }
}

/* The element segments of the generated C: their array names and lengths,
 * as comma-separated C initialisers. */
static dw_status scan_elem_segments(const char *gen_c, char **names, char **lens, int *n_segs, long *n_refs) {
  static const char decl[] = "static const wasm_elem_segment_expr_t ";
  FILE *c = fopen(gen_c, "r");
  if (!c) return dw_error_set(DW_ERR_COMPILE, "cannot read %s: %s", gen_c, strerror(errno));
  size_t sn = 0, sl = 0;
  FILE *fn = open_memstream(names, &sn), *fl = open_memstream(lens, &sl);
  char line[4096], name[512];
  long in = -1; /* elements counted in the open segment, or -1 */
  while (fgets(line, sizeof line, c)) {
    if (in < 0) {
      if (strncmp(line, decl, sizeof decl - 1) || sscanf(line + sizeof decl - 1, "%511[A-Za-z0-9_]", name) != 1)
        continue;
      fprintf(fn, "%s%s", *n_segs ? ", " : "", name);
      in = 0;
      if (strstr(line, "};")) { /* an empty segment on one line */
        fprintf(fl, "%s0", *n_segs ? ", " : "");
        (*n_segs)++;
        in = -1;
      }
    } else if (!strncmp(line, "};", 2)) {
      fprintf(fl, "%s%ld", *n_segs ? ", " : "", in);
      *n_refs += in;
      (*n_segs)++;
      in = -1;
    } else if (!strncmp(line, "  {", 3)) {
      in++;
    }
  }
  fclose(c);
  fclose(fn);
  fclose(fl);
  if (in >= 0) return dw_error_set(DW_ERR_COMPILE, "unexpected wasm2c output: an element segment is not closed");
  return DW_OK;
}

dw_status dw_w2c_write_shim(const char *gen_c, const char *key, const dw_host_set *hosts,
                            const char *shim_path) {
  char hpath[4096];
  snprintf(hpath, sizeof hpath, "%s", gen_c);
  size_t hl = strlen(hpath);
  if (hl < 2) return dw_error_set(DW_ERR_INVALID_ARG, "bad generated path");
  hpath[hl - 1] = 'h';
  FILE *h = fopen(hpath, "r");
  if (!h) return dw_error_set(DW_ERR_COMPILE, "cannot read %s: %s", hpath, strerror(errno));
  FILE *f = fopen(shim_path, "w");
  if (!f) {
    fclose(h);
    return dw_error_set(DW_ERR_COMPILE, "cannot write %s: %s", shim_path, strerror(errno));
  }
  dw_status st = DW_OK;
  char line[4096], name[1024], mod[1024];
  int n_import_modules = 0, n_imports = 0, n_exports = 0, n_globals = 0, n_tables = 0;
  bool in_struct = false;
  char memory_field[512] = "";
  /* Sections of the shim are built in memory streams, then concatenated. */
  char *b_imp = NULL, *b_exp = NULL, *b_glob = NULL, *b_tramp = NULL;
  size_t s_imp = 0, s_exp = 0, s_glob = 0, s_tramp = 0;
  FILE *imp = open_memstream(&b_imp, &s_imp), *exp = open_memstream(&b_exp, &s_exp);
  FILE *glob = open_memstream(&b_glob, &s_glob), *tramp = open_memstream(&b_tramp, &s_tramp);
  char *b_tabs = NULL;
  size_t s_tabs = 0;
  FILE *tabs = open_memstream(&b_tabs, &s_tabs);

  while (fgets(line, sizeof line, h)) {
    if (!strncmp(line, "typedef struct Z_guest_instance_t {", 35)) {
      in_struct = true;
      continue;
    }
    if (in_struct) {
      if (line[0] == '}') {
        in_struct = false;
        continue;
      }
      char t[256], fld[512];
      if (sscanf(line, " %255s %511[^;];", t, fld) != 2) continue;
      if (!strcmp(t, "struct")) {
        n_import_modules++;
        continue;
      }
      if (!strcmp(t, "wasm_rt_funcref_table_t") && fld[0] != '*') {
        fprintf(tabs, "  {\"%s\", offsetof(Z_guest_instance_t, %s)},\n", fld, fld);
        n_tables++;
        continue;
      }
      if (!strcmp(t, "wasm_rt_memory_t") && !memory_field[0]) {
        snprintf(memory_field, sizeof memory_field, "%s", fld);
        continue;
      }
      char c = type_code(t);
      if (c != '?' && c != 'v' && fld[0] != '*') {
        fprintf(glob, "  {\"%s\", '%c', offsetof(Z_guest_instance_t, %s), sizeof(%s)},\n", fld, c, fld, t);
        n_globals++;
      }
      continue;
    }
    if (!strncmp(line, "/* import: ", 11)) {
      const char *e;
      char next[4096];
      decl d;
      if (!quoted(line, mod, sizeof mod, &e) || !quoted(e, name, sizeof name, NULL) ||
          !fgets(next, sizeof next, h)) {
        st = dw_error_set(DW_ERR_COMPILE, "unexpected wasm2c header line: %s", line);
        break;
      }
      if (!parse_decl(next, &d) || strchr(d.sig, '?')) {
        st = dw_error_set(DW_ERR_UNKNOWN_IMPORT,
                          "unknown import %s.%s: Driftwood provides no such %s", mod, name,
                          strstr(next, "memory") ? "memory" : strstr(next, "table") ? "table" : "import");
        break;
      }
      if (!dw_w2c_resolve(hosts, mod, name, d.sig)) {
        st = DW_ERR_UNKNOWN_IMPORT;
        break;
      }
      fprintf(imp, "  {\"%s\", \"%s\", \"%s\"},\n", mod, name, d.sig);
      /* trampoline: R sym(struct X *h, P0 p0, ...) { return ((R(*)(void*, P...))tab[i])(h, p...); } */
      char ret = d.sig[0];
      const char *ps = d.sig + 2;
      fprintf(tramp, "%s %s(%s h", ctype_of(ret), d.sym, d.first);
      for (int i = 0; ps[i]; i++) fprintf(tramp, ", %s p%d", ctype_of(ps[i]), i);
      fprintf(tramp, ") {\n  %s((%s (*)(void *", ret == 'v' ? "" : "return ", ctype_of(ret));
      for (int i = 0; ps[i]; i++) fprintf(tramp, ", %s", ctype_of(ps[i]));
      fprintf(tramp, "))(*(dw_fn *const *)h)[%d])((void *)h", n_imports);
      for (int i = 0; ps[i]; i++) fprintf(tramp, ", p%d", i);
      fprintf(tramp, ");\n}\n");
      n_imports++;
      continue;
    }
    if (!strncmp(line, "/* export: ", 11)) {
      char next[4096];
      decl d;
      if (!quoted(line, name, sizeof name, NULL) || !fgets(next, sizeof next, h)) continue;
      if (strncmp(next, "wasm_rt_", 8) == 0) continue; /* memory / table / global export */
      if (!parse_decl(next, &d) || strchr(d.sig, '?')) continue; /* multi-value etc: not callable */
      fprintf(tramp, "static void dw_x%d(void *i, const unsigned long long *a, unsigned long long *r) {\n  ",
              n_exports);
      char ret = d.sig[0];
      if (ret == 'i' || ret == 'I') fprintf(tramp, "*r = (unsigned long long)");
      else if (ret == 'f') fprintf(tramp, "*r = dw_bits32(");
      else if (ret == 'F') fprintf(tramp, "*r = dw_bits64(");
      else fprintf(tramp, "(void)r; ");
      fprintf(tramp, "%s((Z_guest_instance_t *)i", d.sym);
      for (int i = 0; d.sig[2 + i]; i++) emit_arg(tramp, d.sig[2 + i], i);
      fprintf(tramp, "%s;\n}\n", ret == 'f' || ret == 'F' ? "))" : ")");
      fprintf(exp, "  {\"%s\", \"%s\", dw_x%d},\n", name, d.sig, n_exports);
      n_exports++;
    }
  }
  fclose(h);
  fclose(imp);
  fclose(exp);
  fclose(glob);
  fclose(tabs);
  fclose(tramp);
  char *b_segs = NULL, *b_lens = NULL;
  int n_segs = 0;
  long n_refs = 0;
  if (st == DW_OK) st = scan_elem_segments(gen_c, &b_segs, &b_lens, &n_segs, &n_refs);
  if (st == DW_OK) {
    fprintf(f, "/* Generated by Driftwood for wasm2c " DW_W2C_VERSION "; do not edit. */\n");
    /* memory.fill / memory.copy run in libc: the wrappers tell the runtime
     * a time-limit trap may land there too (rt.c invariant 5) */
    fprintf(f, "#include <stddef.h>\n#include <string.h>\n"
               "void dw_rt_bulk(int on);\n"
               "static void *dw_memset(void *d, int c, size_t n) {\n"
               "  dw_rt_bulk(1);\n  memset(d, c, n);\n  dw_rt_bulk(0);\n  return d;\n}\n"
               "static void *dw_memmove(void *d, const void *s, size_t n) {\n"
               "  dw_rt_bulk(1);\n  memmove(d, s, n);\n  dw_rt_bulk(0);\n  return d;\n}\n"
               "#undef memset\n#undef memmove\n#define memset dw_memset\n#define memmove dw_memmove\n"
               "#include \"%s\"\n#undef memset\n#undef memmove\n", gen_c);
    fprintf(f, "%s\n", XSTR(DW_W2C_TYPES));
    fprintf(f, "typedef void (*dw_fn)(void);\n");
    fprintf(f, "static inline f32 dw_f32(unsigned long long v) { u32 b = (u32)v; f32 x; memcpy(&x, &b, 4); return x; }\n");
    fprintf(f, "static inline f64 dw_f64(unsigned long long v) { f64 x; memcpy(&x, &v, 8); return x; }\n");
    fprintf(f, "static inline unsigned long long dw_bits32(f32 x) { u32 b; memcpy(&b, &x, 4); return b; }\n");
    fprintf(f, "static inline unsigned long long dw_bits64(f64 x) { u64 b; memcpy(&b, &x, 8); return b; }\n");
    fprintf(f, "%s", b_tramp ? b_tramp : "");
    fprintf(f, "static void dw_instantiate(void *i, void *h) {\n  Z_guest_instantiate((Z_guest_instance_t *)i");
    for (int i = 0; i < n_import_modules; i++) fprintf(f, ", h");
    fprintf(f, ");\n}\n");
    fprintf(f, "static void dw_free(void *i) { Z_guest_free((Z_guest_instance_t *)i); }\n");
    if (memory_field[0])
      fprintf(f, "static void *dw_memory(void *i) { return &((Z_guest_instance_t *)i)->%s; }\n", memory_field);
    fprintf(f, "static const dw_w2c_export dw_exports[] = {\n%s  {0, 0, 0}\n};\n", b_exp ? b_exp : "");
    fprintf(f, "static const dw_w2c_import dw_imports[] = {\n%s  {0, 0, 0}\n};\n", b_imp ? b_imp : "");
    fprintf(f, "static const dw_w2c_global dw_globals[] = {\n%s  {0, 0, 0, 0}\n};\n", b_glob ? b_glob : "");
    fprintf(f, "static const dw_w2c_table dw_tables[] = {\n%s  {0, 0}\n};\n", b_tabs ? b_tabs : "");
    if (n_segs) {
      fprintf(f, "static const wasm_elem_segment_expr_t *const dw_segs[] = {%s};\n", b_segs);
      fprintf(f, "static const unsigned dw_seg_lens[] = {%s};\n", b_lens);
      fprintf(f, "static int dw_ref(unsigned idx, void *i, void *out) {\n"
                 "  for (unsigned s = 0; s < %d; idx -= dw_seg_lens[s], s++) {\n"
                 "    if (idx >= dw_seg_lens[s]) continue;\n"
                 "    const wasm_elem_segment_expr_t *e = &dw_segs[s][idx];\n"
                 "    wasm_rt_funcref_t r = {func_types[e->func_type_index], e->func, (char *)i + e->module_offset};\n"
                 "    memcpy(out, &r, sizeof r);\n    return 1;\n  }\n  return 0;\n}\n", n_segs);
    } else {
      fprintf(f, "static int dw_ref(unsigned idx, void *i, void *out) { (void)idx, (void)i, (void)out; return 0; }\n");
    }
    fprintf(f,
            "__attribute__((visibility(\"default\"))) const dw_w2c_desc " DW_W2C_DESC_SYMBOL " = {\n"
            "  %d, \"%s\", sizeof(Z_guest_instance_t), Z_guest_init_module, dw_instantiate, dw_free,\n"
            "  %s, dw_exports, %d, dw_imports, %d, dw_globals, %d, dw_tables, %d, dw_ref, %ld};\n",
            DW_W2C_ABI, key, memory_field[0] ? "dw_memory" : "0", n_exports, n_imports, n_globals, n_tables,
            n_refs);
  }
  free(b_segs);
  free(b_lens);
  free(b_imp);
  free(b_exp);
  free(b_glob);
  free(b_tabs);
  free(b_tramp);
  if (fclose(f) != 0 && st == DW_OK) st = dw_error_set(DW_ERR_COMPILE, "cannot write %s", shim_path);
  return st;
}
