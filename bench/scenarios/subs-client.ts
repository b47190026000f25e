// The load client of the subscriptions scenario (bench/scenarios/subscriptions.ts), a child process of its own driven
// by bench/children.ts over IPC: `clients` graphql-ws connections (`ws`), each with one tenantEvents subscription of
// one tenant, plus `reconnectClients` more that leave mid-run and resubscribe with `after`, and an HTTP probe of the
// API while they receive (a worker thread: bench/scenarios/subs-probe.ts). Per client it keeps the eventIds received
// (and, for the steady clients, each message's latency) in growable Float64Arrays, and computes every figure itself
// at the end, so only the summary crosses IPC.
//
// Latency of a message = when this process received it (the graphql-ws `next` callback, wall clock with sub-ms
// precision: performance.timeOrigin + performance.now()) minus the event's `at`: the database's clock_timestamp() when
// the event row was written (ballast.now()), read on the same machine, so both are one clock (CLOCK_REALTIME). That
// was chosen over stamping submit times here because it covers every event (the worker's step events as well as the
// submissions) and needs no bookkeeping between processes; it includes the rest of the writing transaction (its
// commit), which a subscriber waits for anyway. A remote Postgres would need its clock in sync with this machine's.
// A message a steady client never received counts in the percentiles with its latency so far (when the wait for
// the last messages ended minus its `at`): a lower bound, so that a server that falls behind by more than the wait
// does not get a better p99 by never delivering (subs_missing counts those messages too).
// A client that leaves stops processing: what its closing connection still brings is ignored.
//
// BENCH_WORKER (JSON): { wsUrl, httpUrl, healthUrl, token, tenant, clients, reconnectClients, batch }
// Messages (parent -> child, then the reply):
//   { type: 'connect' }                          connects every client, `batch` at a time, each subscribing with
//                                                after: null -> { type: 'connected', clients, failed, ms }
//   { type: 'warm', timeoutMs }                  counts the clients that receive any event from now on (the parent
//                                                submits warm-up jobs meanwhile) -> { type: 'warmed', seen, total, ms }
//                                                once every connected client did, or at the timeout
//   { type: 'load', afterJobId, durationMs }     from now on records the events of jobs above afterJobId, starts the
//                                                probe, and has each reconnect client leave once during the load
//                                                -> { type: 'loading' }
//   { type: 'expect', ids, atMs, dbOrder, timeoutMs }
//                                                the events the database holds for those jobs (ids in id order, atMs
//                                                their `at` in epoch ms; dbOrder: the ids in (txid, id) order when the
//                                                schema records the writing transaction, else null);
//                                                waits until every client has that many or timeoutMs passed, stops
//                                                the probe -> { type: 'result', figures, details }
//   { type: 'close' }                            disconnects every client -> { type: 'closed' }
//   { type: 'stop' }                             -> { type: 'stopped', peakRssMb, rssMb }, exit 0
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import WebSocket from 'ws';
import { createClient, type Client } from 'graphql-ws';

interface Spec {
  wsUrl: string;
  httpUrl: string;
  healthUrl: string;
  token: string;
  tenant: string;
  clients: number;
  reconnectClients: number;
  batch: number;
}

if (!process.send) throw new Error('bench subscriptions client: run me through bench/children.ts (IPC)');
const spec = JSON.parse(process.env.BENCH_WORKER ?? '{}') as Spec;
const send = (msg: Record<string, unknown>) => process.send!(msg);

const QUERY = `subscription ($t: String, $after: BigInt) {
  tenantEvents(tenantId: $t, after: $after) { type eventId jobId stepId stepName status at } }`;
/** How long a reconnect client stays away before it resubscribes with `after`. */
const AWAY_MS = 500;

interface Message {
  type: string;
  eventId: string | null;
  jobId: string;
  at: string | null;
}

/** A growable array of doubles: the backing store lives outside V8's heap, so the collector neither copies nor scans it. */
class Series {
  data = new Float64Array(256);
  length = 0;
  push(x: number): void {
    if (this.length === this.data.length) {
      const grown = new Float64Array(this.data.length * 2);
      grown.set(this.data);
      this.data = grown;
    }
    this.data[this.length++] = x;
  }
  values(): Float64Array {
    return this.data.subarray(0, this.length);
  }
}

