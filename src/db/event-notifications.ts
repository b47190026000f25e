// NOTIFY ballast_events announces ids only (migrations/0014): {"ids":[...]}, {"min_id","max_id","count"} or
// {"progress":{"job_id","step_id"}}. A payload is readable by every login of the cluster, so it names nothing; the
// rows behind it are read here, with one query per notification, through the public views and so under the reading
// connection's role (row-level security decides what it sees).
//
// AnnouncementReader resolves notifications one at a time in arrival order (commit order), and delivers each
// notification's events in id order. A range can hold ids of other transactions, which have (or will get) their
// own notifications: every delivered id is remembered, with the number of the notification that delivered it, in a
// bounded recent-id map, so a reader can deliver each event once.
import { EVENT_JSON, type Queryable } from './caller.ts';

export const CHANNEL = 'ballast_events';

/** An event or progress report as a listener receives it. */
export interface LiveEvent {
  /** The event's id in ballast.events; absent for progress reports (they are not stored as events). */
  id?: number;
  job_id: number;
  step_id: number | null;
  type: string;
  status: string | null;
  tenant_id?: string;
  step_name?: string | null;
  at?: string;
  /** step_progress only: the step's progress as stored when the notification was read. */
  progress?: unknown;
}

export type Announcement =
  | { kind: 'ids'; ids: number[] }
  | { kind: 'range'; minId: number; maxId: number; count: number }
  | { kind: 'progress'; jobId: number; stepId: number };

const isId = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v > 0;

/** The announcement a payload carries; null for anything else (not JSON, or another shape). */
export function parseAnnouncement(text: string | undefined): Announcement | null {
  let value: unknown;
  try {
    value = JSON.parse(text ?? '');
  } catch {
    return null;
  }
  if (!value || typeof value !== 'object') return null;
  const o = value as Record<string, unknown>;
  if (Array.isArray(o.ids) && o.ids.every(isId)) return { kind: 'ids', ids: o.ids as number[] };
  if (isId(o.min_id) && isId(o.max_id)) return { kind: 'range', minId: o.min_id, maxId: o.max_id, count: Number(o.count) || 0 };
  const p = o.progress as Record<string, unknown> | undefined;
  if (p && typeof p === 'object' && isId(p.job_id) && isId(p.step_id)) return { kind: 'progress', jobId: p.job_id, stepId: p.step_id };
  return null;
}

const EVENTS_FROM = `from ballast.events e join ballast.jobs j on j.id = e.job_id left join ballast.steps s on s.id = e.step_id`;

/** One query: the rows an announcement names that the connection's role can see, events in id order. */
export async function fetchAnnounced(c: Queryable, a: Announcement): Promise<LiveEvent[]> {
  let query: { text: string; values: unknown[] };
  switch (a.kind) {
    case 'ids':
      if (a.ids.length === 0) return [];
      query = { text: `select ${EVENT_JSON} as ev ${EVENTS_FROM} where e.id = any($1::bigint[]) order by e.id`, values: [a.ids] };
      break;
    case 'range':
      query = { text: `select ${EVENT_JSON} as ev ${EVENTS_FROM} where e.id between $1 and $2 order by e.id`, values: [a.minId, a.maxId] };
      break;
    case 'progress':
      // The report was made by a running attempt; its status stays 'running' whatever the step did since.
      query = {
        text: `select json_build_object('job_id', s.job_id, 'step_id', s.id, 'type', 'step_progress', 'status', 'running',
                      'tenant_id', j.tenant_id, 'step_name', s.name, 'progress', s.progress) as ev
                 from ballast.steps s join ballast.jobs j on j.id = s.job_id
                where s.id = $1 and s.job_id = $2`,
        values: [a.stepId, a.jobId],
      };
      break;
  }
  const { rows } = await c.query<{ ev: LiveEvent }>(query);
  return rows.map((r) => r.ev);
}

/** How many delivered event ids a reader remembers beyond the current notification's. */
export const RECENT_IDS = 20_000;

export interface ReaderHandlers {
  /**
   * One event of notification number `seq`. `firstSeq` is the number of the notification that delivered the same
   * event before (it fell in an earlier range, or this is its own notification after a range covered it), or
   * undefined the first time. Progress reports have no id and always come with firstSeq undefined.
   */
  deliver(event: LiveEvent, firstSeq: number | undefined, seq: number): void;
  /** A notification could not be resolved (the query failed): its events were not delivered. */
  error(err: Error): void;
  /** A payload that is not an announcement (not JSON, or another shape) was skipped. */
  ignored?(payload: string | undefined): void;
}

export class AnnouncementReader {
  private readonly client: Queryable;
  private readonly handlers: ReaderHandlers;
  private readonly delivered = new Map<number, number>();
  private chain: Promise<void> = Promise.resolve();
  private count = 0;
  private closed = false;

  constructor(client: Queryable, handlers: ReaderHandlers) {
    this.client = client;
    this.handlers = handlers;
  }

  /** Notifications pushed so far: a subscriber registered now is owed the events of later ones. */
  get received(): number {
    return this.count;
  }

  /** Takes one payload of channel ballast_events (call it from the 'notification' handler); returns its number. */
  push(payload: string | undefined): number {
    const seq = ++this.count;
    const a = parseAnnouncement(payload);
    if (!a) {
      this.handlers.ignored?.(payload);
      return seq;
    }
    this.chain = this.chain.then(() => this.resolve(a, seq));
    return seq;
  }

  /** Resolves once every notification pushed so far has been delivered (or failed). */
  idle(): Promise<void> {
    return this.chain;
  }

  /** Stops delivering; pending notifications are dropped without an error. */
  close(): void {
    this.closed = true;
  }

  private async resolve(a: Announcement, seq: number): Promise<void> {
    if (this.closed) return;
    let events: LiveEvent[];
    try {
      events = await fetchAnnounced(this.client, a);
    } catch (err) {
      if (!this.closed) this.handlers.error(err as Error);
      return;
    }
    if (this.closed) return;
    for (const e of events) {
      let first: number | undefined;
      if (e.id !== undefined && e.id !== null) {
        first = this.delivered.get(e.id);
        if (first === undefined) this.delivered.set(e.id, seq);
      }
      try {
        this.handlers.deliver(e, first, seq);
      } catch (err) {
        this.handlers.error(err as Error);
      }
    }
    const keep = RECENT_IDS + events.length;
    if (this.delivered.size > keep) {
      for (const id of this.delivered.keys()) {
        if (this.delivered.size <= keep) break;
        this.delivered.delete(id);
      }
    }
  }
}
