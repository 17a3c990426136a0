// Load for bench/serve.sh: N concurrent streams of completions (max_tokens new tokens each,
// greedy, ignore_eos so every stream makes all of them) against a running memtune serve.
// Prints one JSON line: streams, tokens, wall seconds, aggregate tokens/s, p50/p99 time to
// first token. env BASE_URL; argv: streams tokens.
const base = process.env.BASE_URL, streams = Number(process.argv[2]), tokens = Number(process.argv[3]);
const prompts = ['Once upon a time', 'Lily and Tom went', 'The cat sat', 'One day, a little', 'Sam had a big',
                 'The sun was', 'There was a dog', 'Mom said'];
async function one(i) {
  const t0 = performance.now();
  const r = await fetch(base + '/v1/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt: prompts[i % prompts.length], max_tokens: tokens, temperature: 0, ignore_eos: true,
                           stream: true }) });
  let ttft = null, n = 0;
  const dec = new TextDecoder();
  for await (const chunk of r.body) {
    if (ttft === null) ttft = performance.now() - t0;
    for (const line of dec.decode(chunk).split('\n'))
      if (line.startsWith('data: {') && line.includes('"usage"')) n = JSON.parse(line.slice(6)).usage.completion_tokens;
  }
  return { ttft, n };
}
const t0 = performance.now();
const res = await Promise.all(Array.from({ length: streams }, (_, i) => one(i)));
const wall = (performance.now() - t0) / 1000;
const total = res.reduce((a, r) => a + r.n, 0);
const tt = res.map((r) => r.ttft).sort((a, b) => a - b);
const q = (p) => tt[Math.min(tt.length - 1, Math.floor(p * tt.length))];
console.log(JSON.stringify({ streams, tokens: total, wall_s: +wall.toFixed(3), tok_per_s: +(total / wall).toFixed(1),
                             ttft_p50_ms: +q(0.5).toFixed(1), ttft_p99_ms: +q(0.99).toFixed(1) }));
