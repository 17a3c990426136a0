// memtune serve, tested with the official OpenAI client (npm "openai"). Run by
// tests/cli/serve.sh, which starts the server and writes the CLI's outputs to compare with:
// env BASE_URL, API_KEY, EXPECT (a JSON file: prompts, max_tokens, base[], adapter{prompt,text}).
import OpenAI from 'openai';
import { readFileSync } from 'node:fs';

const base = process.env.BASE_URL, key = process.env.API_KEY;
const expect = JSON.parse(readFileSync(process.env.EXPECT, 'utf8'));
const client = new OpenAI({ baseURL: base + '/v1', apiKey: key, maxRetries: 0, timeout: 900000 });
let failures = 0;
function check(name, ok, detail) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${ok ? '' : ': ' + detail}`);
  if (!ok) failures++;
}
async function rejects(name, fn, status, needle) {
  try {
    await fn();
    check(name, false, 'no error');
  } catch (e) {
    const msg = e?.error?.message ?? e.message;
    check(name, e instanceof OpenAI.APIError && e.status === status && (!needle || msg.includes(needle)),
          `status ${e.status}, ${msg}`);
  }
}
const greedy = (prompt, model = 'base') =>
  client.completions.create({ model, prompt, max_tokens: expect.max_tokens, temperature: 0 });

// models
const models = await client.models.list();
const ids = models.data.map((m) => m.id);
check('GET /v1/models lists the base and the adapter', ids.includes('base') && ids.includes('tiny'), JSON.stringify(ids));

// one request: the server's greedy text is the CLI's, byte for byte
const one = await greedy(expect.prompts[0]);
check('completion equals memtune generate (1 request)', one.choices[0].text === expect.base[0],
      JSON.stringify([one.choices[0].text, expect.base[0]]));
check('usage counts prompt and completion tokens',
      one.usage.prompt_tokens > 1 && one.usage.completion_tokens > 0 &&
      one.usage.total_tokens === one.usage.prompt_tokens + one.usage.completion_tokens, JSON.stringify(one.usage));
check('finish_reason is stop or length', ['stop', 'length'].includes(one.choices[0].finish_reason), one.choices[0].finish_reason);

// eight at once, batched: each still equals the CLI
const eight = await Promise.all(expect.prompts.map((p) => greedy(p)));
eight.forEach((r, i) => check(`completion equals memtune generate (8 concurrent, #${i})`,
  r.choices[0].text === expect.base[i], JSON.stringify([r.choices[0].text, expect.base[i]])));

// max_tokens 1 ends with length; a stop string cuts the text before it
const short = await client.completions.create({ model: 'base', prompt: expect.prompts[0], max_tokens: 1, temperature: 0 });
check('max_tokens 1 gives one token and finish_reason length',
      short.usage.completion_tokens === 1 && short.choices[0].finish_reason === 'length', JSON.stringify(short));
const word = expect.base[0].trim().split(' ')[2];
const stopped = await client.completions.create({ model: 'base', prompt: expect.prompts[0], max_tokens: expect.max_tokens,
                                                  temperature: 0, stop: [word] });
check('stop string cuts the text before it', stopped.choices[0].finish_reason === 'stop' &&
      expect.base[0].startsWith(stopped.choices[0].text) && !stopped.choices[0].text.includes(word),
      JSON.stringify([stopped.choices[0].text, word]));
const echoed = await client.completions.create({ model: 'base', prompt: expect.prompts[0], max_tokens: expect.max_tokens,
                                                 temperature: 0, echo: true });
check('echo puts the prompt first', echoed.choices[0].text === expect.prompts[0] + expect.base[0],
      JSON.stringify(echoed.choices[0].text));

// streaming: the chunks join to the same text
const stream = await client.completions.create({ model: 'base', prompt: expect.prompts[1], max_tokens: expect.max_tokens,
                                                 temperature: 0, stream: true });
let streamed = '', finish = null, chunks = 0;
for await (const c of stream) {
  streamed += c.choices[0]?.text ?? '';
  finish = c.choices[0]?.finish_reason ?? finish;
  chunks++;
}
check('stream:true sends chunks that join to the CLI text', streamed === expect.base[1] && finish && chunks >= 2,
      JSON.stringify([streamed, expect.base[1], finish, chunks]));

// chat, rendered with the chat template training uses
const chat = await client.chat.completions.create({ model: 'base', messages: [{ role: 'user', content: expect.chat_user }],
                                                   max_tokens: expect.max_tokens, temperature: 0 });
