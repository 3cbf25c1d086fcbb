/*
 * cli_test.c — `driftwood run` and `driftwood compile` as a user runs them:
 * the matmul example, WASI arguments, environment, exit status and stdin,
 * directory grants and escape attempts, traps, refused modules, memory
 * limits, and two processes compiling the same module at once.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DW DW_TEST_DRIFTWOOD
#define PROBE DW_TEST_GUESTS "/wasi_probe.wasm"

#include "sh.h"

Test(cli, matmul_example) {
  cr_assert_eq(sh(DW " run " DW_TEST_BUILD "/examples/matmul.wasm"), 0, "%s", out);
  cr_assert(strstr(out, "matmul 128x128x128: 0 errors of 16384 elements, zero_copy=1\n"), "%s", out);
  cr_assert_eq(sh(DW " run " DW_TEST_BUILD "/examples/matmul.wasm 33 65 17"), 0, "%s", out);
  cr_assert(strstr(out, "matmul 33x65x17: 0 errors of 2145 elements, zero_copy=1"), "%s", out);
}

Test(cli, arguments_environment_and_exit_status) {
  cr_assert_eq(sh(DW " run " PROBE " args one 'two words' ''"), 0, "%s", out);
  cr_assert_str_eq(out, PROBE "\nargs\none\ntwo words\n\n");
  cr_assert_eq(sh("FROM_HOST=leak " DW " run --env FOO=bar --env EMPTY= " PROBE " env FOO"), 0);
  cr_assert_str_eq(out, "bar\n");
  cr_assert_eq(sh("FROM_HOST=leak " DW " run --env FOO=bar " PROBE " env FROM_HOST"), 0);
  cr_assert_str_eq(out, "(unset)\n", "the host environment is not inherited");
  cr_assert_eq(sh(DW " run " PROBE " exit 7"), 7);
  cr_assert_eq(sh(DW " run " PROBE " exit 0"), 0);
  cr_assert_eq(sh(DW " run " PROBE " exit 200"), 125);
  cr_assert(strstr(out, "outside WASI's 0-125"), "%s", out);
  cr_assert_eq(sh(DW " run --env NOEQUALS " PROBE " args"), 126);
  cr_assert_eq(sh(DW " run --bogus " PROBE), 126);
  cr_assert(strstr(out, "unknown option '--bogus'"), "%s", out);
}

Test(cli, stdin_round_trip_clock_and_random) {
  cr_assert_eq(sh("printf 'line one\\n\\0binary\\377 tail' | " DW " run " PROBE " cat | od -An -c | tr -s ' '"), 0);
  char want[4096];
  FILE *p = popen("printf 'line one\\n\\0binary\\377 tail' | od -An -c | tr -s ' '", "r");
  size_t n = fread(want, 1, sizeof want - 1, p);
  want[n] = 0;
  pclose(p);
  cr_assert_str_eq(out, want);
  cr_assert_eq(sh(DW " run " PROBE " time"), 0);
  cr_assert_str_eq(out, "ok\n");
}

static char dir[64], outside[128];

static void make_tree(void) {
  snprintf(dir, sizeof dir, "/tmp/dw-dir-XXXXXX");
  cr_assert(mkdtemp(dir));
  snprintf(outside, sizeof outside, "%s-outside.txt", dir);
  cr_assert_eq(sh("mkdir -p %s/sub && printf inside > %s/a.txt && printf secret > %s && ln -s %s %s/link "
                  "&& ln -s ../a.txt %s/sub/ok-link",
                  dir, dir, outside, outside, dir, dir),
               0, "%s", out);
}

static void remove_tree(void) { sh("rm -rf %s %s", dir, outside); }

Test(cli, directory_grants, .init = make_tree, .fini = remove_tree) {
  cr_assert_eq(sh(DW " run --dir %s::/data " PROBE " read /data/a.txt", dir), 0, "%s", out);
  cr_assert_str_eq(out, "inside");
  cr_assert_eq(sh(DW " run --dir /data:%s " PROBE " read /data/a.txt", dir), 0, "WasmEdge's GUEST:HOST: %s", out);
  cr_assert_str_eq(out, "inside");
  cr_assert_eq(sh(DW " run --dir %s::/data " PROBE " read /data/sub/ok-link", dir), 0, "%s", out);
  cr_assert_str_eq(out, "inside", "a symlink that stays inside works");
  cr_assert_eq(sh(DW " run --dir %s::/data " PROBE " write /data/new.txt hello", dir), 0, "%s", out);
  cr_assert_eq(sh("cat %s/new.txt", dir), 0);
  cr_assert_str_eq(out, "hello");
  cr_assert_eq(sh(DW " run --dir %s::/data " PROBE " ls /data", dir), 0);
  cr_assert_str_eq(out, "a.txt\nlink\nnew.txt\nsub\n");
  /* The same directory under its own name. */
  cr_assert_eq(sh("cd %s && " DW " run --dir . " PROBE " read a.txt", dir), 0, "%s", out);
  cr_assert_str_eq(out, "inside");
}

