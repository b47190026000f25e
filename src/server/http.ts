// The HTTP side: /graphql (POST; the token is verified before PostGraphile sees the request, a bad one is a 401),
// /health for load balancers (Postgres answers `select 1` and the LISTEN connection is up), and, outside
// production, Ruru (GraphiQL) at /graphiql. Bodies over the limit are refused with 413 before they are read.
// POST /webhooks/<path>: inbound webhooks (./webhooks.ts).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { NodeGrafserv } from 'postgraphile/grafserv/node';
import { ping } from '../db/verbs.ts';
import { AuthError } from './auth.ts';
import type { ServerSettings } from './config.ts';
import { howToGetToken, TOKEN_PLACES } from './guidance.ts';
import type { EventHub } from './live/hub.ts';
import type { CallerRegistry } from './preset.ts';
import { handleWebhook, WEBHOOK_PREFIX } from './webhooks.ts';

export interface HttpOptions {
  serv: NodeGrafserv;
  callers: CallerRegistry;
  pool: pg.Pool;
  hub: EventHub;
  settings: ServerSettings;
  log: Logger;
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const buffer = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': String(buffer.length), ...headers });
  res.end(buffer);
}

const graphqlError = (message: string, code: string, extra: Record<string, unknown> = {}) => ({ errors: [{ message, extensions: { code, ...extra } }] });

async function health(o: HttpOptions, res: ServerResponse): Promise<void> {
  const started = Date.now();
  try {
    await Promise.race([
      ping(o.pool as never),
      new Promise((_, reject) => setTimeout(() => reject(new Error('Postgres did not answer within 2 s')), 2000).unref()),
    ]);
    if (!o.hub.isConnected) throw new Error('the LISTEN connection for subscriptions is down (reconnecting)');
    sendJson(res, 200, { status: 'ok', database: 'ok', subscriptions: 'ok', ms: Date.now() - started }, { 'cache-control': 'no-store' });
  } catch (err) {
    sendJson(res, 503, { status: 'unavailable', error: (err as Error).message }, { 'cache-control': 'no-store' });
  }
}

export function createHttpServer(o: HttpOptions): Server {
  const grafserv = o.serv.createHandler();
  const maxBytes = o.settings.limits.maxBodyBytes;
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/health' || path === '/healthz') {
      if (req.method !== 'GET' && req.method !== 'HEAD') return sendJson(res, 405, { status: 'use GET' }, { allow: 'GET, HEAD' });
      return health(o, res);
    }
    if (path?.startsWith(WEBHOOK_PREFIX)) return handleWebhook({ pool: o.pool, maxBytes, log: o.log }, req, res, path.slice(WEBHOOK_PREFIX.length));
    if (path === '/graphql') {
      const length = Number(req.headers['content-length'] ?? 0);
      if (length > maxBytes) {
        res.setHeader('connection', 'close');
        return sendJson(res, 413, graphqlError(`the request body is ${length} bytes; the limit is ${maxBytes} (BALLAST_GRAPHQL_MAX_BODY)`, 'PAYLOAD_TOO_LARGE', { maxBytes }));
      }
      try {
        await o.callers.ofHttp(req);
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
        // What was wrong with the token, then where a good one goes and how to get one.
        const message = `${err.message}. Send a valid token in ${TOKEN_PLACES}; ${howToGetToken(o.settings.jwt, ['client', 'operator'])}.`;
        return sendJson(res, 401, graphqlError(message, 'UNAUTHENTICATED'),
          { 'www-authenticate': `Bearer error="invalid_token", error_description="${err.message.replace(/"/g, "'")}"` });
      }
    }
    return grafserv(req, res);
  };
  return createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      o.log.error({ err }, 'unexpected error handling an HTTP request');
      if (!res.headersSent) sendJson(res, 500, graphqlError('internal server error', 'INTERNAL_SERVER_ERROR'));
      else res.end();
    });
  });
}