check('chat completion answers as the assistant with usage', chat.choices[0].message.role === 'assistant' &&
      chat.choices[0].message.content.length > 0 && chat.usage.completion_tokens > 0, JSON.stringify(chat));
check('chat through the default template = completion of its rendering', chat.choices[0].message.content === expect.chat_text,
      JSON.stringify([chat.choices[0].message.content, expect.chat_text]));
const cstream = await client.chat.completions.create({ model: 'base', messages: [{ role: 'user', content: expect.chat_user }],
                                                      max_tokens: expect.max_tokens, temperature: 0, stream: true });
let ctext = '', role = null;
for await (const c of cstream) {
  ctext += c.choices[0]?.delta?.content ?? '';
  role = c.choices[0]?.delta?.role ?? role;
}
check('chat stream joins to the same answer', ctext === chat.choices[0].message.content && role === 'assistant',
      JSON.stringify([ctext, role]));

// the adapter by name equals memtune generate --adapter, and is not the base
const ad = await greedy(expect.adapter.prompt, 'tiny');
check('adapter by name equals memtune generate --adapter', ad.choices[0].text === expect.adapter.text,
      JSON.stringify([ad.choices[0].text, expect.adapter.text]));
check('the adapter changes the answer', ad.choices[0].text !== expect.adapter.base_text, JSON.stringify(ad.choices[0].text));
const mixed = await Promise.all([greedy(expect.adapter.prompt, 'tiny'), greedy(expect.adapter.prompt, 'base'),
                                 greedy(expect.adapter.prompt, 'tiny2')]);
check('base and adapters side by side in one batch', mixed[0].choices[0].text === expect.adapter.text &&
      mixed[1].choices[0].text === expect.adapter.base_text && mixed[2].choices[0].text === expect.adapter.text,
      JSON.stringify(mixed.map((m) => m.choices[0].text)));
// POST /v1/adapters registers one more (max-adapters 2: the least recently used leaves, and comes back)
const added = await fetch(base + '/v1/adapters', { method: 'POST', headers: { Authorization: 'Bearer ' + key },
  body: JSON.stringify({ name: 'tiny3', path: expect.adapter.dir }) });
check('POST /v1/adapters answers 201', added.status === 201, added.status);
const again = await Promise.all([greedy(expect.adapter.prompt, 'tiny3'), greedy(expect.adapter.prompt, 'tiny')]);
check('adapters reload after leaving the LRU', again.every((r) => r.choices[0].text === expect.adapter.text),
      JSON.stringify(again.map((m) => m.choices[0].text)));
const badAdd = await fetch(base + '/v1/adapters', { method: 'POST', headers: { Authorization: 'Bearer ' + key },
  body: JSON.stringify({ name: 'nope', path: '/nonexistent' }) });
check('POST /v1/adapters with a bad path is a 400', badAdd.status === 400, badAdd.status);

// structured output: response_format (json_schema, json_object) and llama.cpp's grammar
const fmt = { type: 'json_schema', json_schema: { name: 'person', schema: expect.schema } };
const js = await client.completions.create({ model: 'base', prompt: 'Lily has a cat.', max_tokens: expect.max_tokens,
                                             temperature: 0, response_format: fmt });
check('response_format json_schema, greedy = memtune generate --json-schema', js.choices[0].text === expect.schema_text,
      JSON.stringify([js.choices[0].text, expect.schema_text]));
const people = await Promise.all([1, 2, 3, 4].map((seed) => client.chat.completions.create({ model: 'base',
  messages: [{ role: 'user', content: 'Who is Lily?' }], max_tokens: 200, temperature: 1, seed, response_format: fmt })));
people.forEach((r, i) => {
  let v = null;
  try { v = JSON.parse(r.choices[0].message.content); } catch (e) { /* checked below */ }
  check(`sampled chat answer #${i} parses and follows the schema`, v && typeof v.name === 'string' && v.name.length <= 12 &&
        Number.isInteger(v.age) && Object.keys(v).length === 2 && r.choices[0].finish_reason === 'stop',
        JSON.stringify(r.choices[0]));
});
const obj = await client.completions.create({ model: 'base', prompt: 'Data:', max_tokens: 300, temperature: 1, seed: 9,
                                              response_format: { type: 'json_object' } });
