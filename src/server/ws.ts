// graphql-ws on the /graphql path, run here rather than by grafserv so that the connection is authenticated when
// it opens: the token in the connection params (`{ authorization: "Bearer <jwt>" }`, or the upgrade request's
// Authorization header) is verified in onConnect; a forged or expired token, or none (anonymous callers can read
// nothing, so they get no socket), closes the socket with 4403 and the reason; a caller already holding
// maxSocketsPerCaller sockets gets 4429; a connection is closed (4403) when its token expires (however far away).
// Operations then run with that caller: subscriptions by live/protocol.ts (shared rendering, backpressure, at most
// BALLAST_LIVE_MAX_PER_SOCKET each), queries and mutations by graphql-ws.
import type { Server, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocketServer, type WebSocket } from 'ws';
import { CloseCode, handleProtocols, makeServer, type ServerOptions } from 'graphql-ws';
import { makeGraphQLWSConfig, type GrafservBase } from 'postgraphile/grafserv';
import { AuthError, type Authenticator, type Caller } from './auth.ts';
import type { CallerRegistry } from './preset.ts';
import type { LiveConnection } from './live/connection.ts';
import type { LiveProtocol } from './live/protocol.ts';
import { decodeUtf8, InvalidUtf8Error } from './utf8.ts';

export const CLOSE_FORBIDDEN = 4403;
// Close reasons are limited to 123 bytes: the command is named short (`ballast token`, i.e. npm run ballast -- token).
export const ANONYMOUS_REASON = 'Forbidden: a websocket needs a token: connectionParams { authorization: "Bearer <token>" } (`ballast token` mints one)';
export const EXPIRED_REASON = 'Forbidden: the token expired; reconnect with a new one (`ballast token` mints one)';
export const CLOSE_TOO_MANY = 4429;
/** RFC 6455: a message whose data is not consistent with its type (here: not UTF-8). */
export const CLOSE_INVALID_PAYLOAD = 1007;

/** setTimeout's longest delay (2^31 - 1 ms, 24.8 days); a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Calls `fn` at `at` (epoch ms), however far away, with timers of at most MAX_TIMER_MS; returns its cancel. */
function at(at: number, fn: () => void): () => void {
  let timer: NodeJS.Timeout;
  const arm = () => {
    const ms = at - Date.now();
    timer = ms > MAX_TIMER_MS ? setTimeout(arm, MAX_TIMER_MS) : setTimeout(fn, Math.max(0, ms));
  };
  arm();
  return () => clearTimeout(timer);
}

/** Who a caller is, for counting its sockets: the token's subject, else its role and tenant. */
const callerKey = (c: Caller) => c.subject ?? `${c.role}:${c.tenantId ?? ''}`;

interface Extra {
  socket: WebSocket;
  request: IncomingMessage;
}

export interface WebSocketOptions {
  serv: GrafservBase;
  authenticator: Authenticator;
  callers: CallerRegistry;
  maxPayloadBytes: number;
  /** Websockets one caller may hold open at once (4429 beyond). */
  maxSocketsPerCaller: number;
  /** Serves subscription operations (live/protocol.ts); graphql-ws gets everything else. */
  live: LiveProtocol;
  keepAliveMs?: number;
  log: Logger;
}