Test(cli, directory_escapes_are_refused, .init = make_tree, .fini = remove_tree) {
  const char *base = strrchr(outside, '/') + 1;
  const char *attempts[] = {"/data/../%s", "/data/sub/../../%s", "/data/link", "/etc/passwd", "/%s", "../%s"};
  for (size_t i = 0; i < sizeof attempts / sizeof *attempts; i++) {
    char path[512];
    snprintf(path, sizeof path, attempts[i], base);
    sh(DW " run --dir %s::/data " PROBE " try-open '%s'", dir, path);
    cr_assert(strncmp(out, "denied", 6) == 0, "%s: %s", path, out);
    sh(DW " run --dir %s::/data " PROBE " read '%s'", dir, path);
    cr_assert(!strstr(out, "secret"), "escaped through %s: %s", path, out);
  }
  sh(DW " run --dir %s::/data " PROBE " write /data/../escaped.txt x", dir);
  cr_assert(strncmp(out, "denied", 6) == 0, "%s", out);
  struct stat sb;
  char esc[128];
  snprintf(esc, sizeof esc, "/tmp/escaped.txt");
  cr_assert_neq(stat(esc, &sb), 0, "nothing was written outside");
  /* No --dir: no filesystem at all. */
  sh(DW " run " PROBE " try-open /etc/passwd");
  cr_assert(strncmp(out, "denied", 6) == 0, "%s", out);
}

/* A program of Rust's standard library (std::fs on a granted directory:
 * read_dir, create_dir_all, create, append, seek, metadata, a directory
 * opened as a file, rename, remove_dir_all of 300 files, which removes
 * entries between fd_readdir calls) runs to its end, and cannot reach
 * outside the grant. */
Test(cli, rust_std_fs_works_on_a_granted_directory) {
  if (access(DW_TEST_GUESTS "/rust_fs.wasm", R_OK)) cr_skip_test("no Rust guest: install rustc libstd-rust-dev-wasm32");
  char d[] = "/tmp/dw-rust-XXXXXX";
  cr_assert(mkdtemp(d));
  cr_assert_eq(sh("touch %s/a.txt", d), 0);
  cr_assert_eq(sh(DW " run --dir %s::/d " DW_TEST_GUESTS "/rust_fs.wasm /d", d), 0, "%s", out);
  cr_assert_str_eq(out, "entries: [\"a.txt\"]\nread back: hi from rust\nand more\nsub is a dir: true\n"
                        "opened dir is a dir: true\nsub holds 1\nmany: 300\nmoved: 22\noutside the grant: true\ndone\n");
  cr_assert_eq(sh("ls %s", d), 0);
  cr_assert_str_eq(out, "a.txt\n");
  sh("rm -rf %s", d);
}

/* Directories open as Rust's std and wasi-libc open them: path_open with
 * O_DIRECTORY asking for every right the grant has (the write rights are
 * dropped, as Wasmtime does), then readdir through the new fd; asking to
 * write a directory without O_DIRECTORY is ISDIR (31). sock_shutdown: BADF
 * (8) for a bad fd, NOTSOCK (57) for one that is not a socket. */
