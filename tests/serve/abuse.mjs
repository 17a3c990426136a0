// A bounded abuse run against a running memtune serve (tests/serve/abuse.sh starts it):
// 1,000 malformed or oversized requests and 100 clients that hang up mid-stream, mixed with
// well-formed requests whose greedy answers must all equal the first one. Loopback only; it
// stops by itself. env BASE_URL, API_KEY.
import net from 'node:net';

const base = process.env.BASE_URL, key = process.env.API_KEY;
const url = new URL(base);
const auth = { Authorization: 'Bearer ' + key, 'Content-Type': 'application/json' };
let failures = 0;
const fail = (m) => { failures++; if (failures < 20) console.log('FAIL ' + m); };

const good = { model: 'base', prompt: 'Once upon a time', max_tokens: 24, temperature: 0 };
const post = (path, body, headers = auth) => fetch(base + path, { method: 'POST', headers, body });
const want = (await (await post('/v1/completions', JSON.stringify(good))).json()).choices[0].text;

const malformed = [
  () => '{', () => 'null', () => '[]', () => '"x"', () => '{"prompt": 5}', () => '{"prompt": ["a", "b"]}',
  () => '{"prompt": "x", "temperature": "hot"}', () => '{"prompt": "x", "max_tokens": -1}',
  () => '{"prompt": "x", "top_p": 0}', () => '{"prompt": "x", "stop": [1]}', () => '{"prompt": "x", "n": 3}',
  () => '{"prompt": "x", "model": "nope"}', () => '{"prompt": "x", "prompt": "y"}', () => '{"prompt": "\\u0000"}',
  () => '{"messages": []}', () => '{"messages": [{"role": 1}]}', () => '\xff\xfe{}',
  () => '{"prompt": "' + 'a b '.repeat(5000) + '"}', () => '{"prompt": "x", "seed": 1.5}',
  () => '{"prompt": ' + '['.repeat(5000) + ']'.repeat(5000) + '}',
];
let statuses = {};
async function one(i) {
  const kind = i % (malformed.length + 2);
  let r;
  if (kind === malformed.length) r = await post('/v1/completions', 'x'.repeat((8 << 20) + 10)); // oversized
  else if (kind === malformed.length + 1) r = await post('/v1/completions', '{}', { 'Content-Type': 'application/json' }); // no key
  else r = await post(i % 2 ? '/v1/completions' : '/v1/chat/completions', malformed[kind]());
  statuses[r.status] = (statuses[r.status] ?? 0) + 1;
  if (r.status < 400 || r.status >= 500) fail(`request ${i} (kind ${kind}) answered ${r.status}`);
  const j = await r.json().catch(() => null);
  if (!j?.error?.message) fail(`request ${i} (kind ${kind}) has no OpenAI error object`);
}
// a client that starts a stream and hangs up after a few bytes
function hangup() {
  return new Promise((resolve) => {
    const body = JSON.stringify({ model: 'base', prompt: 'Once', max_tokens: 400, stream: true, ignore_eos: true });
    const s = net.connect(Number(url.port), url.hostname, () => {
      s.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\n` +
              `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    });
    s.once('data', () => { s.destroy(); resolve(); });
    s.on('error', resolve);
    setTimeout(() => { s.destroy(); resolve(); }, 10000);
  });
}
let goodOk = 0;
async function goodOne() {
  const r = await post('/v1/completions', JSON.stringify(good));
  const j = await r.json();
  if (r.status === 200 && j.choices[0].text === want) goodOk++;
  else fail(`a well-formed request got ${r.status} ${JSON.stringify(j).slice(0, 200)}`);
}
for (let round = 0; round < 50; round++) { // 50 rounds x (20 malformed + 2 hang-ups + 1 good)
  const jobs = [];
  for (let k = 0; k < 20; k++) jobs.push(one(round * 20 + k));
  jobs.push(hangup(), hangup(), goodOne());
  await Promise.all(jobs);
}
console.log('statuses', JSON.stringify(statuses), 'well-formed answered correctly', goodOk, 'of 50');
if (goodOk !== 50) fail('not every well-formed request was answered correctly');
console.log(failures ? `${failures} failures` : 'abuse run passed');
process.exit(failures ? 1 : 0);
