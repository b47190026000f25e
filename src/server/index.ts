// The GraphQL API (PostGraphile 5) as one call: startServer({ connectionString }) → { url, stop() }.
// GraphQL over HTTP at /graphql, graphql-ws subscriptions on the same path, /health, and Ruru at /graphiql outside
// production. See docs/graphql.md for the API itself.
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { postgraphile } from 'postgraphile';
import { grafserv } from 'postgraphile/grafserv/node';
import { createPool } from '../db/api.ts';
import { createLogger } from '../log.ts';
import { Authenticator } from './auth.ts';
import { serverSettings, type JwtSettings, type ServerLimits, type ServerSettings } from './config.ts';
import { EventHub } from './live/hub.ts';
import { TokenHub } from './live/tokens.ts';
import type { LiveLimits } from './live/connection.ts';
import { LiveProtocol } from './live/protocol.ts';
import { SubscriptionCompiler } from './live/selection.ts';
import { queryLimitsRule } from './limits.ts';
import { createHttpServer } from './http.ts';
import { CallerRegistry, makePreset } from './preset.ts';
import { attachWebSockets } from './ws.ts';

export { mintToken, parseDuration, pgSettingsFor, type ApiRole, type Caller } from './auth.ts';
export { serverSettings, ConfigError, isProduction } from './config.ts';

export interface StartServerOptions {
  /** Postgres for the API: the owner of the schemas, or a login that is a member of the ballast_* roles. */
  connectionString: string;
  /** Port (0: any free one). Default BALLAST_GRAPHQL_PORT or 5678. */
  port?: number;
  host?: string;
  /** Ruru at /graphiql. Default: on unless NODE_ENV=production. */
  graphiql?: boolean;
  /** Who may introspect (default: BALLAST_GRAPHQL_INTROSPECTION, else authenticated; off in production). */
  introspection?: 'all' | 'authenticated' | 'off';
  limits?: Partial<ServerLimits>;
  jwt?: Partial<JwtSettings>;
  /** Connections of the API's pool (default 10). */
  poolSize?: number;
  /** Connections for subscriptions' catch-up reads (default 3). */
  livePoolSize?: number;
  /** When a subscriber is too slow (default: BALLAST_LIVE_MAX_BUFFERED / BALLAST_LIVE_MAX_QUEUED, 4 MiB / 10,000). */
  liveLimits?: Partial<LiveLimits>;
  /** graphql-ws ping interval (default 12 s). */
  keepAliveMs?: number;
  log?: Logger;
}

export interface BallastServer {
  /** http://host:port/graphql */
  url: string;
  /** ws://host:port/graphql */
  wsUrl: string;
  port: number;
  settings: ServerSettings;
  /** Subscriptions currently open (for tests and metrics). */
  subscriptions(): number;
  /** The fan-out of live events (tests: idle(), poke(), groups). */
  hub: EventHub;
  stop(): Promise<void>;
}

/** The port of the API cannot be used (EADDRINUSE, EACCES): says which port and how to choose another. */
export class PortInUseError extends Error {
  readonly code: string;
  readonly hint = 'set BALLAST_GRAPHQL_PORT to a free port (0 picks any free one), or stop the program that holds it';
  constructor(message: string, code: string, cause: unknown) {
    super(message, { cause });
    this.name = 'PortInUseError';
    this.code = code;
  }
}

function listenError(err: NodeJS.ErrnoException, port: number, host: string | undefined): Error {
  const where = `${host ?? '0.0.0.0'}:${port}`;
  if (err.code === 'EADDRINUSE') return new PortInUseError(`port ${port} of the GraphQL API is in use (${where}; another \`npm start\` or \`ballast serve\`?)`, 'port_in_use', err);
  if (err.code === 'EACCES') return new PortInUseError(`port ${port} of the GraphQL API may not be used by this user (${where})`, 'port_not_allowed', err);
  if (err.code === 'EADDRNOTAVAIL') return new PortInUseError(`the GraphQL API cannot listen on ${where}: no such address here (BALLAST_GRAPHQL_HOST)`, 'address_not_available', err);
  return err;
}

