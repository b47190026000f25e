// Every outcome is saved, whatever a step returns or throws (src/worker/storable.ts, src/worker/runner.ts): values JSON or
// Postgres cannot carry and odd things thrown settle the attempt at once as a failure with a readable reason, in the
// same batch as ordinary outcomes, and the worker keeps serving. A generated corpus (fast-check) of strings with
// NULs, lone surrogates and any code points, thrown and returned, must never leave an attempt running.
import t from 'tap';
import fc from 'fast-check';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { MAX_ERROR_MESSAGE } from '../src/worker/storable.ts';
import { freshDatabase, testWorker, waitForJob } from './helpers.ts';

const { url, db } = await freshDatabase(t);

const deep = (n: number) => {
  let v: unknown = 1;
  for (let i = 0; i < n; i++) v = [v];
  return v;
};
const circular = () => {
  const o: Record<string, unknown> = {};
  o.self = o;
  return o;
};
const throwingToString = { toString() { throw new Error('toString refuses'); } };
const messageGetterThrows = () => {
  const e = new Error('x');
  Object.defineProperty(e, 'message', { get() { throw new Error('no message for you'); } });
  return e;
};

// What each kind of step returns (output) or throws (thrown), and what the attempt must say.
const returns: Record<string, [() => unknown, RegExp]> = {
  bigint: [() => ({ n: 10n }), /BigInt/],
  circular: [circular, /circular|cyclic/i],
  nul: [() => ({ text: 'a\u0000b' }), /\\u0000/],
  surrogate: [() => ({ text: 'a\uD800b' }), /lone UTF-16 surrogate/],
  deep: [() => deep(5000), /nested 5001 levels deep|call stack/],
};
const throws: Record<string, [() => unknown, RegExp, string]> = {
  string: [() => 'plain string thrown', /plain string thrown/, 'thrown_string'],
  undefined: [() => undefined, /undefined was thrown/, 'thrown_undefined'],
  null: [() => null, /null was thrown/, 'thrown_null'],
  toStringThrows: [() => throwingToString, /an unprintable object|a object was thrown/, 'thrown_object'],
  nulMessage: [() => new Error('bad\u0000byte'), /bad\\u0000byte/, 'Error'],
  surrogateMessage: [() => new Error('half \uDC00 pair'), /half \uFFFD pair/, 'Error'],
  hugeMessage: [() => new Error('m'.repeat(1_000_000)), /\(cut: 1000000 characters\)$/, 'Error'],
  messageGetter: [messageGetterThrows, /Error/, 'Error'],
};

let corpus: { value: unknown; thrown: boolean }[] = [];
const odd = pipeline({ name: 'odd.outcomes', version: 1, input: z.object({ kind: z.string(), i: z.number().optional() }) })
  .step('emit', { output: z.any(), retry: { maxAttempts: 1 } }, ({ input }) => {
    if (input.kind === 'ok') return { fine: true };
    if (input.kind === 'corpus') {
      const c = corpus[input.i!]!;
      if (c.thrown) throw c.value;
      return c.value;
    }
    if (input.kind in returns) return returns[input.kind]![0]();
    throw throws[input.kind]![0]();
  });

await testWorker(t, url, { pipelines: [odd], concurrency: 4 });

t.test('outputs Postgres cannot store and odd things thrown settle at once, with a readable reason', async (t) => {
  const jobs = new Map<string, string>();
  for (const kind of [...Object.keys(returns), ...Object.keys(throws)]) jobs.set(kind, (await db.submitJob({ pipeline: 'odd.outcomes', input: { kind } })).jobId);
  const good = (await db.submitJob({ pipeline: 'odd.outcomes', input: { kind: 'ok' } })).jobId;
  for (const [kind, jobId] of jobs) {
    // Settled by the worker in its next batch: well under the two leases (60 s) a lost outcome used to wait.
    const job = await waitForJob(db, jobId, undefined, 15_000);
    const [attempt] = await db.getAttempts(jobId);
    t.equal(job.status, 'failed', `${kind}: the job failed`);
    t.equal(attempt!.outcome, 'failed', `${kind}: the attempt is settled as failed`);
    if (kind in returns) {
      t.equal(attempt!.error_class, 'unstorable_output', `${kind}: class unstorable_output`);
      t.match(attempt!.error_message, returns[kind]![1], `${kind}: the reason says why`);
    } else {
      t.equal(attempt!.error_code, throws[kind]![2], `${kind}: code ${throws[kind]![2]}`);
      t.match(attempt!.error_message, throws[kind]![1], `${kind}: a readable message`);
      t.ok(attempt!.error_message!.length <= MAX_ERROR_MESSAGE, `${kind}: the message is at most ${MAX_ERROR_MESSAGE} characters`);
    }
  }
  t.equal((await waitForJob(db, good, undefined, 15_000)).status, 'completed', 'the worker kept serving');
});

t.test('generated strings and values, returned and thrown, always settle (fast-check)', async (t) => {
  const text = fc.string({ unit: 'binary', maxLength: 40 });
  const value = fc.oneof(
    fc.record({ s: text }), fc.array(text, { maxLength: 5 }), text,
    fc.constant('\u0000'), fc.constant('\uD83D'), fc.constant({ k: '\uDE00\u0000' }),
  );
  corpus = fc.sample(fc.record({ value, thrown: fc.boolean() }), { numRuns: 60, seed: 12_07 });
  corpus = corpus.map((c, i) => (c.thrown && typeof c.value === 'string' && i % 2 === 0 ? { ...c, value: new Error(c.value) } : c));
  const ids: string[] = [];
  for (let i = 0; i < corpus.length; i++) ids.push((await db.submitJob({ pipeline: 'odd.outcomes', input: { kind: 'corpus', i } })).jobId);
  let completed = 0;
  for (const [i, id] of ids.entries()) {
    const job = await waitForJob(db, id, undefined, 15_000);
    const [attempt] = await db.getAttempts(id);
    if (job.status === 'completed') completed++;
    else if (job.status !== 'failed' || attempt!.outcome !== 'failed' || !attempt!.error_message) {
      t.fail(`case ${i} (${JSON.stringify(corpus[i])}) ended ${job.status}/${attempt!.outcome}`);
    }
  }
  t.comment(`${completed} of ${ids.length} generated outcomes were storable and completed; the rest failed with a reason`);
  t.pass('every generated outcome settled');
});
