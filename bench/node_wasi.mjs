// node_wasi.mjs — runs a WASI command under Node.js's built-in WASI, for
// comparison with `driftwood run`. Usage: node bench/node_wasi.mjs M.wasm [args]
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import { argv, exit } from 'node:process';

const wasi = new WASI({ version: 'preview1', args: argv.slice(2), env: {}, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(argv[2]));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
exit(wasi.start(instance));
