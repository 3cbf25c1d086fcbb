// serve_load.mjs — a bounded load test of `driftwood serve` on loopback:
// N concurrent streaming chat completions (default 1000), each up to
// max_tokens tokens. Reports errors (429s apart), p50/p99 time to first
// token, aggregate tok/s and the server's peak RSS.
//
// usage: node bench/serve_load.mjs DRIFTWOOD [N] [MAX_TOKENS] [MODEL.gguf]
//        node bench/serve_load.mjs LLAMA-SERVER [N] [MAX_TOKENS] MODEL.gguf [SLOTS]
// The second form measures llama.cpp's server (a binary named llama-server)
// the same way, side by side: SLOTS parallel sequences (default 2, as
// Driftwood's 2 workers), 2 threads, on a free loopback port.
// DW_SERVE_ARGS: more options for `driftwood serve` (e.g. "--workers 16").
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

const [bin, nArg, tokArg, model, slotsArg] = process.argv.slice(2);
const N = Number(nArg || 1000), MAXT = Number(tokArg || 16);
const dir = mkdtempSync(join(tmpdir(), 'dw-load-'));
const llama = basename(bin).startsWith('llama-server');
let srv, base;
if (llama) {
  const port = await new Promise(r => { const s = createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => r(p)); }); });
  const slots = Number(slotsArg || 2);
  srv = spawn(bin, ['-m', model, '--host', '127.0.0.1', '--port', String(port), '-np', String(slots), '-t', '2',
                    '-c', String(512 * slots)], { stdio: ['ignore', 'ignore', 'ignore'] });
  base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600; i++) {
    try { if ((await fetch(`${base}/health`)).status === 200) break; } catch {}
    await new Promise(r => setTimeout(r, 100));
  }
} else {
  const args = ['serve', '--listen', '127.0.0.1:0', '--ready-file', join(dir, 'ready'), '--max-queue', String(2 * N)];
  if (model) args.push('--model', `default=${model}`);
  if (process.env.DW_SERVE_ARGS) args.push(...process.env.DW_SERVE_ARGS.split(/\s+/).filter(Boolean)); /* e.g. --workers 16 */
  srv = spawn(bin, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 300 && !existsSync(join(dir, 'ready')); i++) await new Promise(r => setTimeout(r, 100));
  base = `http://${readFileSync(join(dir, 'ready'), 'utf8').trim()}`;
}
let peakRss = 0;
const rssTimer = setInterval(() => {
  try {
    const m = readFileSync(`/proc/${srv.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
    if (m) peakRss = Math.max(peakRss, Number(m[1]));
  } catch {}
}, 50);

async function one(i) {
  const t0 = performance.now();
  const res = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: `Request ${i}: tell me about driftwood.` }],
                           max_tokens: MAXT, seed: i, stream: true, stream_options: { include_usage: true } }) });
  if (res.status === 429) return { busy: true };
  if (res.status !== 200) return { error: `${res.status} ${await res.text()}` };
  let ttft = null, tokens = 0, deltas = 0, buf = '';
  const dec = new TextDecoder();
  for await (const chunk of res.body) {
    buf += dec.decode(chunk, { stream: true });
    let k;
    while ((k = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, k); buf = buf.slice(k + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const j = JSON.parse(ev.slice(6));
      if (j.error) return { error: j.error.message };
      if (j.usage) tokens = j.usage.completion_tokens;
      if (j.choices?.[0]?.delta?.content) {
        deltas++;
        if (ttft === null) ttft = performance.now() - t0;
      }
    }
  }
  return { ttft: ttft ?? performance.now() - t0, tokens: tokens || deltas }; /* no usage: one delta a token */
}

const t0 = performance.now();
const results = await Promise.all(Array.from({ length: N }, (_, i) => one(i).catch(e => ({ error: String(e) }))));
const wall = (performance.now() - t0) / 1000;
clearInterval(rssTimer);
srv.kill('SIGTERM');
await new Promise(r => srv.on('exit', r));
rmSync(dir, { recursive: true, force: true });

const okR = results.filter(r => r.ttft !== undefined), errs = results.filter(r => r.error);
const ttfts = okR.map(r => r.ttft).sort((a, b) => a - b);
const q = p => ttfts.length ? ttfts[Math.min(ttfts.length - 1, Math.floor(p * ttfts.length))] : NaN;
const toks = okR.reduce((a, r) => a + r.tokens, 0);
console.log(JSON.stringify({ requests: N, ok: okR.length, busy_429: results.filter(r => r.busy).length,
  errors: errs.length, first_error: errs[0]?.error, max_tokens: MAXT, wall_s: +wall.toFixed(2),
  ttft_p50_ms: +q(0.5).toFixed(1), ttft_p99_ms: +q(0.99).toFixed(1), tokens: toks,
  aggregate_tok_s: +(toks / wall).toFixed(1), server_peak_rss_mib: +(peakRss / 1024).toFixed(1) }));
process.exit(errs.length ? 1 : 0);
