// A worker's lifeline to Postgres: one dedicated connection that holds the worker's session advisory lock
// (ballast.worker_lock) for as long as the process lives, and LISTENs on ballast_cancel. If the process dies, the
// server drops the connection and the lock with it, which is how other workers' reapers notice within seconds.
// If only the connection drops (server restart, network), this reconnects with backoff, takes the lock again and
// listens again; cancellations missed meanwhile reach the worker through its heartbeat.
// The backoff starts short (50 ms, doubling to at most 2 s): after a Postgres restart every worker's lock is gone,
// and the reaper trusts a missing lock again 20 s after the server started (migrations/0006_execution.sql, restart_grace), so the
// lock must be back well before that. A refused connection costs the server nothing, so retrying every 2 s is cheap.
import pg from 'pg';
import type { Logger } from 'pino';
import { CHANNELS, parseCancelNotice, type CancelNotice } from '../db/event-notifications.ts';

/** First reconnect delay after the liveness connection dropped, and the most it doubles to. */
const RETRY_FIRST_MS = 50;
const RETRY_MAX_MS = 2000;

export type { CancelNotice };

export interface LivenessOptions {
  connectionString: string;
  workerId: string;
  log: Logger;
  onCancel: (notice: CancelNotice) => void;
}

export class Liveness {
  private readonly options: LivenessOptions;
  private client: pg.Client | undefined;
  private stopped = false;
  private retryMs = RETRY_FIRST_MS;
  private timer: NodeJS.Timeout | undefined;

  constructor(options: LivenessOptions) {
    this.options = options;
  }

  /** Connects, takes the lock and listens; resolves once all three are done (throws if the first try fails). */
  async start(): Promise<void> {
    await this.connect();
  }

  private async connect(): Promise<void> {
    const { connectionString, workerId, log } = this.options;
    // A connection attempt that hangs (a server half up) must not stall the retries.
    const client = new pg.Client({
      connectionString, application_name: `ballast-liveness ${workerId}`, connectionTimeoutMillis: 10_000, keepAlive: true,
    });
    client.on('error', (err) => {
      if (!this.stopped) log.warn({ err: err.message }, 'liveness connection failed; reconnecting');
    });
    client.on('end', () => {
      // Only an established lifeline is re-established; a failed attempt is retried by whoever made it.
      if (this.client !== client) return;
      this.client = undefined;
      if (!this.stopped) this.scheduleReconnect();
    });
    client.on('notification', (msg) => {
      if (msg.channel !== CHANNELS.cancel) return;
      const notice = parseCancelNotice(msg.payload);
      if (!notice) {
        log.warn({ payload: msg.payload?.slice(0, 200) }, 'unreadable ballast_cancel notification');
        return;
      }
      try {
        this.options.onCancel(notice);
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'could not act on a ballast_cancel notification');
      }
    });
    await client.connect();
    const { rows } = await client.query<{ ok: boolean }>(
      'select pg_try_advisory_lock(l.namespace, l.key) as ok from ballast.worker_lock($1) l', [workerId]);
    if (!rows[0]?.ok) {
      // Another live session holds it: a second process with the same worker id, or (after a reconnect) our old
      // session that the server has not closed yet. Never wait for it: that would hang start-up.
      await client.end().catch(() => {});
      throw new Error(`worker id ${workerId} is held by another live database session: give each worker process its own id`);
    }
    await client.query(`listen ${CHANNELS.cancel}`);
    this.client = client;
    this.retryMs = RETRY_FIRST_MS;
  }

  private scheduleReconnect(): void {
    if (this.timer || this.stopped) return;
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.connect().then(
        () => this.options.log.info('liveness connection restored'),
        (err) => {
          this.options.log.warn({ err: (err as Error).message, retry_ms: this.retryMs }, 'liveness reconnect failed');
          this.scheduleReconnect();
        },
      );
    }, delay);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => {});
  }
}
