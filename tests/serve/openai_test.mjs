// openai_test.mjs — drives `driftwood serve` with the official `openai` npm
// client: models, chat (streaming and not), completions, embeddings, stop
// strings, seeds, errors, a client that goes away mid-stream, and a
// conversation kept in its actor's KV cache across a server restart.
//
// usage: node openai_test.mjs DRIFTWOOD_BINARY
import OpenAI from 'openai';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const bin = process.argv[2];
const dir = mkdtempSync(join(tmpdir(), 'dw-openai-'));
const KEY = 'sk-test-' + process.pid;
let failures = 0, passed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}

async function start() {
  const ready = join(dir, 'ready');
  rmSync(ready, { force: true });
  const p = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--ready-file', ready, '--state-dir', join(dir, 'state'),
                        '--api-key', KEY, '--workers', '2'], { stdio: ['ignore', 'inherit', 'inherit'] });
  for (let i = 0; i < 300 && !existsSync(ready); i++) await new Promise(r => setTimeout(r, 100));
  if (!existsSync(ready)) throw new Error('the server did not start');
  const addr = readFileSync(ready, 'utf8').trim();
  return { p, base: `http://${addr}`, client: new OpenAI({ baseURL: `http://${addr}/v1`, apiKey: KEY, maxRetries: 0 }) };
}

async function stop(s) {
  const done = new Promise(r => s.p.on('exit', (code, sig) => r({ code, sig })));
  s.p.kill('SIGTERM');
  const { code } = await done;
  assert.equal(code, 0, 'the server exits 0 after SIGTERM');
}

async function metric(s, name) {
  const t = await (await fetch(`${s.base}/metrics`, { headers: { Authorization: `Bearer ${KEY}` } })).text();
  const m = t.match(new RegExp(`^${name} (\\S+)$`, 'm'));
  return m ? Number(m[1]) : NaN;
}

const hello = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Say something about driftwood.' }];
let s = await start();
const c = s.client;

await check('models.list names the default model', async () => {
  const list = await c.models.list();
  assert.ok(list.data.some(m => m.id === 'default' && m.object === 'model'));
});

let plain;
await check('chat completion: text, usage and finish_reason', async () => {
  const r = await c.chat.completions.create({ model: 'default', messages: hello, max_tokens: 12, seed: 7 });
  plain = r.choices[0].message.content;
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.ok(typeof plain === 'string' && plain.length > 0, 'some text');
  assert.ok(['length', 'stop'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 5 && r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 12);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  if (r.choices[0].finish_reason === 'length') assert.equal(r.usage.completion_tokens, 12);
});

await check('the same seed gives the same reply; streaming gives the same text in pieces', async () => {
  const again = await c.chat.completions.create({ model: 'default', messages: hello, max_tokens: 12, seed: 7 });
  assert.equal(again.choices[0].message.content, plain);
  const stream = await c.chat.completions.create({ model: 'default', messages: hello, max_tokens: 12, seed: 7,
                                                   stream: true, stream_options: { include_usage: true } });
  let text = '', chunks = 0, finish = null, usage = null;
  for await (const ch of stream) {
    if (ch.usage) usage = ch.usage;
    if (!ch.choices.length) continue;
    chunks++;
    text += ch.choices[0].delta.content ?? '';
    finish = ch.choices[0].finish_reason ?? finish;
  }
  assert.equal(text, plain);
  assert.ok(chunks >= 3, `several chunks (${chunks})`);
  assert.ok(['length', 'stop'].includes(finish));
  assert.ok(usage && usage.completion_tokens >= 1);
});

await check('temperature 0 is greedy: the seed does not matter', async () => {
  const a = await c.chat.completions.create({ messages: hello, max_tokens: 8, temperature: 0, seed: 1 });
  const b = await c.chat.completions.create({ messages: hello, max_tokens: 8, temperature: 0, seed: 2 });
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
});

await check('a stop string ends the reply before it (streaming and not)', async () => {
  const cps = [...plain];
  assert.ok(cps.length >= 6, 'a reply long enough to cut');
  const stop = cps.slice(3, 5).join('');
  const want = plain.slice(0, plain.indexOf(stop));
  const r = await c.chat.completions.create({ messages: hello, max_tokens: 12, seed: 7, stop: [stop] });
  assert.equal(r.choices[0].message.content, want);
  assert.equal(r.choices[0].finish_reason, 'stop');
  const st = await c.chat.completions.create({ messages: hello, max_tokens: 12, seed: 7, stop, stream: true });
  let text = '';
  for await (const ch of st) text += ch.choices[0]?.delta?.content ?? '';
  assert.equal(text, want);
});

await check('completions: a text prompt, max_tokens and usage', async () => {
  const r = await c.completions.create({ model: 'default', prompt: 'Once upon a time', max_tokens: 6, seed: 3 });
  assert.equal(r.object, 'text_completion');
  assert.ok(r.choices[0].text.length > 0);
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 6);
  const st = await c.completions.create({ prompt: 'Once upon a time', max_tokens: 6, seed: 3, stream: true });
  let text = '';
  for await (const ch of st) text += ch.choices[0]?.text ?? '';
  assert.equal(text, r.choices[0].text);
});

