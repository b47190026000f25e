// Map flatness: items/s of one map step (bench.map: the items function returns n items, each item a no-op) at a
// small and a large n, with one ballast worker child at concurrency 10 (default settings). Timed on the database
// clock, from the listing (the map step's first attempt finished_at, set by ballast.expand_items in the transaction
// that inserts the item steps) to the map step's success (its finished_at, set when the last item is final):
// inserting the items, claiming, running and settling them, and finishing the map step (its output lists every
// item). Each size runs on its own clone of the template; the order of the two sizes alternates from round to round.
// Flatness = items/s at the large n ÷ items/s at the small n (1.0: finishing an item costs the same at any n).
import { connect } from '../database.ts';
import { spawnWorker } from '../children.ts';

export interface MapRun {
  items: number;
  itemsPerS: number;
  seconds: number;
}

export async function mapRun(url: string, n: number, label: string): Promise<MapRun> {
  const c = await connect(url);
  const w = spawnWorker(url, { kind: 'ballast', concurrency: 10 }, label);
  try {
    await w.ready;
    const { rows } = await c.query<{ job_id: string }>(`select job_id from ballast.submit_job('bench.map', $1::jsonb)`, [JSON.stringify({ n })]);
    const jobId = rows[0]!.job_id;
    const until = Date.now() + 600_000;
    for (;;) {
      const { rows: s } = await c.query<{ status: string }>(`select status from ballast_private.jobs where id = $1`, [jobId]);
      const status = s[0]!.status;
      if (status === 'completed') break;
      if (['failed', 'cancelled', 'partially_completed'].includes(status)) throw new Error(`map run ${label}: job ${jobId} ended ${status}`);
      if (Date.now() > until) throw new Error(`map run ${label}: job ${jobId} still ${status} after 10 minutes`);
      if (w.child.exitCode !== null) throw new Error(`map run ${label}: the worker exited`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await w.stop();
    const { rows: r } = await c.query<{ seconds: number; items: string; ok: string }>(
      `select extract(epoch from m.finished_at - a.finished_at)::float8 as seconds,
              (select count(*) from ballast_private.steps i where i.parent_step_id = m.id) as items,
              (select count(*) from ballast_private.steps i where i.parent_step_id = m.id and i.status = 'succeeded') as ok
         from ballast_private.steps m
         join ballast_private.attempts a on a.step_id = m.id and a.number = 1
        where m.job_id = $1 and m.name = 'items'`, [jobId]);
    const x = r[0]!;
    if (Number(x.items) !== n || Number(x.ok) !== n) throw new Error(`map run ${label}: ${x.ok} of ${x.items} items succeeded, ${n} expected`);
    return { items: n, itemsPerS: n / x.seconds, seconds: x.seconds };
  } finally {
    await w.kill();
    await c.end();
  }
}
