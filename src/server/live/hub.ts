// The fan-out of live events to GraphQL subscriptions, one per API process.
//
// One EventStream (src/db/event-stream.ts) reads the final events in order, one query per notification batch for
// every subscriber of the process (the server's connection sees every tenant; each subscription checked its caller
// when it opened). Subscriptions are grouped by topic (a job, a tenant, or all) and by what their messages look like
// (the document's shape and the feed's options): for each event a group renders its message once, and that same
// Buffer goes to every subscriber of the group (connection.ts frames it per socket). Work per event is therefore per
// group, plus a pointer push per subscriber.
//
// Events are dispatched in slices of SLICE events per turn of the event loop, so a burst never holds the loop for
// long: HTTP requests and /health run between slices.
//
// Gap-free hand-over: a subscriber accepts only events after its position `from`. One that follows from now takes
// the stream's position when it registers (everything up to it is the past). One that catches up (a resume with
// `after`, or jobUpdated's snapshot) registers first with a buffer, reads its catch-up in one statement whose
// watermark W says what it covered (every final event below W), then takes `from` = (W, 0) and replays the buffer
// through the same filter: what the stream read before registering is below W (its snapshot was older), and what it
// reads later and is at or above W was not in the catch-up.
import type { Logger } from 'pino';
import { EventStream, isAfter, type Position, type StreamEvent } from '../../db/event-stream.ts';
import { project, type Shape } from './selection.ts';
import { TURN_BUDGET_MS } from './turn.ts';

export type Topic = { job: string } | { tenant: string } | 'all';

export const topicKey = (topic: Topic) => (topic === 'all' ? 'all' : 'job' in topic ? `job:${topic.job}` : `tenant:${topic.tenant}`);

/** Events dispatched per turn of the event loop. */
export const SLICE = 64;

/** A JobChange as the GraphQL schema declares it (subscriptions.ts). */
export interface Change {
  type: string;
  eventId: string | null;
  jobId: string;
  tenantId: string | null;
  stepId: string | null;
  stepName: string | null;
  status: string | null;
  at: string | null;
  progress: unknown;
  replayed: boolean;
  job: (Record<string, unknown> & { steps: Record<string, unknown>[] }) | null;
}

const idText = (v: number | string | null | undefined) => (v === null || v === undefined ? null : String(v));

export function changeOf(e: StreamEvent, replayed: boolean): Change {
  return {
    type: e.type, eventId: idText(e.id), jobId: String(e.job_id), tenantId: e.tenant_id ?? null, stepId: idText(e.step_id),
    stepName: e.step_name ?? null, status: e.status ?? null, at: e.at ?? null, progress: e.progress ?? null, replayed, job: null,
  };
}

/** What decides a group: its topic, its message shape and which events it takes. */
export interface GroupSpec {
  topic: Topic;
  /** The response key of the root field and the shape below it. */
  rootKey: string;
  shape: Shape;
  shapeKey: string;
  /** Job-level events only (no step_* events). */
  jobsOnly: boolean;
  /** Progress reports: null for none, 0 for every one, n for at most one per step every n ms (the latest). */
  progressEveryMs: number | null;
}

/** One subscription as the hub sees it. */
export interface HubSubscriber {
  /** Events after this position are this subscriber's; null while it catches up (events are buffered). */
  from: Position | null;
  buffer: StreamEvent[];
  /** Hands one rendered message (and the id of its event) to the subscriber's socket. */
  send(bytes: Buffer, eventId: string | null): void;
}

export class Group {
  readonly key: string;
  readonly spec: GroupSpec;
  readonly subs = new Set<HubSubscriber>();
  private readonly lastProgress = new Map<number, number>();
  private readonly pendingProgress = new Map<number, StreamEvent>();
  private progressTimer: NodeJS.Timeout | undefined;

  constructor(key: string, spec: GroupSpec) {
    this.key = key;
    this.spec = spec;
  }

  accepts(e: StreamEvent): boolean {
    if (e.type === 'step_progress') return this.spec.progressEveryMs !== null;
    if (e.id === null) return false;
    return !(this.spec.jobsOnly && e.step_id !== null);
  }

  /** The message of one change, serialised: {"data":{"<root key>":{...}}}. */
  render(change: Change): Buffer {
    return Buffer.from(JSON.stringify({ data: { [this.spec.rootKey]: project(change as unknown as Record<string, unknown>, this.spec.shape) } }));
  }

  /** Delivers one final event (`rendered` caches its message across the group's subscribers). */
  deliver(e: StreamEvent, change: Change): void {
    let bytes: Buffer | undefined;
    for (const s of this.subs) {
      if (s.from === null) {
        s.buffer.push(e);
        continue;
      }
      if (!isAfter(e as Position, s.from)) continue;
      bytes ??= this.render(change);
      s.send(bytes, change.eventId);
    }
  }

  /** A progress report, throttled to one per step every progressEveryMs (the latest one wins). */
  progress(e: StreamEvent): void {
    const every = this.spec.progressEveryMs ?? 0;
    const step = e.step_id!;
    const now = Date.now();
    const last = this.lastProgress.get(step);
    if (every > 0 && last !== undefined && now - last < every) {
      this.pendingProgress.set(step, e);
      this.progressTimer ??= setTimeout(() => this.flushProgress(), every - (now - last));
      return;
    }
    if (every > 0) this.lastProgress.set(step, now);
    this.sendProgress(e);
  }

  private flushProgress(): void {
    this.progressTimer = undefined;
    const now = Date.now();
    const every = this.spec.progressEveryMs ?? 0;
    for (const [step, at] of this.lastProgress) if (now - at >= every && !this.pendingProgress.has(step)) this.lastProgress.delete(step);
    const pending = [...this.pendingProgress.values()];
    this.pendingProgress.clear();
    for (const e of pending) {
      this.lastProgress.set(e.step_id!, now);
      this.sendProgress(e);
    }
  }

