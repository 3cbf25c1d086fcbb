// density.mjs — how many chat actors one `driftwood serve` holds, and how
// fast a hibernated one answers: N conversations (chat actors, each with
// one short exchange), created C at a time; then, once every actor has
// hibernated (--hibernate-after), the server's RSS and the state
// directory's size; then S sampled actors send their next turn and the
// time to their first token is taken (thaw + prefill of the turn + one
// decode, up to the first SSE event with text). All on loopback,
// bounded in count; the server is stopped after.
//
// usage: node bench/density.mjs DRIFTWOOD [N] [CONCURRENCY] [SAMPLES] [MODEL.gguf]
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [bin, nArg, cArg, sArg, model] = process.argv.slice(2);
const N = Number(nArg || 1000), C = Number(cArg || 16), S = Number(sArg || 50);
const dir = mkdtempSync(join(tmpdir(), 'dw-density-'));
const args = ['serve', '--listen', '127.0.0.1:0', '--ready-file', join(dir, 'ready'), '--state-dir', join(dir, 'state'),
              '--hibernate-after', '2', '--max-queue', String(4 * C + 64)];
if (model) args.push('--model', `default=${model}`);
const srv = spawn(bin, args, { stdio: ['ignore', 'ignore', 'inherit'] });
for (let i = 0; i < 300 && !existsSync(join(dir, 'ready')); i++) await new Promise(r => setTimeout(r, 100));
const base = `http://${readFileSync(join(dir, 'ready'), 'utf8').trim()}`;
const rss = () => Number(readFileSync(`/proc/${srv.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]) / 1024;

async function turn(conv, text, maxTokens) {
  const t0 = performance.now();
  const res = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ conversation: conv, messages: [{ role: 'user', content: text }], max_tokens: maxTokens,
                           seed: 1, stream: true }) });
  if (res.status !== 200) throw new Error(`${conv}: ${res.status} ${await res.text()}`);
  // the first SSE event that carries generated text (not the opening role chunk)
  let first = null, seen = '';
  const dec = new TextDecoder();
  for await (const chunk of res.body) {
    if (first !== null) continue;
    seen += dec.decode(chunk, { stream: true });
    if (/"content":"[^"]/.test(seen)) first = performance.now() - t0;
  }
  if (first === null) first = performance.now() - t0;
  return { first, total: performance.now() - t0 };
}

const rssStart = rss();
const t0 = performance.now();
let next = 0;
await Promise.all(Array.from({ length: C }, async () => {
  for (let i; (i = next++) < N;) await turn(`c${i}`, `Hello ${i}, what is driftwood?`, 4);
}));
const createS = (performance.now() - t0) / 1e3;
const rssLive = rss();
// every actor idle past --hibernate-after: the janitor releases them
await new Promise(r => setTimeout(r, 6000));
const list = await (await fetch(`${base}/v1/actors`)).json();
const actors = list.actors || list.data || list;
const hibernated = Array.isArray(actors) ? actors.filter(a => a.state === 'hibernated').length : -1;
const rssIdle = rss();
const stateMiB = Number(execFileSync('du', ['-sk', join(dir, 'state')]).toString().split(/\s/)[0]) / 1024;
const lat = [], order = [];
for (let k = 0; k < S; k++) {
  const i = Math.floor((k + 0.5) * N / S);
  const ms = (await turn(`c${i}`, 'And after that?', 1)).first;
  lat.push(ms);
  order.push(Number(ms.toFixed(1)));
}
lat.sort((a, b) => a - b);
const pct = p => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
srv.kill('SIGTERM');
await new Promise(r => srv.on('exit', r));
rmSync(dir, { recursive: true, force: true });
console.log(JSON.stringify({
  actors: N, concurrency: C, create_s: Number(createS.toFixed(1)), hibernated,
  rss_start_mib: Number(rssStart.toFixed(1)), rss_after_create_mib: Number(rssLive.toFixed(1)),
  rss_all_hibernated_mib: Number(rssIdle.toFixed(1)),
  host_bytes_per_hibernated_actor: Math.round((rssIdle - rssStart) * 1048576 / N),
  state_dir_mib: Number(stateMiB.toFixed(1)), state_kib_per_actor: Number((stateMiB * 1024 / N).toFixed(1)),
  next_turn_first_token_ms: { samples: S, p50: Number(pct(0.5).toFixed(1)), p99: Number(pct(0.99).toFixed(1)),
                              p90: Number(pct(0.9).toFixed(1)), max: Number(lat[lat.length - 1].toFixed(1)),
                              over_50ms: lat.filter(x => x > 50).length, in_order: order },
}));
