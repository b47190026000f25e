// The audit events as one ordered stream, read from Postgres by position (migrations/0004_state_machines.sql): every consumer of live
// events (the GraphQL hub, `ballast watch`, the start demo) reads them here, in the order a resume returns them.
//
// Order: (tx, id), tx being the writing transaction. An event is handed out only once it is *final*: its tx is below
// the watermark pg_snapshot_xmin(pg_current_snapshot()) of the read, so every transaction that could still add an
// event before it has ended. The stream keeps the position (tx, id) of the last event it handed out and reads what
// follows it; nothing is skipped or repeated, whatever order transactions commit in.
//
// NOTIFY ballast_events (0004_state_machines) is only a hint that something changed: any payload starts a read (a forged one costs a
// read, nothing else), and the read decides what happened. At most one read runs at a time; notifications that arrive
// meanwhile cause one more. When a read saw committed events above the watermark (held back by an older writing
// transaction that has not ended), the stream reads again after a short, growing delay, since the transaction that
// holds them may end without notifying. Progress reports ({"progress":{job_id, step_id}}) are not stored as events:
// they are read in the same round trip (the step's current progress) and handed out unordered, without a position.
//
// When the connection drops, the stream reconnects with backoff and reads on from its position: consumers miss
// nothing, they only wait.
import pg from 'pg';
import type { Logger } from 'pino';
import { CHANNELS, parseAnnouncement } from './event-notifications.ts';

export const CHANNEL = CHANNELS.events;

/** A position in the event order: the writing transaction and the event id. */
export interface Position {
  tx: bigint;
  id: number;
}

/** True when `e` comes after position `p` in the event order. */
export const isAfter = (e: Position, p: Position): boolean => e.tx > p.tx || (e.tx === p.tx && e.id > p.id);

/** An event as consumers receive it. Progress reports have no id, no tx and type step_progress. */
export interface StreamEvent {
  id: number | null;
  tx: bigint | null;
  job_id: number;
  step_id: number | null;
  type: string;
  status: string | null;
  tenant_id: string | null;
  step_name: string | null;
  at: string | null;
  /** step_progress only: the step's progress when the report was read. */
  progress?: unknown;
}

interface RawEvent extends Omit<StreamEvent, 'tx'> {
  tx: string;
}

/** Events read per round trip; a longer backlog takes several. */
export const READ_LIMIT = 5000;

// One statement, so one snapshot for the watermark, the events below it and the check for held-back ones. The
// events come from ballast_private.events (tx is not in the view; the table has the view's row-level security) and
// the public views, under the connection's role. Uses events_tx_idx (tx, id) from the position.
const READ_SQL = `
  with w as (select pg_snapshot_xmin(pg_current_snapshot()) as mark)
  select w.mark::text as watermark,
         (select coalesce(json_agg(r.ev order by r.tx, r.id), '[]')
            from (select e.tx, e.id,
                         json_build_object('id', e.id, 'tx', e.tx::text, 'job_id', e.job_id, 'step_id', e.step_id,
                           'type', e.type, 'status', e.status, 'tenant_id', j.tenant_id, 'step_name', s.name,
                           'at', e.at) as ev
                    from ballast_private.events e
                    join ballast.jobs j on j.id = e.job_id
                    left join ballast.steps s on s.id = e.step_id
                   where (e.tx, e.id) > ($1::xid8, $2::bigint) and e.tx < w.mark
                   order by e.tx, e.id
                   limit $3) r) as events,
         exists (select 1 from ballast_private.events e where e.tx >= w.mark and (e.tx, e.id) > ($1::xid8, $2::bigint)) as held,
         (select coalesce(json_agg(json_build_object('id', null, 'tx', null, 'job_id', s.job_id, 'step_id', s.id,
                   'type', 'step_progress', 'status', 'running', 'tenant_id', j.tenant_id, 'step_name', s.name,
                   'at', null, 'progress', s.progress) order by s.id), '[]')
            from ballast.steps s join ballast.jobs j on j.id = s.job_id
           where s.id = any($4::bigint[])) as progress
    from w`;

const POSITION_SQL = `select pg_snapshot_xmin(pg_current_snapshot())::text as watermark`;

export interface EventStreamOptions {
  connectionString: string;
  applicationName?: string;
  /** Where to start; default: the watermark when the stream starts (what is final by then is the past). */
  from?: Position;
  /** Final events in order (never empty), then the progress reports read in the same round trip. */
  onEvents(events: StreamEvent[], progress: StreamEvent[]): void;
  /** The connection dropped (reconnecting) or came back. */
  onConnection?(connected: boolean, err?: Error): void;
  log?: Logger;
}

export class EventStream {
  private client: pg.Client | undefined;
  private readonly o: EventStreamOptions;
  private pos: Position = { tx: 0n, id: 0 };
  private mark = 0n;
  private reading: Promise<void> | undefined;
  private again = false;
  private readonly progressSteps = new Set<number>();
  private heldTimer: NodeJS.Timeout | undefined;
  private heldDelay = 0;
  private heldSince: number | null = null;
  private heldWarned = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private stopped = false;

  constructor(o: EventStreamOptions) {
    this.o = o;
  }

  /** The position of the last event handed out: a consumer that starts following now is owed what comes after it. */
  get position(): Position {
    return this.pos;
  }

  /** True while the LISTEN connection is up. */
  get connected(): boolean {
    return this.client !== undefined;
  }