  private sendProgress(e: StreamEvent): void {
    let bytes: Buffer | undefined;
    for (const s of this.subs) {
      if (s.from === null) {
        s.buffer.push(e);
        continue;
      }
      bytes ??= this.render(changeOf(e, false));
      s.send(bytes, null);
    }
  }

  close(): void {
    clearTimeout(this.progressTimer);
    this.pendingProgress.clear();
    this.lastProgress.clear();
  }
}

export interface HubOptions {
  connectionString: string;
  log: Logger;
}

export class EventHub {
  private readonly stream: EventStream;
  /** topic key -> group key -> group */
  private readonly topics = new Map<string, Map<string, Group>>();
  private readonly queue: { events: StreamEvent[]; next: number; progress: StreamEvent[] }[] = [];
  private draining = false;
  private drained: (() => void)[] = [];
  private readonly log: Logger;

  constructor(o: HubOptions) {
    this.log = o.log;
    this.stream = new EventStream({
      connectionString: o.connectionString,
      applicationName: 'ballast-graphql-listen',
      log: o.log,
      onEvents: (events, progress) => {
        this.queue.push({ events, next: 0, progress });
        this.drain();
      },
    });
  }

  async start(): Promise<void> {
    await this.stream.start();
  }

  get isConnected(): boolean {
    return this.stream.connected;
  }

  /** How long final events have waited behind an open writing transaction (0: none). */
  get heldMs(): number {
    return this.stream.heldMs;
  }

  /** Where a subscriber that follows from now starts. */
  get position(): Position {
    return this.stream.position;
  }

  /** Resolves once everything read so far has been dispatched (tests). */
  async idle(): Promise<void> {
    await this.stream.idle();
    if (!this.draining && this.queue.length === 0) return;
    await new Promise<void>((resolve) => this.drained.push(resolve));
  }

  /** Reads now instead of waiting for a notification (tests). */
  poke(): void {
    this.stream.read();
  }

  /** Adds `sub` to the group of `spec`; returns its removal. */
  register(spec: GroupSpec, sub: HubSubscriber): () => void {
    const tkey = topicKey(spec.topic);
    const gkey = `${spec.shapeKey}|${spec.jobsOnly ? 'jobs' : 'steps'}|${spec.progressEveryMs ?? 'none'}`;
    let groups = this.topics.get(tkey);
    if (!groups) this.topics.set(tkey, (groups = new Map()));
    let group = groups.get(gkey);
    if (!group) groups.set(gkey, (group = new Group(gkey, spec)));
    group.subs.add(sub);
    const g = group;
    return () => {
      g.subs.delete(sub);
      if (g.subs.size > 0) return;
      g.close();
      const current = this.topics.get(tkey);
      if (current?.get(gkey) === g) current.delete(gkey);
      if (current?.size === 0) this.topics.delete(tkey);
    };
  }

  /** A group's renderer for one subscriber's own messages (catch-up). */
  groupOf(spec: GroupSpec): (change: Change) => Buffer {
    const g = new Group('', spec);
    return (change) => g.render(change);
  }

  /** Subscriptions registered (tests and metrics). */
  get size(): number {
    let n = 0;
    for (const groups of this.topics.values()) for (const g of groups.values()) n += g.subs.size;
    return n;
  }

  /** Groups (distinct renderings per event) registered. */
  get groups(): number {
    let n = 0;
    for (const groups of this.topics.values()) n += groups.size;
    return n;
  }

  private drain(): void {
    if (this.draining) return;
    this.draining = true;
    setImmediate(() => this.step());
  }

  /** Dispatches up to SLICE events (or TURN_BUDGET_MS of work), then yields to the event loop. */
  private step(): void {
    let budget = SLICE;
    const began = performance.now();
    while (budget > 0 && this.queue.length > 0) {
      const head = this.queue[0]!;
      while (budget > 0 && head.next < head.events.length) {
        this.dispatch(head.events[head.next++]!);
        budget = performance.now() - began > TURN_BUDGET_MS ? 0 : budget - 1;
      }
      if (head.next === head.events.length) {
        for (const p of head.progress) this.dispatchProgress(p);
        this.queue.shift();
      }
    }
    if (this.queue.length > 0) {
      setImmediate(() => this.step());
      return;
    }
    this.draining = false;
    for (const fn of this.drained.splice(0)) fn();
  }

  private topicsOf(e: StreamEvent): (Map<string, Group> | undefined)[] {
    return [this.topics.get('all'), this.topics.get(`job:${e.job_id}`), e.tenant_id ? this.topics.get(`tenant:${e.tenant_id}`) : undefined];
  }

  private dispatch(e: StreamEvent): void {
    let change: Change | undefined;
    for (const groups of this.topicsOf(e)) {
      if (!groups) continue;
      for (const g of groups.values()) {
        if (!g.accepts(e)) continue;
        change ??= changeOf(e, false);
        try {
          g.deliver(e, change);
        } catch (err) {
          this.log.error({ err, eventId: e.id }, 'delivering a live event failed');
        }
      }
    }
  }

  private dispatchProgress(e: StreamEvent): void {
    for (const groups of this.topicsOf(e)) {
      if (!groups) continue;
      for (const g of groups.values()) if (g.accepts(e)) g.progress(e);
    }
  }

  async stop(): Promise<void> {
    for (const groups of this.topics.values()) for (const g of groups.values()) g.close();
    this.topics.clear();
    this.queue.length = 0;
    await this.stream.stop();
  }
}