Test(cli, directories_open_with_every_right_and_sockets_have_exact_errors) {
  char d[] = "/tmp/dw-dirs-XXXXXX";
  cr_assert(mkdtemp(d));
  cr_assert_eq(sh("mkdir -p %s/sub && touch %s/sub/a %s/sub/b", d, d, d), 0);
  cr_assert_eq(sh(DW " run --dir %s::/d " PROBE " open-dir /d sub", d), 0, "%s", out);
  cr_assert_str_eq(out, "open as a directory with every right: 0\nreaddir 0: 4 entries\n"
                        "open for writing without O_DIRECTORY: 31\n");
  /* symlinks: made, read back and followed beneath the grant; a target
   * that leaves it (lexically or absolute) and a path that does are
   * NOTCAPABLE (76) */
  cr_assert_eq(sh("touch %s/sub/a", d), 0);
  cr_assert_eq(sh(DW " run --dir %s::/d " PROBE " symlink /d", d), 0, "%s", out);
  cr_assert_str_eq(out, "link 0, readlink 0 'sub/a', follow 0, up and out 76, down then out 76, down and up 0, "
                        "absolute 76, open outside 76, times followed 0 1, on the link 0 1 1, given and now 28\n");
  cr_assert_eq(sh("readlink %s/l && ls %s | tr '\\n' ' '", d, d), 0, "%s", out);
  cr_assert_str_eq(out, "sub/a\nl sub ", "only the links inside were made");
  cr_assert_eq(sh(DW " run " PROBE " sock | cat"), 0, "%s", out);
  cr_assert_str_eq(out, "bad fd 8, stdout 57\n");
  sh("rm -rf %s", d);
}

/* The descriptor table starts small and grows on demand, to 1024 at most
 * (stdio and the grant included): a guest can hold 1020 files open, the
 * next open is EMFILE, and a closed number is handed out again first. */
Test(cli, a_guest_holds_up_to_1024_descriptors) {
  char d[] = "/tmp/dw-fds-XXXXXX";
  cr_assert(mkdtemp(d));
  cr_assert_eq(sh("echo x > %s/f", d), 0);
  cr_assert_eq(sh(DW " run --dir %s::/d " PROBE " open-many /d/f 2000", d), 0, "%s", out);
  cr_assert_str_eq(out, "opened 1020, then EMFILE; reads ok; after closing fd 4 the next is fd 4\n");
  cr_assert_eq(sh(DW " run --dir %s::/d " PROBE " open-many /d/f 10", d), 0, "%s", out);
  cr_assert_str_eq(out, "opened 10, then none; reads ok; after closing fd 4 the next is fd 4\n");
  sh("rm -rf %s", d);
}

Test(cli, timeout_ends_a_guest_that_never_returns, .timeout = 120) {
  cr_assert_eq(sh(DW " run --timeout 0.3 " DW_TEST_GUESTS "/spin.wasm"), 134, "%s", out);
  cr_assert(strstr(out, "time limit exceeded"), "%s", out);
  cr_assert_eq(sh(DW " run --timeout 300ms " DW_TEST_GUESTS "/spin.wasm"), 134, "%s", out);
  cr_assert_eq(sh(DW " run --timeout 0 " DW_TEST_GUESTS "/spin.wasm"), 126, "%s", out);
  cr_assert(strstr(out, "--timeout"), "%s", out);
  cr_assert_eq(sh(DW " run --timeout soon " DW_TEST_GUESTS "/spin.wasm"), 126, "%s", out);
  /* a guest that finishes in time is not affected */
  cr_assert_eq(sh(DW " run --timeout 30 " DW_TEST_GUESTS "/trap_start.wasm"), 134, "%s", out);
  cr_assert(strstr(out, "integer divide by zero"), "%s", out);
}

Test(cli, traps_and_refused_modules) {
  cr_assert_eq(sh(DW " run " DW_TEST_GUESTS "/trap_start.wasm"), 134, "%s", out);
  cr_assert(strstr(out, "integer divide by zero"), "%s", out);
  cr_assert_eq(sh(DW " run " DW_TEST_GUESTS "/unknown_import.wasm"), 126);
  cr_assert(strstr(out, "unknown import env.mystery"), "%s", out);
  cr_assert_eq(sh(DW " run " DW_TEST_GUESTS "/invalid.wasm"), 126);
  cr_assert(strstr(out, "invalid WebAssembly module"), "%s", out);
  cr_assert_eq(sh("head -c 1000 " PROBE " > /tmp/dw-trunc.wasm && " DW " run /tmp/dw-trunc.wasm; s=$?; rm -f /tmp/dw-trunc.wasm; exit $s"), 126);
  cr_assert(strstr(out, "invalid WebAssembly module"), "%s", out);
  cr_assert_eq(sh(DW " run /nonexistent.wasm"), 126);
  cr_assert(strstr(out, "/nonexistent.wasm"), "%s", out);
  cr_assert_eq(sh(DW " run " DW_TEST_GUESTS "/traps.wasm"), 126, "a module without _start is not a command");
  cr_assert(strstr(out, "_start"), "%s", out);
}

