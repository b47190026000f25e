// One LISTEN ballast_events per server process, fanned out to the subscriptions in it. A notification carries ids
// only (migrations/0014): the hub reads the events they name with one query per notification, on the LISTEN
// connection (the server's own role, which sees every tenant; each subscription checked its caller when it was
// opened), then hands each event to the subscribers of its job, of its tenant and of every tenant (an index, not a
// scan), in id order within a notification and in commit order across notifications.
//
// A subscription registers synchronously (register() needs the hub connected), so a subscriber can register first
// and read its snapshot afterwards: a change committed after the snapshot reaches it live, one committed before is
// in the snapshot. Reading a notification's rows takes a moment, so the hub numbers notifications as they arrive and
// hands a subscriber only the events of notifications that arrived after it registered, as if delivery were
// immediate. An event that arrives twice (a range of ids covers other transactions' events, which also have their
// own notification) goes once to each subscriber. When the LISTEN connection drops, or a notification cannot be
// read, notifications are lost; the hub therefore ends every subscription with SUBSCRIPTION_INTERRUPTED (the client
// resubscribes with `after`, and catches up from ballast.events) and reconnects with backoff.
import pg from 'pg';
import type { Logger } from 'pino';
import type { EventPayload } from '../db/caller.ts';
import { AnnouncementReader, CHANNEL, type LiveEvent } from '../db/event-notifications.ts';
import { clientError } from './errors.ts';

export { CHANNEL };

export interface HubListener {
  event(payload: EventPayload): void;
  fail(error: Error): void;
}

export type Topic = { job: string } | { tenant: string } | 'all';

const keyOf = (topic: Topic) => (topic === 'all' ? 'all' : 'job' in topic ? `job:${topic.job}` : `tenant:${topic.tenant}`);

/** A registered listener and the number of notifications that had arrived when it registered. */
interface Registration {
  listener: HubListener;
  since: number;
}

export class EventHub {
  private client: pg.Client | undefined;
  private reader: AnnouncementReader | undefined;
  private readonly listeners = new Map<string, Set<Registration>>();
  private stopped = false;
  private connected = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private attempt = 0;

  private readonly connectionString: string;
  private readonly log: Logger;

  constructor(connectionString: string, log: Logger) {
    this.connectionString = connectionString;
    this.log = log;
  }

  /** Connects and LISTENs; resolves once notifications flow. */
  async start(): Promise<void> {
    await this.connect();
  }

  get isConnected(): boolean {
    return this.connected;
  }

  /** Resolves once every notification received so far has been read and handed out (tests). */
  async idle(): Promise<void> {
    await this.reader?.idle();
  }

  private async connect(): Promise<void> {
    // TCP keepalive: a connection that died without a FIN (a cut network) is noticed instead of waited on forever.
    const client = new pg.Client({ connectionString: this.connectionString, application_name: 'ballast-graphql-listen', keepAlive: true });
    const reader = new AnnouncementReader(client, {
      deliver: (e, firstSeq, seq) => this.dispatch(e, firstSeq, seq),
      error: (err) => this.lost(client, err),
      ignored: (payload) => this.log.warn({ payload: payload?.slice(0, 200) }, 'ignored a ballast_events notification that announces no ids'),
    });
    client.on('notification', (msg) => reader.push(msg.payload));
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    await client.connect();
    await client.query(`listen ${CHANNEL}`);
    this.client = client;
    this.reader = reader;
    this.connected = true;
    this.attempt = 0;
  }

  private lost(client: pg.Client, err: Error): void {
    if (client !== this.client || this.stopped) return;
    this.client = undefined;
    this.reader?.close();
    this.reader = undefined;
    this.connected = false;
    client.end().catch(() => {});
    this.log.warn({ err: err.message }, 'LISTEN connection for GraphQL subscriptions lost; ending subscriptions and reconnecting');
    const error = clientError('SUBSCRIPTION_INTERRUPTED',
      'the server lost its connection to Postgres notifications; subscribe again with `after` set to the last eventId you processed');
    for (const set of this.listeners.values()) for (const r of [...set]) r.listener.fail(error);
    this.listeners.clear();
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped) return;
    const delay = Math.min(100 * 2 ** this.attempt++, 10_000);
    this.reconnectTimer = setTimeout(() => {
      this.connect().catch((err: Error) => {
        this.log.warn({ err: err.message, delay }, 'LISTEN reconnect failed');
        this.scheduleReconnect();
      });
    }, delay);
  }

  /**
   * Hands one event of notification `seq` to the listeners of its job, its tenant and all, that registered before
   * that notification arrived (since < seq) and did not receive the event from notification `firstSeq` already.
   */
  private dispatch(event: LiveEvent, firstSeq: number | undefined, seq: number): void {
    if (event.job_id === undefined || event.job_id === null) return;
    const payload = event as unknown as EventPayload;
    const keys = ['all', `job:${event.job_id}`];
    if (event.tenant_id) keys.push(`tenant:${event.tenant_id}`);
    for (const key of keys) {
      const set = this.listeners.get(key);
      if (!set) continue;
      for (const r of set) {
        if (r.since < seq && (firstSeq === undefined || r.since >= firstSeq)) r.listener.event(payload);
      }
    }
  }

  /** Registers `listener` for `topic` now; returns its unregister function. Throws when not connected. */
  register(topic: Topic, listener: HubListener): () => void {
    if (!this.connected || this.stopped || !this.reader) {
      throw clientError('SUBSCRIPTION_UNAVAILABLE', 'live updates are unavailable right now (the server is reconnecting to Postgres); retry in a moment');
    }
    const key = keyOf(topic);
    let set = this.listeners.get(key);
    if (!set) this.listeners.set(key, (set = new Set()));
    const registration: Registration = { listener, since: this.reader.received };
    set.add(registration);
    return () => {
      set.delete(registration);
      if (set.size === 0 && this.listeners.get(key) === set) this.listeners.delete(key);
    };
  }

  /** Number of registered subscriptions (tests and health). */
  get size(): number {
    let n = 0;
    for (const set of this.listeners.values()) n += set.size;
    return n;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    for (const set of this.listeners.values()) for (const r of [...set]) r.listener.fail(clientError('SERVER_STOPPING', 'the server is shutting down; reconnect'));
    this.listeners.clear();
    const client = this.client;
    this.client = undefined;
    this.reader?.close();
    this.reader = undefined;
    this.connected = false;
    await client?.end().catch(() => {});
  }
}