await check('embeddings: unit vectors, one per input, deterministic', async () => {
  const r = await c.embeddings.create({ model: 'default', input: ['driftwood on the beach', 'a wasm actor', 'driftwood on the beach'] });
  assert.equal(r.data.length, 3);
  const dim = r.data[0].embedding.length;
  assert.ok(dim > 8);
  for (const d of r.data) {
    const n = Math.hypot(...d.embedding);
    assert.ok(Math.abs(n - 1) < 1e-4, `norm ${n}`);
  }
  assert.deepEqual(r.data[0].embedding, r.data[2].embedding);
  assert.notDeepEqual(r.data[0].embedding, r.data[1].embedding);
  assert.ok(r.usage.prompt_tokens > 3);
  // base64 (the client's default when it is not given) decodes to the same floats
  const b = await c.embeddings.create({ input: 'a wasm actor' });
  const got = b.data[0].embedding;
  for (let i = 0; i < dim; i++) assert.ok(Math.abs(got[i] - r.data[1].embedding[i]) < 1e-6);
});

await check('errors come in OpenAI\'s shape with the right status', async () => {
  await assert.rejects(c.chat.completions.create({ model: 'no-such-model', messages: hello }),
                       e => e instanceof OpenAI.NotFoundError && e.status === 404 && /no-such-model/.test(e.message));
  await assert.rejects(c.chat.completions.create({ messages: hello, max_tokens: -1 }),
                       e => e instanceof OpenAI.BadRequestError && e.status === 400);
  await assert.rejects(c.chat.completions.create({ messages: [] }), e => e.status === 400);
  await assert.rejects(c.chat.completions.create({ messages: hello, n: 2 }), e => e.status === 400);
  const long = 'driftwood '.repeat(2000);
  await assert.rejects(c.chat.completions.create({ messages: [{ role: 'user', content: long }], stream: true }),
                       e => e.status === 400 && e.code === 'context_length_exceeded');
  const bad = new OpenAI({ baseURL: `${s.base}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(bad.models.list(), e => e instanceof OpenAI.AuthenticationError && e.status === 401);
  assert.equal((await fetch(`${s.base}/health`)).status, 200, '/health needs no key');
});

await check('a client that goes away mid-stream cancels its generation', async () => {
  const before = await metric(s, 'driftwood_messages_cancelled_total');
  const ac = new AbortController();
  const st = await c.chat.completions.create({ messages: hello, max_tokens: 400, seed: 5, stream: true },
                                             { signal: ac.signal });
  let n = 0;
  try {
    for await (const ch of st) { if (++n === 3) ac.abort(); }
  } catch (e) { /* the abort */ }
  let after = before;
  for (let i = 0; i < 100 && after === before; i++) {
    await new Promise(r => setTimeout(r, 50));
    after = await metric(s, 'driftwood_messages_cancelled_total');
  }
  assert.equal(after, before + 1);
});

// A conversation: each turn resends the whole history (as clients do); the
// actor keeps its KV, so only the new part is prefilled — also after a restart.
const conv = 'conv-' + process.pid;
let history = [{ role: 'user', content: 'Tell me about the sea.' }];
async function turn(client, user) {
  if (user) history.push({ role: 'user', content: user });
  const r = await client.chat.completions.create({ messages: history, max_tokens: 6, seed: 11, conversation: conv });
  history.push({ role: 'assistant', content: r.choices[0].message.content });
  return r;
}
await check('a conversation re-uses its KV cache turn after turn', async () => {
  const t1 = await turn(c);
  assert.equal(t1.usage.prompt_tokens_details.cached_tokens, 0);
  const t2 = await turn(c, 'And the shore?');
  assert.ok(t2.usage.prompt_tokens_details.cached_tokens >= t1.usage.prompt_tokens,
            `turn 2 re-used ${t2.usage.prompt_tokens_details.cached_tokens} of ${t2.usage.prompt_tokens}`);
});

await check('the server restarted mid-conversation keeps it', async () => {
  await stop(s);
  s = await start();
  const t3 = await turn(s.client, 'Go on.');
  assert.ok(t3.usage.prompt_tokens_details.cached_tokens > t3.usage.prompt_tokens / 2,
            `after the restart turn 3 re-used ${t3.usage.prompt_tokens_details.cached_tokens} of ${t3.usage.prompt_tokens}`);
  const info = await (await fetch(`${s.base}/v1/actors/${conv}`, { headers: { Authorization: `Bearer ${KEY}` } })).json();
  assert.equal(info.module, 'chat');
  assert.ok(info.kv_tokens >= t3.usage.prompt_tokens);
});

await stop(s).catch(e => { failures++; console.log(`FAIL shutdown: ${e}`); });
rmSync(dir, { recursive: true, force: true });
console.log(`${passed} passed, ${failures} failed`);
process.exit(failures ? 1 : 0);
