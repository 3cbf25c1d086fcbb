#!/usr/bin/env python3
"""gen_big.py N — writes a C program with N generated functions to stdout.

Used to make a large (~2 MB) wasm module for the compile-on-cache-miss
benchmark: each function mixes arithmetic, branches, a loop and memory
traffic so the C compiler has real work to do.
"""
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
print("#include <stdio.h>\n#include <stdint.h>\nstatic uint32_t mem[4096];")
for i in range(n):
    print(f"""__attribute__((noinline)) uint32_t f{i}(uint32_t x, uint32_t y) {{
  uint32_t acc = x * {i * 2654435761 % 4294967296}u + y;
  for (uint32_t k = 0; k < (x & 15); k++) {{
    switch ((acc + k) % 7) {{
      case 0: acc ^= mem[(acc + {i}) & 4095]; break;
      case 1: acc += (acc << {i % 13 + 1}) | (y >> 3); break;
      case 2: mem[(acc ^ k) & 4095] = acc * {i % 97 + 3}u; break;
      case 3: acc = acc / ((y | 1) + {i % 5}); break;
      case 4: acc -= mem[(y + k * {i % 31 + 1}) & 4095] * 7u; break;
      case 5: acc = (acc >> 5) ^ (acc << 7) ^ {i}u; break;
      default: acc += x * y + {i % 1000}u; break;
    }}
  }}
  return acc;
}}""")
print("typedef uint32_t (*fn)(uint32_t, uint32_t);\nstatic fn table[] = {")
print(",".join(f"f{i}" for i in range(n)))
print("};\nint main(int argc, char **argv) {\n  uint32_t s = (uint32_t)argc;")
print(f"  for (uint32_t i = 0; i < {n}; i++) s = table[i](s, i);")
print('  printf("%u\\n", s);\n  return 0;\n}')
