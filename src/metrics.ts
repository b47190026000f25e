// Prometheus metrics (prom-client), named by Prometheus conventions (ballast_ prefix, base units, _total counters).
// Two kinds:
//  - observed in the worker process as work happens: attempts by outcome and error class, step durations, model
//    calls, their latency, cost and tokens. Each worker exposes its own; Prometheus sums them across workers.
//  - read from Postgres at scrape time: queue depth and age by pipeline, open and raised alerts and budget spend
//    ratios (the same numbers for every process that serves them, so scrape them from one place, e.g. the API
//    server).
// Labels mean the same in every metric: `pipeline` is the pipeline's name (no version: the queue gauges, read from
// Postgres, count a pipeline's steps across versions), `version` its version, `step` the step's name, `error_class`
// the recorded error class or "none".
// One registry per process (ballastMetrics); /metrics serves it. prom-client's default process metrics (memory,
// event loop lag, GC) are included.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { BallastDb } from './db/api.ts';
import { queueStats } from './db/queue-stats.ts';
import { alertGauges } from './db/alerts.ts';

export class BallastMetrics {
  readonly registry = new Registry();
  readonly attempts = new Counter({
    name: 'ballast_attempts_total',
    help: 'Step attempts finished by this process, by pipeline, version, step, outcome (succeeded, failed, retrying, timed_out, released, parked, needs_review, cancelled, lost) and error class ("none" when it succeeded).',
    labelNames: ['pipeline', 'version', 'step', 'outcome', 'error_class'] as const,
    registers: [this.registry],
  });
  readonly stepDuration = new Histogram({
    name: 'ballast_step_duration_seconds',
    help: 'Run time of step attempts in this process, from start to recorded outcome, by pipeline, version, step and outcome.',
    labelNames: ['pipeline', 'version', 'step', 'outcome'] as const,
    buckets: [0.005, 0.025, 0.1, 0.25, 1, 2.5, 10, 30, 60, 300, 1800],
    registers: [this.registry],
  });
  readonly modelCalls = new Counter({
    name: 'ballast_model_calls_total',
    help: 'Provider calls made (or skipped for a cooldown or budget) by model steps, by error class ("none" when usable).',
    labelNames: ['provider', 'model', 'error_class'] as const,
    registers: [this.registry],
  });
  readonly modelLatency = new Histogram({
    name: 'ballast_model_call_duration_seconds',
    help: 'Latency of provider calls, first byte sent to last byte received.',
    labelNames: ['provider', 'model'] as const,
    buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80],
    registers: [this.registry],
  });
  readonly modelCost = new Counter({
    name: 'ballast_model_cost_usd_total',
    help: 'Cost of provider calls in USD, at the price in force when each call started.',
    labelNames: ['provider', 'model'] as const,
    registers: [this.registry],
  });
  readonly modelTokens = new Counter({
    name: 'ballast_model_tokens_total',
    help: 'Tokens of provider calls, by direction (input, output, cached_input).',
    labelNames: ['provider', 'model', 'direction'] as const,
    registers: [this.registry],
  });
  readonly modelReused = new Counter({
    name: 'ballast_model_calls_reused_total',
    help: 'Provider calls not made because a stored answer to the same request was reused (paid once), by kind (retry, replay, cache).',
    labelNames: ['provider', 'model', 'kind'] as const,
    registers: [this.registry],
  });
  readonly modelCostSaved = new Counter({
    name: 'ballast_model_cost_saved_usd_total',
    help: 'What the reused answers cost when they were bought, in USD: spent once, not again (paid once), by kind (retry, replay, cache).',
    labelNames: ['provider', 'model', 'kind'] as const,
    registers: [this.registry],
  });
  readonly scheduleSlots = new Counter({
    name: 'ballast_schedule_slots_total',
    help: 'Slots of cron schedules handled by this process\'s scheduler, by schedule and outcome (fired: a job submitted or found; skipped: missed and not fired; failed: its submission was refused, see ballast.schedules.last_error).',
    labelNames: ['schedule', 'outcome'] as const,
    registers: [this.registry],
  });
  #db: BallastDb | undefined;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'ballast_' });
    // One query serves both gauges: both collect() calls of a scrape run together and share its result.
    let pending: Promise<Awaited<ReturnType<typeof queueStats>>> | undefined;
    const stats = () => {
      pending ??= queueStats(this.#db!).finally(() => setTimeout(() => { pending = undefined; }, 0));
      return pending;
    };
    const metrics = this;
    new Gauge({
      name: 'ballast_queue_depth',
      help: 'Unfinished steps by pipeline and status (queued, retrying, running, waiting, needs_review), read from Postgres at scrape time.',
      labelNames: ['pipeline', 'status'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        if (!metrics.#db) return;
        for (const r of (await stats()).depth) this.set({ pipeline: r.pipeline, status: r.status }, r.steps);
      },
    });
    new Gauge({
      name: 'ballast_queue_oldest_age_seconds',
      help: 'Age of the oldest runnable step (queued, or retrying and due) by pipeline, read from Postgres at scrape time.',
      labelNames: ['pipeline'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        if (!metrics.#db) return;
        for (const r of (await stats()).age) this.set({ pipeline: r.pipeline }, r.oldestSeconds);
      },
    });
    this.#alertGauges();
  }

  /** The alert gauges (migration 0045, docs/quality-alerts.md): one read of src/db/alerts.ts per scrape, shared by the three. */
  #alertGauges(): void {
    let pending: Promise<Awaited<ReturnType<typeof alertGauges>>> | undefined;
    const read = () => {
      pending ??= alertGauges(this.#db!.pool).finally(() => setTimeout(() => { pending = undefined; }, 0));
      return pending;
    };
    const metrics = this;
    new Gauge({
      name: 'ballast_alerts_open',
      help: 'Open alerts (ballast.alerts, resolved_at null) by kind (drift, budget) and rule, read from Postgres at scrape time.',
      labelNames: ['kind', 'rule'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        if (!metrics.#db) return;
        for (const r of (await read()).open) this.set({ kind: r.kind, rule: r.rule }, r.alerts);
      },
    });
    new Gauge({
      name: 'ballast_alerts_raised',
      help: 'Alerts raised so far (rows of ballast.alerts) by kind, read from Postgres at scrape time; grows by one per alert raised.',
      labelNames: ['kind'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        if (!metrics.#db) return;
        for (const r of (await read()).raised) this.set({ kind: r.kind }, r.alerts);
      },
    });
    new Gauge({
      name: 'ballast_budget_spend_ratio',
      help: 'Spend in the current period over the limit, per budget alert rule and scope value with spend ([tenant/]user for an end user), as of the last alert check (every 30 s), read from Postgres at scrape time.',
      labelNames: ['rule', 'scope', 'scope_value'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        if (!metrics.#db) return;
        for (const r of (await read()).spend) this.set({ rule: r.rule, scope: r.scope, scope_value: r.scopeValue }, r.ratio);
      },
    });
  }

  /** The database the queue gauges read; without one they stay empty. */
  useDatabase(db: BallastDb): void {
    this.#db = db;
  }

  /** Serves GET /metrics (text exposition format); anything else is 404. */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the metrics are at GET /metrics\n');
      return;
    }
    try {
      const body = await this.registry.metrics();
      res.writeHead(200, { 'content-type': this.registry.contentType }).end(body);
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics unavailable: ${(err as Error).message}\n`);
    }
  }
}

/** This process's metrics. */
export const ballastMetrics = new BallastMetrics();

/** Serves /metrics on its own port (e.g. a worker without the API): BALLAST_METRICS_PORT. */
export async function startMetricsServer(options: { port: number; host?: string; db?: BallastDb }): Promise<{ url: string; close(): Promise<void> }> {
  if (options.db) ballastMetrics.useDatabase(options.db);
  const server: Server = createServer((req, res) => void ballastMetrics.handle(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // Loopback unless told otherwise (BALLAST_METRICS_HOST); the URL logged is the address actually bound.
    server.listen(options.port, options.host ?? '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${options.host ?? '127.0.0.1'}:${port}/metrics`,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
