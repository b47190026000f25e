// The GraphQL server's settings: options passed to startServer win over the environment, the environment over the
// defaults. Every limit lives here so the documented tables (docs/graphql.md, docs/configuration.md) and the code cannot drift apart silently.

export interface ServerLimits {
  /** Deepest selection a query may have (fields nested in fields; introspection fields do not count). */
  maxDepth: number;
  /** Most rows a query may ask for: each connection's page size multiplied along its nesting, summed. */
  maxCost: number;
  /** Largest `first`/`last` a connection accepts. */
  maxPage: number;
  /** Page size of a connection asked without `first`/`last`. */
  defaultPage: number;
  /** Most fields an operation may have once its fragments are expanded (introspection included). */
  maxFields: number;
  /** Most aliased fields an operation may have once its fragments are expanded. */
  maxAliases: number;
  /** Most root fields an operation may select. */
  maxRootFields: number;
  /** Largest request body (HTTP) or websocket message, in bytes. */
  maxBodyBytes: number;
  /** Postgres statement_timeout of every GraphQL request, in milliseconds. */
  statementTimeoutMs: number;
  /** Bytes unsent in a websocket's buffer beyond which its subscriptions end with SUBSCRIBER_TOO_SLOW. */
  liveMaxBufferedBytes: number;
  /** Messages waiting for a websocket beyond which the same happens. */
  liveMaxQueued: number;
  /** Subscriptions one websocket may hold open. */
  liveMaxSubscriptionsPerSocket: number;
  /** Websockets one caller (a token's subject, else its role and tenant) may hold open on one API process. */
  liveMaxSocketsPerCaller: number;
}

export interface JwtSettings {
  /** HS256 shared secret (BALLAST_JWT_SECRET). */
  secret?: string | undefined;
  /** RS256/ES256 keys of an identity provider (BALLAST_JWKS_URL). */
  jwksUrl?: string | undefined;
  /** Required `iss` (BALLAST_JWT_ISSUER). */
  issuer?: string | undefined;
  /** Required `aud` (BALLAST_JWT_AUDIENCE). */
  audience?: string | undefined;
  /** Claim naming the role (BALLAST_JWT_ROLE_CLAIM, default `role`). */
  roleClaim: string;
  /** Claim naming the tenant (BALLAST_JWT_TENANT_CLAIM, default `tenant_id`). */
  tenantClaim: string;
}

export interface ServerSettings {
  port: number;
  host: string | undefined;
  /** Ruru (GraphiQL) at /graphiql; off in production. */
  graphiql: boolean;
  /** Who may query __schema/__type: all, authenticated callers (default outside production) or nobody (production). */
  introspection: 'all' | 'authenticated' | 'off';
  limits: ServerLimits;
  jwt: JwtSettings;
}

export class ConfigError extends Error {}

function intFrom(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    throw new ConfigError(`${name}=${raw} is not an integer >= ${min}; unset it or set e.g. ${name}=${fallback}`);
  }
  return n;
}

function textFrom(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const raw = env[name];
  return raw === undefined || raw === '' ? undefined : raw;
}

function introspectionFrom(env: NodeJS.ProcessEnv): ServerSettings['introspection'] {
  const raw = textFrom(env, 'BALLAST_GRAPHQL_INTROSPECTION');
  if (raw === undefined) return isProduction(env) ? 'off' : 'authenticated';
  if (raw !== 'all' && raw !== 'authenticated' && raw !== 'off') {
    throw new ConfigError(`BALLAST_GRAPHQL_INTROSPECTION=${raw} is not all, authenticated or off`);
  }
  return raw;
}

export function isProduction(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.NODE_ENV === 'production';
}

/** Settings from the environment (see docs/configuration.md), with `overrides` on top. */
export function serverSettings(overrides: Partial<Omit<ServerSettings, 'limits' | 'jwt'>> & { limits?: Partial<ServerLimits>; jwt?: Partial<JwtSettings> } = {},
  env: NodeJS.ProcessEnv = process.env): ServerSettings {
  const limits: ServerLimits = {
    maxDepth: intFrom(env, 'BALLAST_GRAPHQL_MAX_DEPTH', 12, 1),
    maxCost: intFrom(env, 'BALLAST_GRAPHQL_MAX_COST', 50_000, 1),
    maxPage: intFrom(env, 'BALLAST_GRAPHQL_MAX_PAGE', 100, 1),
    defaultPage: intFrom(env, 'BALLAST_GRAPHQL_DEFAULT_PAGE', 20, 1),
    maxFields: intFrom(env, 'BALLAST_GRAPHQL_MAX_FIELDS', 2_000, 10),
    maxAliases: intFrom(env, 'BALLAST_GRAPHQL_MAX_ALIASES', 100, 0),
    maxRootFields: intFrom(env, 'BALLAST_GRAPHQL_MAX_ROOT_FIELDS', 30, 1),
    maxBodyBytes: intFrom(env, 'BALLAST_GRAPHQL_MAX_BODY', 102_400, 1024),
    statementTimeoutMs: intFrom(env, 'BALLAST_GRAPHQL_STATEMENT_TIMEOUT_MS', 15_000, 1),
    liveMaxBufferedBytes: intFrom(env, 'BALLAST_LIVE_MAX_BUFFERED', 4 * 1024 * 1024, 65_536),
    liveMaxQueued: intFrom(env, 'BALLAST_LIVE_MAX_QUEUED', 10_000, 100),
    liveMaxSubscriptionsPerSocket: intFrom(env, 'BALLAST_LIVE_MAX_PER_SOCKET', 100, 1),
    liveMaxSocketsPerCaller: intFrom(env, 'BALLAST_LIVE_MAX_SOCKETS_PER_CALLER', 50, 1),
    ...overrides.limits,
  };
  if (limits.defaultPage > limits.maxPage) {
    throw new ConfigError(`the default page size (${limits.defaultPage}) is larger than the maximum (${limits.maxPage}); lower BALLAST_GRAPHQL_DEFAULT_PAGE or raise BALLAST_GRAPHQL_MAX_PAGE`);
  }
  const jwt: JwtSettings = {
    secret: textFrom(env, 'BALLAST_JWT_SECRET'),
    jwksUrl: textFrom(env, 'BALLAST_JWKS_URL'),
    issuer: textFrom(env, 'BALLAST_JWT_ISSUER'),
    audience: textFrom(env, 'BALLAST_JWT_AUDIENCE'),
    roleClaim: textFrom(env, 'BALLAST_JWT_ROLE_CLAIM') ?? 'role',
    tenantClaim: textFrom(env, 'BALLAST_JWT_TENANT_CLAIM') ?? 'tenant_id',
    ...overrides.jwt,
  };
  if (jwt.secret !== undefined && Buffer.byteLength(jwt.secret) < 32) {
    throw new ConfigError('BALLAST_JWT_SECRET is shorter than 32 bytes; HS256 needs a long random secret, e.g. `openssl rand -base64 48`');
  }
  return {
    port: overrides.port ?? intFrom(env, 'BALLAST_GRAPHQL_PORT', 5678, 0),
    // Loopback unless told otherwise: a development server is not offered to the network by accident.
    host: overrides.host ?? textFrom(env, 'BALLAST_GRAPHQL_HOST') ?? '127.0.0.1',
    graphiql: overrides.graphiql ?? !isProduction(env),
    introspection: overrides.introspection ?? introspectionFrom(env),
    limits,
    jwt,
  };
}