/** Handles websocket upgrades of /graphql on `server`; returns a function that closes every socket. */
export function attachWebSockets(server: Server, o: WebSocketOptions): () => Promise<void> {
  // maxPayload: a bigger frame closes the socket with 1009 (message too big) before it is buffered.
  // No permessage-deflate (ws's default for servers): compressing each message per socket would undo sharing its bytes.
  const wss = new WebSocketServer({ noServer: true, maxPayload: o.maxPayloadBytes, handleProtocols, perMessageDeflate: false });
  const live = new WeakMap<WebSocket, LiveConnection>();
  const socketsOf = new Map<string, number>();
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/graphql') {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  };
  server.on('upgrade', onUpgrade);

  const graphqlWs = makeServer<Record<string, unknown>, Extra>({
    ...(makeGraphQLWSConfig(o.serv) as ServerOptions<Record<string, unknown>, Extra>),
    connectionInitWaitTimeout: 10_000,
    async onConnect(ctx) {
      const { socket, request } = ctx.extra;
      const params = ctx.connectionParams;
      try {
        const hasParam = params && (params.authorization !== undefined || params.Authorization !== undefined || params.token !== undefined);
        const caller = hasParam
          ? await o.authenticator.fromConnectionParams(params)
          : await o.authenticator.fromAuthorization(request.headers.authorization);
        if (caller.role === 'anonymous') {
          // Anonymous callers can read nothing and subscribe to nothing: no socket for them to hold open.
          socket.close(CLOSE_FORBIDDEN, ANONYMOUS_REASON);
          return false;
        }
        const key = callerKey(caller);
        const open = socketsOf.get(key) ?? 0;
        if (open >= o.maxSocketsPerCaller) {
          socket.close(CLOSE_TOO_MANY, `Too many websockets for this caller (${open}); close some (BALLAST_LIVE_MAX_SOCKETS_PER_CALLER)`.slice(0, 120));
          return false;
        }
        socketsOf.set(key, open + 1);
        socket.once('close', () => {
          const n = (socketsOf.get(key) ?? 1) - 1;
          if (n > 0) socketsOf.set(key, n);
          else socketsOf.delete(key);
        });
        o.callers.setWebSocket(request, caller);
        const conn = live.get(socket);
        if (conn) o.live.acknowledged(conn, caller);
        if (caller.expiresAt !== null) {
          const cancel = at(caller.expiresAt * 1000, () => socket.close(CLOSE_FORBIDDEN, EXPIRED_REASON));
          socket.once('close', cancel);
        }
        return true;
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
        o.log.debug({ reason: err.message }, 'websocket connection refused');
        // Close reasons are limited to 123 bytes.
        socket.close(CLOSE_FORBIDDEN, `Forbidden: ${err.message}`.slice(0, 120));
        return false;
      }
    },
  });

  const keepAliveMs = o.keepAliveMs ?? 12_000;
  wss.on('connection', (socket: WebSocket, request: IncomingMessage) => {
    // A protocol error (too big a frame, bad framing) closes the socket by itself; it is the client's fault, not ours.
    socket.on('error', (err) => o.log.debug({ err: err.message }, 'websocket error'));
    const conn = o.live.opened(socket);
    live.set(socket, conn);
    let alive = true;
    socket.on('pong', () => (alive = true));
    const ping = setInterval(() => {
      if (!alive) return socket.terminate();
      alive = false;
      socket.ping();
    }, keepAliveMs);
    const closed = graphqlWs.opened({
      protocol: socket.protocol,
      send: (data) => new Promise<void>((resolve, reject) => socket.send(data, (err) => (err ? reject(err) : resolve()))),
      close: (code, reason) => socket.close(code, reason),
      onMessage: (cb) => socket.on('message', (message, isBinary) => {
        // ws refuses a text frame that is not UTF-8 itself (close 1007, RFC 6455 8.1); a binary frame is decoded here
        // as strictly, rather than with U+FFFD in place of bad bytes, and closes the socket the same way.
        let text: string;
        try {
          // binaryType is ws's default, 'nodebuffer': a message is one Buffer, however many frames it came in.
          text = isBinary ? decodeUtf8(message as Buffer, 'the message') : String(message);
        } catch (err) {
          if (!(err instanceof InvalidUtf8Error)) throw err;
          socket.close(CLOSE_INVALID_PAYLOAD, `Invalid UTF-8 at byte ${err.offset} of a binary message; send UTF-8`);
          return;
        }
        if (o.live.handle(conn, text)) return;
        cb(text).catch((err: Error) => {
          o.log.error({ err }, 'graphql-ws message handling failed');
          socket.close(CloseCode.InternalServerError, 'Internal server error');
        });
      }),
    }, { socket, request });
    socket.once('close', (code, reason) => {
      clearInterval(ping);
      o.live.closed(conn);
      void closed(code, String(reason));
    });
  });

  return async () => {
    server.off('upgrade', onUpgrade);
    for (const client of wss.clients) client.close(1001, 'server shutting down');
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  };
}
