// Subscriptions over graphql-ws, served here instead of by graphql-ws and grafast, so that the cost of an event is
// per group of alike subscribers, not per subscriber (hub.ts). ws.ts hands every incoming message to handle() first:
//   - `subscribe` of a subscription operation on an acknowledged connection: compiled (selection.ts; cached per
//     document), refused with an `error` message (validation, variables, authorization, catch-up), or opened
//     (feeds.ts): its `next` messages are written by connection.ts; it never completes by itself;
//   - `complete` for one of those ids: the subscription ends (no message back, as the protocol says);
//   - anything else (connection_init, ping, queries and mutations over the socket, messages before the
//     acknowledgement) goes on to graphql-ws, which answers or closes the socket as the protocol requires.
// A `subscribe` reusing the id of a running subscription closes the socket with 4409, as graphql-ws does.
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { GraphQLError } from 'postgraphile/graphql';
import type { Caller } from '../auth.ts';
import { describePgError } from '../errors.ts';
import { Flusher, LiveConnection, LiveSubscription, type LiveLimits } from './connection.ts';
import { openFeed, type FeedContext } from './feeds.ts';
import type { SubscriptionCompiler } from './selection.ts';

export const CLOSE_DUPLICATE_ID = 4409;

export interface LiveProtocolOptions {
  feeds: FeedContext;
  compiler: () => SubscriptionCompiler;
  limits: LiveLimits;
  log: Logger;
}

interface SubscribeMessage {
  id: string;
  type: 'subscribe';
  payload: { query: string; operationName?: string | null; variables?: Record<string, unknown> | null };
}

function isSubscribe(m: Record<string, unknown>): m is SubscribeMessage & Record<string, unknown> {
  const p = m.payload as Record<string, unknown> | undefined;
  return m.type === 'subscribe' && typeof m.id === 'string' && m.id.length > 0 && !!p && typeof p === 'object' && typeof p.query === 'string';
}

/** The client's view of an error: SafeErrors and Postgres errors the API names keep their message; others masked. */
function formatError(err: unknown, log: Logger): Record<string, unknown> {
  if (err instanceof GraphQLError) return err.toJSON() as unknown as Record<string, unknown>;
  const e = err as { message?: string; extensions?: Record<string, unknown>; code?: string; severity?: string };
  if (e && typeof e === 'object' && e.extensions && typeof e.extensions.code === 'string') {
    return { message: e.message, extensions: e.extensions };
  }
  if (e && typeof e.code === 'string' && 'severity' in e) {
    const described = describePgError(err as Error & { code: string });
    if (described) return described;
  }
  const id = Math.random().toString(36).slice(2, 10);
  log.error({ err, errorId: id }, 'a subscription failed to open');
  return { message: `an internal error occurred (error id ${id})`, extensions: { code: 'INTERNAL_SERVER_ERROR', errorId: id } };
}

export class LiveProtocol {
  readonly flusher = new Flusher();
  private readonly o: LiveProtocolOptions;
  private readonly connections = new Set<LiveConnection>();

  constructor(o: LiveProtocolOptions) {
    this.o = o;
  }

  /** A new socket; call closed() when it closes. */
  opened(ws: WebSocket): LiveConnection {
    const conn = new LiveConnection(ws, this.flusher, this.o.limits);
    this.connections.add(conn);
    return conn;
  }

  /** The socket was acknowledged for `caller` (graphql-ws onConnect accepted it). */
  acknowledged(conn: LiveConnection, caller: Caller): void {
    conn.caller = caller;
  }

  closed(conn: LiveConnection): void {
    conn.closeAll();
    this.connections.delete(conn);
  }

  /** Live subscriptions open over every socket. */
  get size(): number {
    let n = 0;
    for (const c of this.connections) n += c.subs.size;
    return n;
  }

  /** Handles `text` if it is this module's; returns false to pass it on to graphql-ws. */
  handle(conn: LiveConnection, text: string): boolean {
    if (!text.includes('"subscribe"') && !text.includes('"complete"')) return false;
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return false;
    }
    if (!m || typeof m !== 'object') return false;
    if (m.type === 'complete' && typeof m.id === 'string') {
      const sub = conn.subs.get(m.id);
      if (!sub) return false;
      conn.end(sub);
      return true;
    }
    if (!isSubscribe(m) || conn.caller === null) return false;
    const { id, payload } = m;
    const compiled = this.o.compiler().compile(payload.query, payload.operationName, payload.variables);
    if (compiled.kind === 'other') return false;
    if (conn.subs.has(id)) {
      conn.ws.close(CLOSE_DUPLICATE_ID, `Subscriber for ${id} already exists`);
      return true;
    }
    if (conn.subs.size >= this.o.limits.maxSubscriptions) {
      conn.message({ id, type: 'error', payload: [{
        message: `this connection already holds ${conn.subs.size} subscriptions, the most one may (BALLAST_LIVE_MAX_PER_SOCKET); end one (complete) or open another connection`,
        extensions: { code: 'TOO_MANY_SUBSCRIPTIONS', maxSubscriptions: this.o.limits.maxSubscriptions },
      }] });
      return true;
    }
    if (compiled.kind === 'errors') {
      conn.message({ id, type: 'error', payload: compiled.errors.map((e) => e.toJSON()) });
      return true;
    }
    const sub = new LiveSubscription(conn, id, compiled.value.args.after === null || compiled.value.args.after === undefined ? null : String(compiled.value.args.after));
    conn.subs.set(id, sub);
    openFeed(this.o.feeds, conn.caller, compiled.value, sub).catch((err: unknown) => {
      conn.end(sub, { id, type: 'error', payload: [formatError(err, this.o.log)] });
    });
    return true;
  }

  /** Ends every live subscription with `code` (the server is stopping). */
  stopAll(code: string, message: string): void {
    for (const conn of this.connections) {
      for (const sub of [...conn.subs.values()]) conn.end(sub, { id: sub.id, type: 'error', payload: [{ message, extensions: { code } }] });
    }
    this.flusher.flushAll();
  }
}