interface Sub {
  index: number;
  reconnect: boolean;
  client: Client | undefined;
  /** The current connection; `leaving` once this process closes it on purpose (its errors are not the server's). */
  session: { leaving: boolean };
  connected: boolean;
  /** A connection is being opened (not acknowledged yet, not failed yet). */
  opening: boolean;
  /** The last eventId received (of any job): what a reconnect client resubscribes `after`. */
  lastEventId: string | null;
  warm: boolean;
  reconnected: boolean;
  /** eventIds of the measured jobs, in arrival order (duplicates kept). */
  ids: Series;
  /** Latency of each of those messages, ms (steady clients only). */
  lat: Series;
  errors: number;
}

const now = () => performance.timeOrigin + performance.now();
const subs: Sub[] = Array.from({ length: spec.clients + spec.reconnectClients }, (_, index) => ({
  index, reconnect: index >= spec.clients, client: undefined, session: { leaving: false }, connected: false, opening: false, lastEventId: null,
  warm: false, reconnected: false, ids: new Series(), lat: new Series(), errors: 0,
}));
const steady = subs.filter((s) => !s.reconnect);
const movers = subs.filter((s) => s.reconnect);

let warming = false;
let warmSeen = 0;
let afterJobId: number | null = null;
let firstRecv = NaN;
let lastRecv = NaN;
let expected: number | null = null;
let wake: (() => void) | undefined;
const errorSamples: string[] = [];
let unexpectedCloses = 0;
let outOfBand = 0;

/**
 * The event's `at` in epoch ms with its microseconds (Date.parse keeps milliseconds only). ISO 8601 as GraphQL's
 * Datetime sends it; Postgres's text form ("2026-12-07 12:38:13.123456+00") is accepted too.
 */
function atMs(at: string): number {
  let iso = at.trim().replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00');
  const frac = /\.(\d+)/.exec(iso);
  if (frac) iso = iso.replace(/\.\d+/, '');
  return Date.parse(iso) + (frac ? Number(`0.${frac[1]}`) * 1000 : 0);
}
let unparsedAt = 0;

function noteError(sub: Sub, what: string): void {
  sub.errors++;
  if (errorSamples.length < 10) errorSamples.push(`client ${sub.index}: ${what}`.slice(0, 300));
}

function describe(err: unknown): string {
  if (Array.isArray(err)) return err.map((e: { message?: string; extensions?: { code?: string } }) => `${e.extensions?.code ?? ''} ${e.message ?? ''}`).join('; ');
  if (err && typeof err === 'object' && 'code' in err) return `closed ${(err as { code: number }).code} ${(err as { reason?: string }).reason ?? ''}`;
  return err instanceof Error ? err.message : String(err);
}

function onMessage(sub: Sub, session: { leaving: boolean }, m: Message): void {
  if (session.leaving) return;
  const t = now();
  if (m.eventId !== null) sub.lastEventId = m.eventId;
  if (warming && !sub.warm) {
    sub.warm = true;
    warmSeen++;
    if (warmSeen >= subs.filter((s) => s.connected).length) wake?.();
  }
  if (afterJobId === null || Number(m.jobId) <= afterJobId) return;
  if (m.eventId === null) {
    outOfBand++;
    return;
  }
  sub.ids.push(Number(m.eventId));
  if (!sub.reconnect) {
    const at = m.at === null ? NaN : atMs(m.at);
    if (Number.isFinite(at)) sub.lat.push(t - at);
    else unparsedAt++;
  }
  if (!(firstRecv <= t)) firstRecv = t;
  lastRecv = t;
  if (expected !== null && sub.ids.length >= expected) wake?.();
}

