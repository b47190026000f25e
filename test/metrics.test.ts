// Prometheus metrics: what a worker observes (attempts by outcome and error class, step durations, model calls with
// their cost and tokens) and what is read from Postgres at scrape time (queue depth and age), over real HTTP.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { PermanentError } from '../src/errors.ts';
import { startMetricsServer } from '../src/metrics.ts';
import { triage } from '../tasks/triage.ts';
import { freshDatabase, testWorker, waitForJob } from './helpers.ts';

const { url, db, pool } = await freshDatabase(t);
const metrics = await startMetricsServer({ port: 0, host: '127.0.0.1', db });
t.teardown(() => metrics.close());

const p = pipeline({ name: 'met.p', version: 1, input: z.object({}) })
  .step('a', { output: z.number() }, () => 1)
  .step('b', { after: ['a'], output: z.number() }, () => { throw new PermanentError('no such customer', { code: 'E404' }); });
const idle = pipeline({ name: 'met.idle', version: 1, input: z.object({}) }).step('x', { output: z.null() }, () => null);
await db.registerPipeline(idle.name, idle.version, idle.definition(), idle.inputJsonSchema());
await testWorker(t, url, { pipelines: [p, triage], concurrency: 2 });

async function scrape(): Promise<string> {
  const res = await fetch(metrics.url);
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return res.text();
}

/** The value of one sample, e.g. value(text, 'ballast_attempts_total', { step: 'a', outcome: 'succeeded' }). */
function value(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const body = line.slice(name.length + 1, line.lastIndexOf('}'));
    const have = Object.fromEntries([...body.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

t.test('attempts by outcome and error class, and step durations', async (t) => {
  const before = await scrape();
  const { jobId } = await db.submitJob({ pipeline: 'met.p', input: {} });
  t.equal((await waitForJob(db, jobId)).status, 'failed');
  const after = await scrape();
  const delta = (name: string, labels: Record<string, string>) => value(after, name, labels) - value(before, name, labels);
  t.equal(delta('ballast_attempts_total', { pipeline: 'met.p', version: '1', step: 'a', outcome: 'succeeded', error_class: 'none' }), 1);
  t.equal(delta('ballast_attempts_total', { pipeline: 'met.p', version: '1', step: 'b', outcome: 'failed', error_class: 'permanent' }), 1);
  t.equal(delta('ballast_step_duration_seconds_count', { pipeline: 'met.p', version: '1', step: 'a', outcome: 'succeeded' }), 1);
  t.equal(delta('ballast_step_duration_seconds_bucket', { pipeline: 'met.p', version: '1', step: 'a', outcome: 'succeeded', le: '+Inf' }), 1);
  t.match(after, /# TYPE ballast_step_duration_seconds histogram/);
  t.match(after, /# TYPE ballast_attempts_total counter/);
});

t.test('model calls, tokens and cost', async (t) => {
  const before = await scrape();
  const { jobId } = await db.submitJob({ pipeline: 'demo.triage', input: { text: 'Great service from Acme, thank you!' } });
  t.equal((await waitForJob(db, jobId)).status, 'completed');
  const after = await scrape();
  const labels = { provider: 'local', model: 'wink' };
  t.equal(value(after, 'ballast_model_calls_total', { ...labels, error_class: 'none' }) - value(before, 'ballast_model_calls_total', { ...labels, error_class: 'none' }), 1);
  const [call] = (await pool.query('select input_tokens, output_tokens from ballast.model_calls where job_id = $1', [jobId])).rows;
  t.equal(value(after, 'ballast_model_tokens_total', { ...labels, direction: 'output' }) - value(before, 'ballast_model_tokens_total', { ...labels, direction: 'output' }),
    call.output_tokens, 'output tokens match the trace');
  t.equal(value(after, 'ballast_model_call_duration_seconds_count', labels) - value(before, 'ballast_model_call_duration_seconds_count', labels), 1);
});

t.test('queue depth and age come from Postgres at scrape time', async (t) => {
  await db.submitJob({ pipeline: 'met.idle', input: {} });
  await db.submitJob({ pipeline: 'met.idle', input: {} });
  const text = await scrape();
  t.equal(value(text, 'ballast_queue_depth', { pipeline: 'met.idle', status: 'queued' }), 2, 'two queued steps no worker serves');
  const age = value(text, 'ballast_queue_oldest_age_seconds', { pipeline: 'met.idle' });
  t.ok(age >= 0 && age < 60, `the oldest waits for ${age} s`);
  t.match(text, /ballast_process_resident_memory_bytes/, 'process metrics included');
});

t.test('anything but GET /metrics is 404', async (t) => {
  const res = await fetch(metrics.url.replace('/metrics', '/nope'));
  t.equal(res.status, 404);
});