export async function startServer(opts: StartServerOptions): Promise<BallastServer> {
  const settings = serverSettings({
    ...(opts.port !== undefined ? { port: opts.port } : {}),
    ...(opts.host !== undefined ? { host: opts.host } : {}),
    ...(opts.graphiql !== undefined ? { graphiql: opts.graphiql } : {}),
    ...(opts.introspection !== undefined ? { introspection: opts.introspection } : {}),
    ...(opts.limits ? { limits: opts.limits } : {}),
    ...(opts.jwt ? { jwt: opts.jwt } : {}),
  });
  const log = (opts.log ?? createLogger()).child({ component: 'graphql' });
  const pool = createPool(opts.connectionString, { max: opts.poolSize ?? 10, applicationName: 'ballast-graphql', log });
  const cleanup: (() => Promise<unknown>)[] = [() => pool.end()];
  const undo = async () => {
    for (const fn of cleanup.reverse()) await fn().catch(() => {});
  };
  try {
    const { rows } = await pool.query<{ ok: boolean }>(`select to_regclass('ballast.jobs') is not null as ok`);
    if (!rows[0]?.ok) throw new Error('the database has no ballast schema: run `ballast migrate` (or `npm run migrate`) first');

    const hub = new EventHub({ connectionString: opts.connectionString, log });
    await hub.start();
    cleanup.push(() => hub.stop());
    // Catch-up reads of subscriptions (resume, snapshot) have their own few connections: a storm of resubscriptions
    // waits for them instead of taking the connections HTTP queries need.
    const tokens = new TokenHub({ connectionString: opts.connectionString, log });
    cleanup.push(() => tokens.stop());
    const livePool = createPool(opts.connectionString, { max: opts.livePoolSize ?? 3, applicationName: 'ballast-graphql-live', log });
    cleanup.push(() => livePool.end());

    const authenticator = new Authenticator(settings.jwt);
    if (!authenticator.acceptsTokens) {
      log.warn('neither BALLAST_JWT_SECRET nor BALLAST_JWKS_URL is set: every caller is anonymous and can read nothing');
    }
    const callers = new CallerRegistry(authenticator);
    const pgl = postgraphile(makePreset({ pool, settings, callers, log }));
    cleanup.push(async () => pgl.release());
    const schema = await pgl.getSchema(); // build now: a broken schema fails the start, not the first request
    const serv = pgl.createServ(grafserv);
    cleanup.push(() => serv.release());
    const compiler = new SubscriptionCompiler(schema, [queryLimitsRule(settings.limits)]);
    const live = new LiveProtocol({
      feeds: { hub, tokens, pool: livePool, statementTimeoutMs: settings.limits.statementTimeoutMs },
      compiler: () => compiler,
      limits: {
        maxBufferedBytes: settings.limits.liveMaxBufferedBytes, maxQueued: settings.limits.liveMaxQueued,
        maxSubscriptions: settings.limits.liveMaxSubscriptionsPerSocket, ...opts.liveLimits,
      },
      log,
    });
    cleanup.push(async () => live.stopAll('SERVER_STOPPING', 'the server is shutting down; reconnect (with `after`) to another one'));

    const server = createHttpServer({ serv, callers, pool, hub, settings, log });
    const closeSockets = attachWebSockets(server, {
      serv, authenticator, callers, maxPayloadBytes: settings.limits.maxBodyBytes, maxSocketsPerCaller: settings.limits.liveMaxSocketsPerCaller, live, log,
      ...(opts.keepAliveMs !== undefined ? { keepAliveMs: opts.keepAliveMs } : {}),
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(listenError(err, settings.port, settings.host)));
      server.listen(settings.port, settings.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    cleanup.push(async () => {
      await closeSockets();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    });

    const port = (server.address() as AddressInfo).port;
    const host = settings.host && settings.host !== '0.0.0.0' && settings.host !== '::' ? settings.host : 'localhost';
    let stopped: Promise<void> | undefined;
    return {
      url: `http://${host}:${port}/graphql`,
      wsUrl: `ws://${host}:${port}/graphql`,
      port,
      settings,
      subscriptions: () => live.size,
      hub,
      stop: () => (stopped ??= undo()),
    };
  } catch (err) {
    await undo();
    throw err;
  }
}
