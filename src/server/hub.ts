// One LISTEN ballast_events per server process, fanned out to the subscriptions in it. Each notification is parsed
// once and handed to the subscribers of its job, of its tenant and of every tenant (an index, not a scan).
//
// A subscription registers synchronously (register() needs the hub connected), so a subscriber can register first
// and read its snapshot afterwards: a change committed after the snapshot reaches it live, one committed before is
// in the snapshot. When the LISTEN connection drops, notifications sent meanwhile are lost; the hub therefore ends
// every subscription with SUBSCRIPTION_INTERRUPTED (the client resubscribes with `after`, and catches up from
// ballast.events) and reconnects with backoff.
import pg from 'pg';
import type { Logger } from 'pino';
import type { EventPayload } from '../db/caller.ts';
import { clientError } from './errors.ts';

export const CHANNEL = 'ballast_events';

export interface HubListener {
  event(payload: EventPayload): void;
  fail(error: Error): void;
}

export type Topic = { job: string } | { tenant: string } | 'all';

const keyOf = (topic: Topic) => (topic === 'all' ? 'all' : 'job' in topic ? `job:${topic.job}` : `tenant:${topic.tenant}`);

export class EventHub {
  private client: pg.Client | undefined;
  private readonly listeners = new Map<string, Set<HubListener>>();
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

  private async connect(): Promise<void> {
    // TCP keepalive: a connection that died without a FIN (a cut network) is noticed instead of waited on forever.
    const client = new pg.Client({ connectionString: this.connectionString, application_name: 'ballast-graphql-listen', keepAlive: true });
    client.on('notification', (msg) => this.dispatch(msg.payload));
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    await client.connect();
    await client.query(`listen ${CHANNEL}`);
    this.client = client;
    this.connected = true;
    this.attempt = 0;
  }

  private lost(client: pg.Client, err: Error): void {
    if (client !== this.client || this.stopped) return;
    this.client = undefined;
    this.connected = false;
    client.end().catch(() => {});
    this.log.warn({ err: err.message }, 'LISTEN connection for GraphQL subscriptions lost; ending subscriptions and reconnecting');
    const error = clientError('SUBSCRIPTION_INTERRUPTED',
      'the server lost its connection to Postgres notifications; subscribe again with `after` set to the last eventId you processed');
    for (const set of this.listeners.values()) for (const l of [...set]) l.fail(error);
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

  private dispatch(text: string | undefined): void {
    let payload: EventPayload;
    try {
      payload = JSON.parse(text ?? '') as EventPayload;
    } catch {
      this.log.warn({ payload: text?.slice(0, 200) }, 'ignored a ballast_events notification that is not JSON');
      return;
    }
    if (payload.job_id === undefined || payload.job_id === null) return;
    const keys = ['all', `job:${payload.job_id}`];
    if (payload.tenant_id) keys.push(`tenant:${payload.tenant_id}`);
    for (const key of keys) {
      const set = this.listeners.get(key);
      if (set) for (const l of set) l.event(payload);
    }
  }

  /** Registers `listener` for `topic` now; returns its unregister function. Throws when not connected. */
  register(topic: Topic, listener: HubListener): () => void {
    if (!this.connected || this.stopped) {
      throw clientError('SUBSCRIPTION_UNAVAILABLE', 'live updates are unavailable right now (the server is reconnecting to Postgres); retry in a moment');
    }
    const key = keyOf(topic);
    let set = this.listeners.get(key);
    if (!set) this.listeners.set(key, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
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
    for (const set of this.listeners.values()) for (const l of [...set]) l.fail(clientError('SERVER_STOPPING', 'the server is shutting down; reconnect'));
    this.listeners.clear();
    const client = this.client;
    this.client = undefined;
    this.connected = false;
    await client?.end().catch(() => {});
  }
}