Test(cli, memory_limit) {
  cr_assert_eq(sh(DW " run " PROBE " alloc 16"), 0, "%s", out);
  cr_assert_str_eq(out, "ok\n");
  cr_assert_eq(sh(DW " run --max-memory 4MiB " PROBE " alloc 16"), 1, "%s", out);
  cr_assert_str_eq(out, "failed\n");
  cr_assert_eq(sh(DW " run --max-memory 64KiB " PROBE " args"), 126, "below the module's initial memory");
  cr_assert(strstr(out, "limit"), "%s", out);
  cr_assert_eq(sh(DW " run --max-memory lots " PROBE " args"), 126);
}

Test(cli, concurrent_compiles_share_the_cache) {
  char cache[] = "/tmp/dw-cc-XXXXXX";
  cr_assert(mkdtemp(cache));
  int st = sh("for i in 1 2 3; do " DW " compile --cache %s " PROBE " > %s/out$i & done; wait; cat %s/out*", cache,
              cache, cache);
  cr_assert_eq(st, 0, "%s", out);
  cr_assert_eq(sh("ls %s/*.so | wc -l", cache), 0);
  cr_assert_str_eq(out, "1\n");
  cr_assert_eq(sh(DW " compile --cache %s " PROBE, cache), 0);
  cr_assert(strstr(out, "cache hit"), "%s", out);
  cr_assert_eq(sh("DRIFTWOOD_CACHE=%s " DW " run " PROBE " exit 3", cache), 3);
  sh("rm -rf %s", cache);
}

/* run --invoke: an export called with typed arguments (after a reactor's
 * _initialize), its result printed; a wrong count, a bad number or an
 * unknown export is refused (126) before anything runs; a trap is 134. */
Test(cli, invoke_calls_an_export_with_typed_arguments) {
  const char *calc = DW_TEST_GUESTS "/calc.wasm";
  static const char *const ok[][2] = {
      {"add 2 40", "42\n"},         {"add -7 2", "-5\n"},           {"add 0x10 1", "17\n"},
      {"add 4294967295 0", "-1\n"}, {"based 5", "1005\n"},          {"mul64 4294967296 3", "12884901888\n"},
      {"half 3", "1.5\n"},          {"hyp 3 4", "5\n"},             {"nothing 1", ""}};
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
    char name[32], args[64];
    sscanf(ok[i][0], "%31s %63[^\n]", name, args);
    cr_assert_eq(sh(DW " run --invoke %s %s %s 2>/dev/null", name, calc, args), 0, "%s: %s", ok[i][0], out);
    cr_assert_str_eq(out, ok[i][1], "%s", ok[i][0]);
  }
  cr_assert_eq(sh(DW " run --invoke add %s 1", calc), 126, "%s", out);
  cr_assert(strstr(out, "'add' has type i:ii: it takes 2 arguments, not 1"), "%s", out);
  cr_assert_eq(sh(DW " run --invoke add %s 1 two", calc), 126, "%s", out);
  cr_assert(strstr(out, "argument 2 of 'add'") && strstr(out, "not an i32: 'two'"), "%s", out);
  cr_assert_eq(sh(DW " run --invoke add %s 1 99999999999", calc), 126, "%s", out);
  cr_assert_eq(sh(DW " run --invoke nope %s", calc), 126, "%s", out);
  cr_assert(strstr(out, "exports no function 'nope'"), "%s", out);
  cr_assert_eq(sh(DW " run --invoke div %s 1 0", calc), 134, "%s", out);
  cr_assert(strstr(out, "integer divide by zero"), "%s", out);
}

Test(cli, help_and_info) {
  cr_assert_eq(sh(DW " help"), 0);
  cr_assert(strstr(out, "--max-memory"));
  cr_assert_eq(sh(DW " info --backend cpu"), 0);
  cr_assert(strstr(out, "active backend: cpu"), "%s", out);
  cr_assert_eq(sh(DW " frobnicate"), 2);
  /* --version and -V: the version, the commit, wasm2c and the backends */
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(sh(DW " %s", i ? "-V" : "--version"), 0, "%s", out);
    cr_assert(!strncmp(out, "driftwood ", 10) && strstr(out, " (commit ") && strstr(out, "wasm2c 1.0.32") &&
              strstr(out, "backends cpu"), "%s", out);
  }
  /* --help on every command and subcommand: its usage, exit status 0 */
  static const char *const cmds[] = {"run", "compile", "info", "tokenize", "generate", "serve",
                                     "actor", "actor spawn", "actor send", "actor fork", "actor inspect"};
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
    cr_assert_eq(sh(DW " %s --help", cmds[i]), 0, "%s --help: %s", cmds[i], out);
    cr_assert(strstr(out, "usage"), "%s --help: %s", cmds[i], out);
  }
}

