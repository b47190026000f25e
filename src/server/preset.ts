// The PostGraphile preset: Amber (PostGraphile's defaults) narrowed to ballast's public surface (surface.ts), the
// verbs as mutations (mutations.ts), live changes as subscriptions (subscriptions.ts), limits (limits.ts), the
// caller's role and tenant as Postgres settings per request (auth.ts) and errors with stable codes (errors.ts).
import type pg from 'pg';
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import { PostGraphileAmberPreset } from 'postgraphile/presets/amber';
import { makePgService } from 'postgraphile/adaptors/pg';
import { ANONYMOUS, pgSettingsFor, type Authenticator, type Caller } from './auth.ts';
import type { ServerSettings } from './config.ts';
import { makeMaskError } from './errors.ts';
import { pageSizePlugin, queryLimitsRule } from './limits.ts';
import { MutationsPlugin } from './mutations.ts';
import { ScheduleMutationsPlugin } from './schedule-mutations.ts';
import { GateMutationsPlugin } from './gate-mutations.ts';
import { FairShareMutationsPlugin } from './fair-share-mutations.ts';
import { PromptMutationsPlugin } from './prompt-mutations.ts';
import { AlertMutationsPlugin } from './alert-mutations.ts';
import { EvalMutationsPlugin } from './eval-mutations.ts';
import { subscriptionsPlugin } from './subscriptions.ts';
import { tokenSubscriptionsPlugin } from './token-subscriptions.ts';
import { checkIntrospection } from './introspection.ts';
import { addErrorCodes, checkVariables, strictUtf8Body } from './request-checks.ts';
import { ruruConfig } from './ruru.ts';
import { SurfacePlugins } from './surface.ts';

declare global {
  namespace Grafast {
    interface Context {
      ballastCaller: Caller;
    }
  }
}

/**
 * Callers by request: http.ts (Authorization header) and ws.ts (connection params) verify the token before GraphQL
 * runs and store the result here, keyed by the Node request, so a refused token never reaches PostGraphile.
 */
export class CallerRegistry {
  private readonly byRequest = new WeakMap<IncomingMessage, Promise<Caller>>();
  private readonly authenticator: Authenticator;
  constructor(authenticator: Authenticator) {
    this.authenticator = authenticator;
  }

  /** The caller of an HTTP request (cached; throws AuthError). */
  ofHttp(req: IncomingMessage): Promise<Caller> {
    let caller = this.byRequest.get(req);
    if (!caller) {
      caller = this.authenticator.fromAuthorization(req.headers.authorization);
      caller.catch(() => {});
      this.byRequest.set(req, caller);
    }
    return caller;
  }

  setWebSocket(req: IncomingMessage, caller: Caller): void {
    this.byRequest.set(req, Promise.resolve(caller));
  }

  async ofRequestContext(ctx: Partial<Grafast.RequestContext>): Promise<Caller> {
    const any = ctx as { node?: { req?: IncomingMessage }; ws?: { request?: IncomingMessage; connectionParams?: Record<string, unknown> } };
    if (any.ws) {
      const known = any.ws.request ? this.byRequest.get(any.ws.request) : undefined;
      return known ?? this.authenticator.fromConnectionParams(any.ws.connectionParams);
    }
    if (any.node?.req) return this.ofHttp(any.node.req);
    return ANONYMOUS;
  }
}

export interface PresetOptions {
  pool: pg.Pool;
  settings: ServerSettings;
  callers: CallerRegistry;
  log: Logger;
}

export function makePreset(o: PresetOptions): GraphileConfig.Preset {
  const { limits } = o.settings;
  const LimitsPlugin: GraphileConfig.Plugin = {
    name: 'BallastQueryLimitsPlugin',
    version: '1.0.0',
    grafserv: {
      middleware: {
        setPreset(next, event) {
          event.validationRules.push(queryLimitsRule(limits));
          return next();
        },
        // Per request, before validation (whose results grafserv caches per document): introspection by caller.
        async processGraphQLRequestBody(next, event) {
          const ws = event.graphqlWsContext as { extra?: { request?: IncomingMessage }; connectionParams?: Record<string, unknown> } | undefined;
          const caller = await o.callers.ofRequestContext(ws
            ? { ws: { request: ws.extra?.request, connectionParams: ws.connectionParams } } as never
            : { node: { req: (event.request?.requestContext as { node?: { req?: IncomingMessage } } | undefined)?.node?.req } } as never);
          checkIntrospection(o.settings.introspection, caller, event.body.query, o.settings.jwt);
          checkVariables(event.body.variableValues);
          return next();
        },
        // Bodies are read as strict UTF-8, and every error of a response leaves with extensions.code (request-checks.ts).
        async processRequest(next, event) {
          strictUtf8Body(event.requestDigest);
          return addErrorCodes(await next());
        },
      },
    },
  };
  return {
    extends: [PostGraphileAmberPreset],
    // No Relay global object ids: every row has its own `id`.
    disablePlugins: ['NodePlugin'],
    plugins: [...SurfacePlugins, pageSizePlugin(limits), MutationsPlugin, ScheduleMutationsPlugin, GateMutationsPlugin, FairShareMutationsPlugin, PromptMutationsPlugin, AlertMutationsPlugin, EvalMutationsPlugin, subscriptionsPlugin(), tokenSubscriptionsPlugin(), LimitsPlugin],
    pgServices: [makePgService({ pool: o.pool, schemas: ['ballast'], pubsub: false })],
    grafast: {
      explain: false,
      async context(requestContext) {
        const caller = await o.callers.ofRequestContext(requestContext);
        return {
          ballastCaller: caller,
          pgSettings: { ...pgSettingsFor(caller), statement_timeout: String(limits.statementTimeoutMs) },
        };
      },
    },
    grafserv: {
      graphqlPath: '/graphql',
      graphiql: o.settings.graphiql,
      graphiqlPath: '/graphiql',
      graphiqlOnGraphQLGET: false,
      graphqlOverGET: false,
      // http.ts refuses larger bodies before they are read; this is grafserv's own guard, the same number.
      maxRequestLength: limits.maxBodyBytes,
      // ws.ts runs graphql-ws itself (to authenticate the connection), so grafserv's own websocket stays off.
      websockets: false,
      maskError: makeMaskError(o.log, o.settings.jwt),
    },
    // Ruru opens on a ballast example and says how to get and set a token (ruru.ts).
    ruru: ruruConfig(o.settings.jwt),
  };
}