/** Opens the client's connection and subscription; resolves with whether the connection was acknowledged. */
function open(sub: Sub, after: string | null, timeoutMs: number): Promise<boolean> {
  // This connection's own state: a closed session's late callbacks do not touch the next one's.
  const session = { leaving: false };
  sub.session = session;
  sub.opening = true;
  return new Promise((resolve) => {
    let settled = false;
    const settle = (ok: boolean) => {
      if (settled) return;
      settled = true;
      if (sub.session === session) sub.opening = false;
      clearTimeout(timer);
      resolve(ok);
    };
    const timer = setTimeout(() => settle(false), timeoutMs);
    const client = createClient({
      url: spec.wsUrl,
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${spec.token}` },
      retryAttempts: 0,
      lazy: true,
      on: {
        connected: () => {
          if (sub.session === session) sub.connected = true;
          settle(true);
        },
        closed: (e) => {
          if (!session.leaving && sub.session === session && sub.connected) {
            unexpectedCloses++;
            noteError(sub, `connection ${describe(e)}`);
          }
          if (sub.session === session) sub.connected = false;
          settle(false);
        },
      },
    });
    sub.client = client;
    client.subscribe<{ tenantEvents: Message }>({ query: QUERY, variables: { t: spec.tenant, after } }, {
      next: (value) => {
        if (value.errors?.length) noteError(sub, describe(value.errors));
        if (value.data?.tenantEvents) onMessage(sub, session, value.data.tenantEvents);
      },
      error: (err) => {
        if (!session.leaving) noteError(sub, `subscription ended: ${describe(err)}`);
        settle(false);
      },
      complete: () => {
        if (!session.leaving) noteError(sub, 'subscription completed by the server');
      },
    });
  });
}

/** Closes the client's connection on purpose (leaving mid-run, or the end of the run). */
function leave(sub: Sub): Promise<void> | void {
  sub.session.leaving = true;
  sub.connected = false;
  const client = sub.client;
  sub.client = undefined;
  return client?.dispose();
}

async function connectAll(): Promise<{ failed: number; ms: number }> {
  const t0 = performance.now();
  let failed = 0;
  for (let i = 0; i < subs.length; i += spec.batch) {
    const ok = await Promise.all(subs.slice(i, i + spec.batch).map((s) => open(s, null, 15_000)));
    failed += ok.filter((x) => !x).length;
    if (!ok.some(Boolean)) {
      // Not one of a batch got through: the rest would not either (counted as failed, not tried).
      failed += Math.max(0, subs.length - i - spec.batch);
      break;
    }
  }
  return { failed, ms: performance.now() - t0 };
}

/** Waits until `done()` holds, re-checked whenever a message may have changed it, or until timeoutMs. */
async function until(done: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!done() && performance.now() < deadline) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, Math.min(250, Math.max(0, deadline - performance.now())));
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    wake = undefined;
  }
}

// The HTTP probe runs in a worker thread (bench/scenarios/subs-probe.ts): its own event loop.
let prober: Worker | undefined;
let probe: { graphql: number[]; health: number[]; timeouts: number; errors: number } = { graphql: [], health: [], timeouts: 0, errors: 0 };

function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1]!;
}
const sortedOf = (xs: number[]) => Float64Array.from(xs).sort();

/** Each id once, in first-arrival order. */
function firstArrivals(ids: Float64Array): number[] {
  const seen = new Set<number>();
  const out: number[] = [];
  for (const id of ids) if (!seen.has(id)) (seen.add(id), out.push(id));
  return out;
}

/**
 * Events of `seq` (first arrivals) delivered after one that comes later in the reference order: each event whose
 * rank is below the highest rank seen before it counts once. Events the reference lacks are skipped.
 */
function outOfOrder(seq: number[], rank: Map<number, number>): number {
  let max = -1;
  let n = 0;
  for (const id of seq) {
    const r = rank.get(id);
    if (r === undefined) continue;
    if (r < max) n++;
    else max = r;
  }
  return n;
}

const rankOf = (order: number[]) => new Map(order.map((id, i) => [id, i]));

/** Missing, duplicated and unexpected events of one client against the expected set. */
function tally(sub: Sub, expectedSet: Set<number>): { missing: number; duplicated: number; unexpected: number; seq: number[] } {
  const seq = firstArrivals(sub.ids.values());
  let unexpected = 0;
  for (const id of seq) if (!expectedSet.has(id)) unexpected++;
  return { missing: expectedSet.size - (seq.length - unexpected), duplicated: sub.ids.length - seq.length, unexpected, seq };
}

function analyse(ids: number[], atMs: number[], dbOrder: number[] | null, endMs: number): { figures: Record<string, number>; details: Record<string, unknown> } {
  const expectedSet = new Set(ids);
  // Latencies: every client's series, and those of the messages never received (lower bounds).
  const parts: Float64Array[] = [];
  const neverReceived: number[] = [];
  let messages = 0;
  let missing = 0;
  let duplicated = 0;
  let unexpected = 0;
  let incomplete = 0;
  const seqs: number[][] = [];
  let firstIncomplete: Record<string, number> | null = null;
  for (const s of steady) {
    const t = tally(s, expectedSet);
    missing += t.missing;
    duplicated += t.duplicated;
    unexpected += t.unexpected;
    messages += s.ids.length;
    parts.push(s.lat.values());
    if (t.missing > 0) {
      incomplete++;
      firstIncomplete ??= { client: s.index, missing: t.missing, received: t.seq.length, connected: Number(s.connected) };
      // Never received: in the percentiles with the latency reached when the wait ended (a lower bound).
      const got = new Set(t.seq);
      ids.forEach((id, k) => {
        if (!got.has(id)) neverReceived.push(endMs - atMs[k]!);
      });
    }
    seqs.push(t.seq);
  }
  // One order for everyone: each client against client 0's, and client 0's against the database's (txid, id) order
  // when the database has one.
  const ref0 = seqs[0] ?? [];
  const rank0 = rankOf(ref0);
  let ooo = 0;
  let differing = 0;
  for (let i = 1; i < seqs.length; i++) {
    const n = outOfOrder(seqs[i]!, rank0);
    ooo += n;
    // n > 0 exactly when the events both received came in another order (a shorter sequence alone is not counted).
    if (n > 0) differing++;
  }
  const client0VsDb = dbOrder ? outOfOrder(ref0, rankOf(dbOrder)) : NaN;
  if (dbOrder) ooo += client0VsDb;
  // Reconnect clients: their whole sequence (before and after leaving) against the database's order, or client 0's.
  const refRank = dbOrder ? rankOf(dbOrder) : rank0;
  let rMissing = 0;
  let rDuplicated = 0;
  let rOoo = 0;
  let rUnexpected = 0;
  for (const s of movers) {
    const t = tally(s, expectedSet);
    rMissing += t.missing;
    rDuplicated += t.duplicated;
    rUnexpected += t.unexpected;
    rOoo += outOfOrder(t.seq, refRank);
  }
  const lat = new Float64Array(parts.reduce((a, p) => a + p.length, 0) + neverReceived.length);
  let at = 0;
  for (const p of parts) (lat.set(p, at), (at += p.length));
  lat.set(neverReceived, at);
  lat.sort();
  const probes = sortedOf([...probe.graphql, ...probe.health]);
  const spanS = (lastRecv - firstRecv) / 1000;
  return {
    figures: {
      subs_1000_p50_ms: percentile(lat, 50),
      subs_1000_p99_ms: percentile(lat, 99),
      subs_max_ms: lat.length ? lat[lat.length - 1]! : NaN,
      subs_messages: messages,
      subs_msgs_per_s: spanS > 0 ? messages / spanS : NaN,
      subs_missing: missing,
      subs_duplicated: duplicated,
      subs_out_of_order: ooo,
      subs_unexpected: unexpected,
      subs_clients_incomplete: incomplete,
      subs_clients_differing: differing,
      subs_client0_vs_db_out_of_order: client0VsDb,
      subs_reconnect_missing: rMissing,
      subs_reconnect_duplicated: rDuplicated,
      subs_reconnect_out_of_order: rOoo,
      subs_reconnect_unexpected: rUnexpected,
      subs_reconnects: movers.filter((s) => s.reconnected).length,
      subs_errors: subs.reduce((a, s) => a + s.errors, 0),
      subs_unexpected_closes: unexpectedCloses,
      subs_http_p99_ms: percentile(probes, 99),
      subs_http_p50_ms: percentile(probes, 50),
      subs_http_graphql_p99_ms: percentile(sortedOf(probe.graphql), 99),
      subs_health_p99_ms: percentile(sortedOf(probe.health), 99),
      subs_http_samples: probes.length,
      subs_http_timeouts: probe.timeouts,
      subs_http_errors: probe.errors,
    },
    details: {
      errors: errorSamples,
      progress_messages_of_measured_jobs: outOfBand,
      messages_without_a_readable_at: unparsedAt,
      client_gc_by_kind: gc.byKind,
      first_incomplete_client: firstIncomplete,
    },
  };
}

function memoryMb(): { peakRssMb: number; rssMb: number } {
  const status = readFileSync('/proc/self/status', 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { peakRssMb: kb('VmHWM') / 1024, rssMb: kb('VmRSS') / 1024 };
}

// How busy this process was, to judge the latencies by: its CPU, its event loop's delay, its garbage collections.
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
const gc = { ms: 0, maxMs: 0, on: false, byKind: {} as Record<string, { n: number; ms: number; maxMs: number }> };
new PerformanceObserver((list) => {
  if (!gc.on) return;
  for (const e of list.getEntries()) {
    gc.ms += e.duration;
    gc.maxMs = Math.max(gc.maxMs, e.duration);
    const kind = String((e as { detail?: { kind?: number } }).detail?.kind ?? '?');
    const k = (gc.byKind[kind] ??= { n: 0, ms: 0, maxMs: 0 });
    k.n++;
    k.ms += e.duration;
    k.maxMs = Math.max(k.maxMs, e.duration);
  }
}).observe({ entryTypes: ['gc'] });
let cpuFrom: NodeJS.CpuUsage | undefined;
let wallFrom = 0;

async function handle(msg: Record<string, unknown>): Promise<void> {
  switch (msg.type) {
    case 'connect': {
      const { failed, ms } = await connectAll();
      send({ type: 'connected', clients: subs.length, failed, ms });
      break;
    }
    case 'warm': {
      const t0 = performance.now();
      warming = true;
      await until(() => warmSeen >= subs.filter((s) => s.connected).length, Number(msg.timeoutMs));
      warming = false;
      send({ type: 'warmed', seen: warmSeen, total: subs.length, ms: performance.now() - t0 });
      break;
    }
    case 'load': {
      afterJobId = Number(msg.afterJobId);
      const durationMs = Number(msg.durationMs);
      cpuFrom = process.cpuUsage();
      wallFrom = performance.now();
      loopDelay.enable();
      gc.on = true;
      prober = new Worker(new URL('./subs-probe.ts', import.meta.url), {
        workerData: { httpUrl: spec.httpUrl, healthUrl: spec.healthUrl, token: spec.token },
      });
      prober.postMessage('start');
      // Each reconnect client leaves once, spread over the middle half of the load, and comes back AWAY_MS later
      // with after: the last eventId it received.
      movers.forEach((s, k) => {
        const at = durationMs * (0.25 + (0.5 * k) / Math.max(1, movers.length));
        setTimeout(() => {
          void leave(s);
          setTimeout(() => {
            void open(s, s.lastEventId, 30_000).then((ok) => {
              s.reconnected = ok;
              if (!ok) noteError(s, 'reconnect failed');
            });
          }, AWAY_MS);
        }, at);
      });
      send({ type: 'loading' });
      break;
    }
    case 'expect': {
      const ids = msg.ids as number[];
      const atMs = msg.atMs as number[];
      const dbOrder = (msg.dbOrder as number[] | null) ?? null;
      expected = ids.length;
      const t0 = performance.now();
      // Every client that is connected or connecting has them all (one that lost its connection, or could not
      // reconnect, receives nothing more).
      await until(() => subs.every((s) => s.ids.length >= ids.length || (!s.connected && !s.opening)), Number(msg.timeoutMs));
      const waitedMs = performance.now() - t0;
      const endMs = now();
      // A moment for stragglers (a duplicate, a late event) before counting.
      await new Promise((r) => setTimeout(r, 500));
      if (prober) {
        const answer = new Promise<typeof probe>((resolve) => prober!.once('message', resolve));
        prober.postMessage('stop');
        probe = await answer;
        await prober.terminate();
      }
      loopDelay.disable();
      gc.on = false;
      const cpu = process.cpuUsage(cpuFrom);
      const wallS = (performance.now() - wallFrom) / 1000;
      const { figures, details } = analyse(ids, atMs, dbOrder, endMs);
      send({
        type: 'result',
        figures: {
          ...figures,
          subs_drain_s: waitedMs / 1000,
          subs_client_cpu_cores: (cpu.user + cpu.system) / 1e6 / wallS,
          subs_client_loop_delay_p99_ms: loopDelay.percentile(99) / 1e6,
          subs_client_gc_s: gc.ms / 1000,
          subs_client_gc_max_ms: gc.maxMs,
          subs_client_rss_mb: memoryMb().peakRssMb,
        },
        details,
      });
      break;
    }
    case 'close': {
      await Promise.allSettled(subs.map((s) => leave(s)));
      send({ type: 'closed' });
      break;
    }
    case 'stop':
      process.send!({ type: 'stopped', ...memoryMb() }, () => process.exit(0));
      break;
  }
}

process.on('message', (msg: Record<string, unknown>) => {
  handle(msg).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
});
send({ type: 'ready', workerId: 'subs-client', pid: process.pid, readyRssMb: memoryMb().rssMb });