/* ---- the LLM commands and the chat example ---- */

#define DEMO DW_TEST_SOURCE "/models/demo-tiny-q8_0.gguf"
#define CHAT DW_TEST_BUILD "/examples/chat.wasm"

Test(cli, tokenize_prints_ids_and_pieces) {
  cr_assert_eq(sh(DW " tokenize --model " DEMO " 'Hello world'"), 0, "%s", out);
  cr_assert_str_eq(out, "1 15043 3186\n");
  cr_assert_eq(sh(DW " tokenize --model " DEMO " --no-bos ' Hello world'"), 0, "%s", out);
  cr_assert_str_eq(out, "29871 15043 3186\n");
  cr_assert_eq(sh(DW " tokenize --model " DEMO " --no-bos --pieces 'Hi\n'"), 0, "%s", out);
  cr_assert(strstr(out, "-> ' Hi'") && strstr(out, "-> '\\n'"), "%s", out);
  cr_assert_eq(sh(DW " tokenize --model /nonexistent.gguf x"), 126);
  cr_assert(strstr(out, "/nonexistent.gguf"), "%s", out);
  cr_assert_eq(sh(DW " tokenize --model " DW_TEST_GUESTS "/wasi_probe.wasm x"), 126);
  cr_assert(strstr(out, "GGUF"), "%s", out);
}

Test(cli, generate_is_deterministic_and_dumps_logits) {
  char tmp[] = "/tmp/dw-logits-XXXXXX";
  int fd = mkstemp(tmp);
  cr_assert_geq(fd, 0);
  close(fd);
  cr_assert_eq(sh(DW " generate --model " DEMO " --prompt 'Once upon' -n 7 --temp 0 --ignore-eos --dump-logits %s",
                  tmp), 0, "%s", out);
  static char first[sizeof out];
  snprintf(first, sizeof first, "%s", out);
  struct stat sb;
  cr_assert_eq(stat(tmp, &sb), 0);
  cr_assert_eq(sb.st_size, 7 * 32000 * 4, "7 steps of 32000 f32 logits");
  cr_assert(strstr(out, "generated 7 tokens"), "%s", out);
  cr_assert_eq(sh(DW " generate --model " DEMO " --prompt 'Once upon' -n 7 --temp 0 --ignore-eos --dump-logits %s",
                  tmp), 0);
  *strstr(out, "driftwood: prompt") = 0; /* timings differ */
  *strstr(first, "driftwood: prompt") = 0;
  cr_assert_str_eq(out, first);
  unlink(tmp);
  cr_assert_eq(sh(DW " generate --model " DEMO " --prompt x --temp -1"), 126);
  cr_assert_eq(sh(DW " generate --model " DEMO), 126);
}

Test(cli, chat_example_is_reproducible_with_a_seed) {
  static char a[sizeof out];
  cr_assert_eq(sh(DW " run --model default=" DEMO " " CHAT " --seed 5 -n 20 'Hello there'"), 0, "%s", out);
  cr_assert_gt(strlen(out), 10);
  snprintf(a, sizeof a, "%s", out);
  cr_assert_eq(sh(DW " run --model default=" DEMO " " CHAT " --seed 5 -n 20 'Hello there'"), 0);
  cr_assert_str_eq(out, a, "same seed, same reply");
  cr_assert_eq(sh(DW " run --model default=" DEMO " " CHAT " --seed 6 -n 20 'Hello there'"), 0);
  cr_assert_str_neq(out, a, "another seed, another reply");
  /* named models; a missing one is the guest's error, a bad path the host's */
  cr_assert_eq(sh(DW " run --model a=" DEMO " --model b=" DEMO " " CHAT " --model b -n 4 hi"), 0, "%s", out);
  cr_assert_eq(sh(DW " run --model a=" DEMO " " CHAT " --model zzz -n 4 hi"), 1, "%s", out);
  cr_assert(strstr(out, "model_open"), "%s", out);
  cr_assert_eq(sh(DW " run --model a=/nonexistent.gguf " CHAT " hi"), 126, "%s", out);
  cr_assert_eq(sh(DW " run --model noequals " CHAT " hi"), 126, "%s", out);
  cr_assert_eq(sh(DW " run " CHAT " hi"), 1, "no model registered: %s", out);
}
