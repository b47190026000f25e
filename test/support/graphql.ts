// Real clients for the GraphQL tests: fetch for HTTP, graphql-ws over `ws` for subscriptions, against a server
// started in this process on a free port. Every wait is bounded and fails with what was received so far.
import WebSocket from 'ws';
import { createClient, type Client } from 'graphql-ws';
import { startServer, mintToken, type BallastServer, type StartServerOptions } from '../../src/server/index.ts';
import { quietLog } from '../helpers.ts';

export const SECRET = 'test-secret-0123456789-abcdefghijklmnopqrstuvwxyz';

interface TapTest {
  teardown(fn: () => unknown): void;
}

export async function testServer(t: TapTest, url: string, opts: Partial<StartServerOptions> = {}): Promise<BallastServer> {
  const server = await startServer({ connectionString: url, port: 0, host: '127.0.0.1', jwt: { secret: SECRET }, graphiql: false, log: quietLog, ...opts });
  t.teardown(() => server.stop());
  return server;
}

export function token(role: 'client' | 'operator' | 'reporter', tenantId?: string, opts: { subject?: string; expiresInS?: number; secret?: string } = {}) {
  return mintToken(opts.secret ?? SECRET, { role, tenantId, subject: opts.subject ?? `${role}-${tenantId ?? 'all'}`, expiresInS: opts.expiresInS });
}

export interface GqlResponse {
  status: number;
  body: { data?: any; errors?: { message: string; path?: string[]; extensions?: Record<string, any> }[] };
}

export async function gql(server: BallastServer, query: string, variables: Record<string, unknown> = {}, bearer?: string): Promise<GqlResponse> {
  const res = await fetch(server.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return { status: res.status, body: (await res.json()) as GqlResponse['body'] };
}

/** The data of a response that must have no errors (fails the test with the errors otherwise). */
export async function data(server: BallastServer, query: string, variables: Record<string, unknown> = {}, bearer?: string): Promise<any> {
  const r = await gql(server, query, variables, bearer);
  if (r.body.errors?.length) throw new Error(`GraphQL errors: ${JSON.stringify(r.body.errors)}`);
  return r.body.data;
}

/** The first error's code (and message) of a response that must fail. */
export function errorOf(r: GqlResponse): { code: string | undefined; message: string; extensions: Record<string, any> } {
  const e = r.body.errors?.[0];
  if (!e) throw new Error(`expected an error, got ${JSON.stringify(r.body)}`);
  return { code: e.extensions?.code, message: e.message, extensions: e.extensions ?? {} };
}

export interface Closed {
  code: number;
  reason: string;
}

/** A graphql-ws connection; `closed` resolves with the close code and reason. */
export class WsConnection {
  readonly client: Client;
  readonly closed: Promise<Closed>;
  constructor(server: BallastServer, bearer?: string) {
    let resolveClosed!: (c: Closed) => void;
    this.closed = new Promise((r) => (resolveClosed = r));
    this.client = createClient({
      url: server.wsUrl,
      webSocketImpl: WebSocket,
      connectionParams: bearer ? { authorization: `Bearer ${bearer}` } : {},
      retryAttempts: 0,
      lazy: true,
      on: { closed: (e) => resolveClosed({ code: (e as { code: number }).code, reason: String((e as { reason?: string }).reason ?? '') }) },
    });
  }

  subscribe(query: string, variables: Record<string, unknown> = {}): Subscription {
    return new Subscription(this.client, query, variables);
  }

  async close(): Promise<void> {
    await this.client.dispose();
  }
}

export class Subscription {
  readonly messages: any[] = [];
  readonly errors: any[] = [];
  done = false;
  private waiters = new Set<() => void>();
  private readonly unsubscribe: () => void;

  constructor(client: Client, query: string, variables: Record<string, unknown>) {
    this.unsubscribe = client.subscribe({ query, variables }, {
      next: (value) => {
        if (value.errors) this.errors.push(...value.errors);
        if (value.data) this.messages.push(Object.values(value.data)[0]);
        this.wake();
      },
      error: (err) => {
        // A graphql-ws `error` message brings a list of GraphQL errors; a closed socket, a CloseEvent.
        if (Array.isArray(err)) this.errors.push(...err);
        else this.errors.push(err);
        this.done = true;
        this.wake();
      },
      complete: () => {
        this.done = true;
        this.wake();
      },
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Waits until `check(messages)` holds (or, with `orDone`, the subscription ended); fails after timeoutMs. */
  async until(check: (messages: any[]) => boolean, timeoutMs = 15_000, what = 'the expected messages'): Promise<any[]> {
    if (check(this.messages)) return this.messages;
    return new Promise((resolve, reject) => {
      const waiter = () => {
        if (check(this.messages)) {
          cleanup();
          resolve(this.messages);
        } else if (this.done) {
          cleanup();
          reject(new Error(`the subscription ended before ${what}; messages: ${JSON.stringify(this.messages)}; errors: ${JSON.stringify(this.errors)}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no ${what} within ${timeoutMs} ms; messages: ${JSON.stringify(this.messages)}; errors: ${JSON.stringify(this.errors)}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      this.waiters.add(waiter);
    });
  }

  /** Waits for the subscription to end (error or complete). */
  async ended(timeoutMs = 10_000): Promise<void> {
    if (this.done) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the subscription did not end within ${timeoutMs} ms; messages: ${JSON.stringify(this.messages)}`)), timeoutMs);
      const waiter = () => {
        if (!this.done) return;
        clearTimeout(timer);
        this.waiters.delete(waiter);
        resolve();
      };
      this.waiters.add(waiter);
    });
  }

  stop(): void {
    this.unsubscribe();
  }
}

export const JOB_CHANGE = `type eventId jobId tenantId stepId stepName status at replayed
  job { id status pipeline steps { id name status attemptCount } }`;

/** A promise and the function that resolves it: a gate a step waits on. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}
