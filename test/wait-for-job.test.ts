// db.waitForJob: the result of a submitted job, awaited from TypeScript (src/db/api.ts).
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { BallastError, WaitTimeoutError } from '../src/errors.ts';
import { freshDatabase, testWorker } from './helpers.ts';

const { url, db } = await freshDatabase(t);
const double = pipeline({ name: 'wait.double', version: 1, input: z.object({ n: z.number() }) })
  .step('double', { output: z.number() }, ({ input }) => input.n * 2);
await db.registerPipeline(double.name, double.version, double.definition(), double.inputJsonSchema());

t.test('no worker yet: a timeout says the job goes on; an abort rejects with its reason; then the result', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'wait.double', input: { n: 21 } });
  const late = await db.waitForJob(jobId, { timeoutMs: 300 }).then(() => undefined, (e: unknown) => e);
  t.ok(late instanceof WaitTimeoutError, 'a WaitTimeoutError');
  t.match(late, { jobId, status: 'queued', message: /still queued after 300 ms; it goes on/ });
  const controller = new AbortController();
  const waiting = db.waitForJob(jobId, { signal: controller.signal });
  controller.abort(new Error('caller gave up'));
  await t.rejects(waiting, /caller gave up/);
  await testWorker(t, url, { pipelines: [double] });
  const job = await db.waitForJob(jobId, { timeoutMs: 20_000 });
  t.match(job, { id: jobId, status: 'completed' });
  t.equal(job.result, 42);
});

t.test('an unknown job is not_found at once', async (t) => {
  const err = await db.waitForJob('987654321').then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof BallastError);
  t.match(err, { code: 'not_found', message: /job 987654321 does not exist/ });
});