let parsed = null;
try { parsed = JSON.parse(obj.choices[0].text); } catch (e) { /* checked below */ }
// the story model writes long keys: a run may end on max_tokens inside one, else it parses
check('response_format json_object gives a JSON object', obj.choices[0].text.trim().startsWith('{') &&
      (obj.choices[0].finish_reason === 'length' || (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed))),
      JSON.stringify(obj.choices[0]));
const yn = await client.completions.create({ model: 'base', prompt: 'Is the sky blue?', max_tokens: 10, temperature: 1, seed: 2,
                                             grammar: 'root ::= "yes" | "no"' });
check('a GBNF grammar field constrains the answer', ['yes', 'no'].includes(yn.choices[0].text), JSON.stringify(yn.choices[0]));
await rejects('an unsupported schema keyword is a 400 naming its pointer', () => client.completions.create({ model: 'base',
  prompt: 'x', response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'string', format: 'email' } } } }),
  400, 'format');
await rejects('a bad grammar is a 400 with its line and column', () => client.completions.create({ model: 'base', prompt: 'x',
  grammar: 'root ::= "a' }), 400, 'line');
await rejects('an unknown response_format type is a 400', () => client.completions.create({ model: 'base', prompt: 'x',
  response_format: { type: 'yaml' } }), 400, 'response_format');

// bad requests: OpenAI error objects, and the server keeps serving
await rejects('unknown model is a 404', () => greedy('x', 'no-such-model'), 404, 'does not exist');
await rejects('temperature out of range is a 400', () => client.completions.create({ model: 'base', prompt: 'x', temperature: 7 }), 400, 'temperature');
await rejects('max_tokens 0 is a 400', () => client.completions.create({ model: 'base', prompt: 'x', max_tokens: 0 }), 400, 'max_tokens');
await rejects('n 2 is a 400', () => client.completions.create({ model: 'base', prompt: 'x', n: 2 }), 400, "'n'");
await rejects('a prompt longer than the context is a 400', () => client.completions.create({ model: 'base', prompt: 'word '.repeat(5000) }), 400, 'context');
await rejects('messages of the wrong type are a 400', () => client.chat.completions.create({ model: 'base', messages: 'hi' }), 400, 'messages');
await rejects('a message without role is a 400', () => client.chat.completions.create({ model: 'base', messages: [{ content: 'hi' }] }), 400, 'role');
const raw = async (body, headers = {}) => fetch(base + '/v1/completions', { method: 'POST', body,
  headers: { Authorization: 'Bearer ' + key, 'Content-Type': 'application/json', ...headers } });
const malformed = await raw('{"prompt": "x",');
const mj = await malformed.json();
check('malformed JSON is a 400 with an OpenAI error object', malformed.status === 400 && mj.error &&
      typeof mj.error.message === 'string' && 'type' in mj.error && 'param' in mj.error && 'code' in mj.error, JSON.stringify(mj));
const big = await raw('{"prompt": "' + 'a'.repeat(9 << 20) + '"}');
check('a body over 8 MiB is a 413', big.status === 413, big.status);
const noauth = await fetch(base + '/v1/models');
check('no key is a 401', noauth.status === 401, noauth.status);
await rejects('a wrong key is a 401', () => new OpenAI({ baseURL: base + '/v1', apiKey: 'wrong', maxRetries: 0 }).models.list(), 401, 'API key');

// a client that hangs up mid-stream frees its sequence at the next step
const ac = new AbortController();
const long = await client.completions.create({ model: 'base', prompt: 'Once', max_tokens: 3000, temperature: 1, seed: 5, ignore_eos: true,
                                               stream: true }, { signal: ac.signal });
const before = await (await fetch(base + '/health')).json();
try {
  for await (const c of long) { if (c) { ac.abort(); } }
} catch (e) { /* aborted */ }
let h;
for (let i = 0; i < 100; i++) {
  h = await (await fetch(base + '/health')).json();
  if (h.active === 0 && h.queued === 0) break;
  await new Promise((r) => setTimeout(r, 50));
}
check('a hung-up stream is dropped long before its 3000 tokens', h.active === 0 && h.tokens - before.tokens < 2000,
      JSON.stringify([before, h]));
const after = await greedy(expect.prompts[2]);
check('still serving after all that', after.choices[0].text === expect.base[2], after.choices[0].text);

console.log(failures ? `${failures} failures` : 'all passed');
process.exit(failures ? 1 : 0);
