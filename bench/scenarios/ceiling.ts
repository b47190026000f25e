// Ceiling: the least a Postgres queue must do per job, with the connections the workers get. N rows are inserted in
// bulk (not timed, as graphile-worker's jobs are bulk-added); then C connections each loop on one autocommit
// statement that takes the oldest unlocked row with FOR UPDATE SKIP LOCKED and deletes it, until the table is empty.
// No payload handling, no bookkeeping, no second round trip to mark a job done: every real queue does more.
import { connect } from '../database.ts';

const DEQUEUE = `delete from bench_queue
                  where id = (select id from bench_queue order by id limit 1 for update skip locked)
                 returning id`;

export async function ceiling(url: string, n: number, connections: number): Promise<{ ceiling_jobs_per_s: number }> {
  const setup = await connect(url);
  try {
    await setup.query(`create table bench_queue (id bigint generated always as identity primary key,
                                                 payload jsonb not null default '{}', created_at timestamptz not null default now())`);
    await setup.query(`insert into bench_queue (payload) select '{}' from generate_series(1, $1::int)`, [n]);
    await setup.query('vacuum analyze bench_queue');
  } finally {
    await setup.end();
  }
  const clients = await Promise.all(Array.from({ length: connections }, () => connect(url)));
  try {
    let taken = 0;
    const start = performance.now();
    await Promise.all(clients.map(async (c) => {
      for (;;) {
        const r = await c.query(DEQUEUE);
        if (r.rowCount === 0) return;
        taken++;
      }
    }));
    const seconds = (performance.now() - start) / 1000;
    if (taken !== n) throw new Error(`ceiling: dequeued ${taken} of ${n} rows`);
    return { ceiling_jobs_per_s: n / seconds };
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
}