  /** How long committed events have waited behind an older transaction still in progress (0 when none do). */
  get heldMs(): number {
    return this.heldSince === null ? 0 : Date.now() - this.heldSince;
  }

  /** Connects, LISTENs and takes its starting position; resolves once notifications flow. */
  async start(): Promise<void> {
    await this.connect();
    if (this.o.from) {
      this.pos = this.o.from;
    } else {
      const { rows } = await this.client!.query<{ watermark: string }>(POSITION_SQL);
      this.pos = { tx: BigInt(rows[0]!.watermark), id: 0 };
    }
    // Events that became final between LISTEN and now.
    this.read();
  }

  /** Reads now (tests; and after a notification). */
  read(): void {
    if (this.stopped || !this.client) return;
    if (this.reading) {
      this.again = true;
      return;
    }
    this.reading = this.readLoop().finally(() => (this.reading = undefined));
  }

  /** Resolves once no read is running or due (tests). */
  async idle(): Promise<void> {
    while (this.reading) await this.reading;
  }

  private async connect(): Promise<void> {
    // TCP keepalive: a connection that died without a FIN (a cut network) is noticed instead of waited on forever.
    const client = new pg.Client({ connectionString: this.o.connectionString, application_name: this.o.applicationName ?? 'ballast-listen', keepAlive: true });
    client.on('notification', (msg) => {
      if (msg.channel !== CHANNEL) return;
      const a = parseAnnouncement(msg.payload);
      if (a?.kind === 'progress') this.progressSteps.add(a.stepId);
      this.read();
    });
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    try {
      await client.connect();
      await client.query(`listen ${CHANNEL}`);
    } catch (err) {
      client.end().catch(() => {});
      throw err;
    }
    if (this.stopped) {
      await client.end().catch(() => {});
      return;
    }
    this.client = client;
    this.attempt = 0;
  }

  private lost(client: pg.Client, err: Error): void {
    if (client !== this.client || this.stopped) return;
    this.client = undefined;
    client.end().catch(() => {});
    this.o.log?.warn({ err: err.message }, 'LISTEN connection for live events lost; reconnecting (live events wait, none is lost)');
    this.o.onConnection?.(false, err);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped) return;
    const delay = Math.min(100 * 2 ** this.attempt++, 5_000);
    this.reconnectTimer = setTimeout(() => {
      this.connect().then(() => {
        this.o.onConnection?.(true);
        this.read();
      }, (err: Error) => {
        this.o.log?.warn({ err: err.message, delay }, 'LISTEN reconnect failed');
        this.scheduleReconnect();
      });
    }, delay);
  }

  private async readLoop(): Promise<void> {
    do {
      this.again = false;
      const client = this.client;
      if (!client || this.stopped) return;
      const steps = [...this.progressSteps];
      this.progressSteps.clear();
      let row: { watermark: string; events: RawEvent[]; held: boolean; progress: RawEvent[] };
      try {
        const result = await client.query<typeof row>(READ_SQL, [this.pos.tx.toString(), this.pos.id, READ_LIMIT, steps]);
        row = result.rows[0]!;
      } catch (err) {
        // The connection is probably gone ('error'/'end' reconnect); the position did not move, nothing is lost.
        for (const s of steps) this.progressSteps.add(s);
        if (client === this.client) this.o.log?.warn({ err: (err as Error).message }, 'reading live events failed; retrying');
        if (client === this.client) this.scheduleHeld();
        return;
      }
      if (this.stopped) return;
      this.mark = BigInt(row.watermark);
      const events = row.events.map((e) => ({ ...e, tx: BigInt(e.tx) }));
      const progress = row.progress.map((e) => ({ ...e, tx: null }));
      if (events.length >= READ_LIMIT) {
        const last = events[events.length - 1]!;
        this.pos = { tx: last.tx, id: last.id! };
        this.again = true;
      } else if (this.pos.tx < this.mark) {
        // Every final event after the position was read: move up to the watermark, where the next read starts
        // (only events of transactions at or above it can still appear).
        this.pos = { tx: this.mark, id: 0 };
      }
      if (events.length > 0 || progress.length > 0) {
        try {
          this.o.onEvents(events, progress);
        } catch (err) {
          this.o.log?.error({ err }, 'a live event consumer failed');
        }
      }
      this.trackHeld(row.held);
    } while (this.again && !this.stopped);
  }

  private trackHeld(held: boolean): void {
    if (!held) {
      this.heldSince = null;
      this.heldDelay = 0;
      this.heldWarned = false;
      clearTimeout(this.heldTimer);
      this.heldTimer = undefined;
      return;
    }
    this.heldSince ??= Date.now();
    if (!this.heldWarned && this.heldMs > 10_000) {
      this.heldWarned = true;
      this.o.log?.warn({ heldMs: this.heldMs },
        'live events are held back by a writing transaction that has been open for over 10 s (see ballast.oldest_transactions)');
    }
    this.scheduleHeld();
  }

  private scheduleHeld(): void {
    if (this.heldTimer || this.stopped) return;
    this.heldDelay = Math.min(Math.max(5, this.heldDelay * 2), 500);
    this.heldTimer = setTimeout(() => {
      this.heldTimer = undefined;
      this.read();
    }, this.heldDelay);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.heldTimer);
    clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = undefined;
    await this.reading?.catch(() => {});
    await client?.end().catch(() => {});
  }
}
