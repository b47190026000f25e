// A worker id belongs to one live process: its liveness lock (ballast.worker_lock) is held on a dedicated
// connection. A second process with the same id fails at once with a clear error instead of hanging or sharing it.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { startWorker } from '../src/worker/worker.ts';
import { freshDatabase, quietLog, testWorker } from './helpers.ts';

const { url, pool } = await freshDatabase(t);
const p = pipeline({ name: 'ident.noop', version: 1, input: z.object({}) }).step('s', { output: z.object({}) }, () => ({}));

t.test('a second worker with the same id is refused', async (t) => {
  await testWorker(t, url, { pipelines: [p], workerId: 'worker-a' });
  await t.rejects(startWorker({ connectionString: url, pipelines: [p], workerId: 'worker-a', log: quietLog }),
    /worker id worker-a is held by another live database session/);
  const { rows } = await pool.query(
    `select count(*)::int as n from pg_locks l, ballast.worker_lock('worker-a') w
      where l.locktype = 'advisory' and l.granted and l.classid::bigint = w.namespace
        and l.objid::bigint = (w.key::bigint & 4294967295) and l.objsubid = 2`);
  t.equal(rows[0].n, 1, 'the first worker still holds its lock');
});
