// The watchdog thread's body (started by src/worker/watchdog.ts, which explains what it does). Plain JavaScript on
// purpose: a worker thread that loads a .ts module pays for Node's type stripper in its own isolate (16 MB of the
// worker's RSS measured), and this thread must stay small. Types are noted in JSDoc comments.
// @ts-check
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { writeSync } from 'node:fs';
import { hostname } from 'node:os';
import pg from 'pg';

const CHECK_MS = 100;

/**
 * The thread's body.
 * @param {{ connectionString: string, workerId: string, leaseMs: number, heartbeatMs: number, marginMs: number,
 *           maxStallMs: number, quarantineAfter: number, shared: SharedArrayBuffer, level: number }} d
 */
function watch(d) {
  const cells = new BigInt64Array(d.shared);
  const base = { pid: process.pid, hostname: hostname(), name: 'ballast', worker_id: d.workerId, thread: 'watchdog' };
  // Written straight to fd 1: a worker thread's process.stdout goes through the (stalled) main thread.
  const log = (/** @type {number} */ level, /** @type {Record<string, unknown>} */ fields, /** @type {string} */ msg) => {
    if (level < d.level) return;
    try {
      writeSync(1, JSON.stringify({ level, time: Date.now(), ...base, ...fields, msg }) + '\n');
    } catch {
      // stdout closed: nothing to tell
    }
  };
  /** @type {pg.Client | undefined} */
  let client;
  const connection = async () => {
    if (client) return client;
    const c = new pg.Client({
      connectionString: d.connectionString, application_name: `ballast-watchdog ${d.workerId}`,
      connectionTimeoutMillis: 10_000, keepAlive: true,
    });
    c.on('error', () => {
      if (client === c) client = undefined;
    });
    c.on('end', () => {
      if (client === c) client = undefined;
    });
    await c.connect();
    client = c;
    return c;
  };
  const query = async (/** @type {string} */ text, /** @type {unknown[]} */ params) => {
    const c = await connection();
    try {
      return (await c.query(text, params)).rows;
    } catch (err) {
      // A broken connection is replaced on the next call; a SQL error keeps it.
      if (!err?.code || /^(08|57P)/.test(String(err.code))) {
        if (client === c) client = undefined;
        void c.end().catch(() => {});
      }
      throw err;
    }
  };

  let busy = false;
  let lastBeat = 0;
  let stallLogged = 0n;
  let stopped = false;

  const check = async () => {
    const lastPing = Number(Atomics.load(cells, 0));
    const now = Date.now();
    const stalled = now - lastPing;
    if (stalled < d.heartbeatMs || now - lastBeat < d.heartbeatMs) return;
    lastBeat = now;
    const [beat] = await query(
      'select alive, db_now, running from ballast.watchdog_heartbeat($1, $2)', [d.workerId, d.leaseMs]);
    if (stallLogged !== BigInt(lastPing)) {
      stallLogged = BigInt(lastPing);
      log(40, { stalled_ms: stalled, running: beat?.running.map((/** @type {any} */ r) => String(r.attempt_id)) ?? [] },
        'the event loop is blocked; the watchdog heartbeats for the worker');
    }
    if (!beat?.alive) return;
    const stalledNow = Date.now() - Number(Atomics.load(cells, 0));
    if (stalledNow < d.marginMs) return;
    // Deadlines on the database clock: the stall began at db_now - stalled.
    const dbNow = new Date(beat.db_now).getTime();
    const stallStart = dbNow - stalled;
    const over = beat.running.filter((/** @type {any} */ r) => {
      const deadline = r.timeout_ms !== null
        ? new Date(r.started_at).getTime() + r.timeout_ms + d.marginMs
        : stallStart + d.maxStallMs;
      return dbNow > deadline;
    });
    if (over.length === 0) return;
    const inHandler = Atomics.load(cells, 1);
    const mine = beat.running.map((/** @type {any} */ r) => BigInt(r.attempt_id));
    // Blame the attempt whose synchronous handler code holds the loop when it is known; every running one if not;
    // none of ours when it is another worker's of this process (that worker's watchdog blames it).
    const blamed = inHandler === 0n ? mine : mine.filter((id) => id === inHandler);
    const first = over[0];
    const message = `the event loop of worker ${d.workerId} was blocked for ${stalledNow} ms, past ` +
      (first.timeout_ms !== null ? `the timeout of ${first.timeout_ms} ms of attempt ${first.attempt_id} (+ ${d.marginMs} ms)`
        : `the longest stall allowed (${d.maxStallMs} ms)`) +
      `; the process was killed${inHandler !== 0n ? ` (attempt ${inHandler} held the loop)` : ''}`;
    let reported = false;
    for (let tries = 0; tries < 5 && !reported; tries++) {
      try {
        const rows = await query(
          'select * from ballast.report_worker_fault($1, $2, $3::bigint[], $4, $5)',
          [d.workerId, 'blocked_worker', blamed.map(String), message, d.quarantineAfter]);
        log(50, { steps: rows }, `blocked worker: ${message}`);
        reported = true;
      } catch (err) {
        log(50, { err: err?.message }, 'could not report the blocked worker; retrying');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    stopped = true;
    process.kill(process.pid, 'SIGKILL');
  };

  const timer = setInterval(() => {
    if (busy || stopped) return;
    busy = true;
    check()
      .catch((err) => log(40, { err: err?.message }, 'watchdog heartbeat failed'))
      .finally(() => (busy = false));
  }, CHECK_MS);
  parentPort?.on('message', (msg) => {
    if (msg !== 'stop') return;
    stopped = true;
    clearInterval(timer);
    const c = client;
    client = undefined;
    void (c ? c.end().catch(() => {}) : Promise.resolve()).then(() => parentPort?.close());
  });
}

if (!isMainThread && workerData?.ballastWatchdog) watch(workerData);
