// Fine-tuning jobs on memtune serve, driven by the official OpenAI client (npm "openai"), as
// an application would: upload facts, tune, poll, ask the tuned model. Run by
// tests/cli/serve_jobs.sh, which starts the server. env: BASE_URL, FACTS (JSONL of
// {"input","output"}), BAD (a JSONL whose line 3 is broken), OUT (a JSON file this writes:
// the tuned model's name and the first fact's answer, for the restart check).
import OpenAI, { toFile } from 'openai';
import { readFileSync, writeFileSync } from 'node:fs';

const client = new OpenAI({ baseURL: process.env.BASE_URL + '/v1', apiKey: 'none', maxRetries: 0, timeout: 120000 });
const facts = readFileSync(process.env.FACTS, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
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
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(id, statuses, seconds) {
  let job;
  for (let i = 0; i < seconds * 5; i++) {
    job = await client.fineTuning.jobs.retrieve(id);
    if (statuses.includes(job.status)) return job;
    await sleep(200);
  }
  return job;
}
// small settings: 4 facts on the bundled 260K model take a few seconds
const memoryMethod = {
  type: 'memory',
  memory: { hyperparameters: { steps: 200, experts: 256, expert_k: 4, expert_heads: 2, batch_size: 2, seq_len: 32,
                               save_every: 20 } },
};

// files: a bad upload is refused with its line, nothing stored; a good one is stored
await rejects('a bad upload is a 400 naming its line', async () =>
  client.files.create({ file: await toFile(readFileSync(process.env.BAD), 'bad.jsonl'), purpose: 'fine-tune' }), 400, 'bad.jsonl:3:');
check('and nothing was stored', (await client.files.list()).data.length === 0, 'a file is listed');
await rejects('a purpose other than fine-tune is refused', async () =>
  client.files.create({ file: await toFile(readFileSync(process.env.FACTS), 'facts.jsonl'), purpose: 'assistants' }), 400, 'purpose');
const file = await client.files.create({ file: await toFile(readFileSync(process.env.FACTS), 'facts.jsonl'), purpose: 'fine-tune' });
check('upload stores the file', file.id.startsWith('file-') && file.filename === 'facts.jsonl' && file.purpose === 'fine-tune' &&
      file.bytes === readFileSync(process.env.FACTS).length, JSON.stringify(file));
check('GET /v1/files/{id}', (await client.files.retrieve(file.id)).id === file.id, 'not found');
const spare = await client.files.create({ file: await toFile(readFileSync(process.env.FACTS), 'spare.jsonl'), purpose: 'fine-tune' });
const deleted = await client.files.delete(spare.id);
check('DELETE /v1/files/{id}', deleted.deleted === true && deleted.id === spare.id, JSON.stringify(deleted));
await rejects('a deleted file is gone (404)', () => client.files.retrieve(spare.id), 404);

// bad job requests: 400s naming the problem
await rejects('an unknown hyperparameter is refused', () => client.fineTuning.jobs.create({
  model: 'base', training_file: file.id, method: { type: 'memory', memory: { hyperparameters: { colour: 3 } } } }), 400, 'colour');
await rejects('an out-of-range option is refused with its range', () => client.fineTuning.jobs.create({
  model: 'base', training_file: file.id, method: { type: 'lora', lora: { hyperparameters: { rank: 0 } } } }), 400, '--rank 0');
await rejects('an unknown training file is refused', () =>
  client.fineTuning.jobs.create({ model: 'base', training_file: 'file-00' }), 400, 'file-00');
await rejects('a model other than the base is refused', () =>
  client.fineTuning.jobs.create({ model: 'gpt-4o', training_file: file.id }), 400, 'base');
await rejects('GET an unknown job is a 404', () => client.fineTuning.jobs.retrieve('ftjob-0123'), 404);

// cancel a running job: a long one starts at once (nothing else runs)
const long = await client.fineTuning.jobs.create({ model: 'base', training_file: file.id, suffix: 'long',
  method: { type: 'memory', memory: { hyperparameters: { ...memoryMethod.memory.hyperparameters, steps: 100000 } } } });
check('a job is created queued', long.status === 'queued' && long.object === 'fine_tuning.job', JSON.stringify(long));
const running = await waitFor(long.id, ['running'], 30);
check('it starts running', running.status === 'running', running.status);
const cancelled = await client.fineTuning.jobs.cancel(long.id);
check('POST cancel: cancelled', cancelled.status === 'cancelled' && cancelled.finished_at !== null, JSON.stringify(cancelled));
await rejects('cancelling it again is a 400', () => client.fineTuning.jobs.cancel(long.id), 400, 'cancelled');

// the memory-tuning job: queued, running, succeeded
const job = await client.fineTuning.jobs.create({ model: 'base', training_file: file.id, method: memoryMethod, seed: 3,
                                                  suffix: 'facts' });
const done = await waitFor(job.id, ['succeeded', 'failed', 'cancelled'], 240);
check('the memory-tuning job succeeds', done.status === 'succeeded', JSON.stringify(done));
check('fine_tuned_model is ft:base:facts:<job id>', done.fine_tuned_model === `ft:base:facts:${job.id}`, done.fine_tuned_model);
check('trained_tokens is counted', done.trained_tokens > 0, done.trained_tokens);
check('the cancelled job stayed cancelled', (await client.fineTuning.jobs.retrieve(long.id)).status === 'cancelled', 'changed');

const events = [];
for await (const ev of client.fineTuning.jobs.listEvents(job.id, { limit: 7 })) events.push(ev); // pages of 7
check('events: started, fact checks with metrics, succeeded (newest first)',
      events.some((e) => e.type === 'metrics' && e.data?.facts === facts.length) &&
      events.some((e) => e.message.startsWith('Fine-tuning job started')) &&
      events[0].message.includes('successfully completed') && new Set(events.map((e) => e.id)).size === events.length,
      JSON.stringify(events.slice(0, 3)));
const ckpts = await client.fineTuning.jobs.checkpoints.list(job.id);
// memory tuning stops once every fact is recalled (at most the 200 steps asked for): the newest
// checkpoint is the last step's, listed first
const steps = ckpts.data.map((c) => c.step_number);
check('checkpoints: newest first, the last at or before step 200', ckpts.data.length >= 1 && steps[0] > 0 &&
      steps[0] <= 200 && steps.every((s, i) => i === 0 || s < steps[i - 1]) &&
      ckpts.data[0].fine_tuning_job_id === job.id, JSON.stringify(ckpts.data));

// served at once: listed, and it answers a fact with the stored answer, exactly
const ids = (await client.models.list()).data.map((m) => m.id);
check('/v1/models lists the tuned model', ids.includes(done.fine_tuned_model), JSON.stringify(ids));
const answers = [];
for (const f of facts) {
  const r = await client.chat.completions.create({ model: done.fine_tuned_model, temperature: 0, max_tokens: 32,
                                                   messages: [{ role: 'user', content: f.input }] });
  answers.push(r.choices[0].message.content);
}
check('the tuned model answers a fact with the stored answer exactly', answers[0] === facts[0].output,
      JSON.stringify([answers[0], facts[0].output]));
console.log(`     (${answers.filter((a, i) => a === facts[i].output).length}/${facts.length} facts answered exactly)`);
const base = await client.chat.completions.create({ model: 'base', temperature: 0, max_tokens: 32,
                                                    messages: [{ role: 'user', content: facts[0].input }] });
check('the base model does not know it', base.choices[0].message.content !== facts[0].output, base.choices[0].message.content);

// list and page: three jobs, newest first
const third = await client.fineTuning.jobs.create({ model: 'base', training_file: file.id,
  method: { type: 'lora', lora: { hyperparameters: { n_epochs: 1, rank: 2 } } } });
await client.fineTuning.jobs.cancel(third.id);
const page1 = await client.fineTuning.jobs.list({ limit: 2 });
check('list: limit 2 gives the two newest and has_more', page1.data.length === 2 && page1.has_more === true &&
      page1.data[0].id === third.id && page1.data[1].id === job.id, JSON.stringify(page1.data.map((j) => j.id)));
const page2 = await client.fineTuning.jobs.list({ limit: 2, after: page1.data[1].id });
check('list: after the second, the third and no more', page2.data.length === 1 && page2.has_more === false &&
      page2.data[0].id === long.id, JSON.stringify(page2.data.map((j) => j.id)));
const all = [];
for await (const j of client.fineTuning.jobs.list({ limit: 1 })) all.push(j.id);
check('the client pages through all of them', JSON.stringify(all) === JSON.stringify([third.id, job.id, long.id]), JSON.stringify(all));

writeFileSync(process.env.OUT, JSON.stringify({ model: done.fine_tuned_model, question: facts[0].input, answer: answers[0] }));
process.exit(failures ? 1 : 0);
