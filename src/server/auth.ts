// Who is calling: a JWT from the Authorization header (HTTP) or from the graphql-ws connection params becomes a
// Caller (role, tenant, subject), and a Caller becomes the Postgres settings of its requests: the role PostGraphile
// switches to (SET ROLE ballast_<role>), the tenant row-level security filters on, and the actor the audit trail
// records. Postgres enforces the rest (migrations/0001_foundations.sql), so psql users get the same isolation.
//
// Keys: HS256 with a shared secret (BALLAST_JWT_SECRET: development, services you run) and RS256/ES256 from an
// identity provider's JWKS (BALLAST_JWKS_URL). The token's own `alg` picks the key; `none` and unknown algorithms
// are refused. `exp` is required and checked; `iss`/`aud` when configured.
import { createRemoteJWKSet, decodeProtectedHeader, errors as joseErrors, jwtVerify, SignJWT, type JWTPayload } from 'jose';
import type { JwtSettings } from './config.ts';

export type ApiRole = 'anonymous' | 'client' | 'operator' | 'reporter';
export const API_ROLES: readonly ApiRole[] = ['client', 'operator', 'reporter'];

export interface Caller {
  role: ApiRole;
  /** The tenant a client acts for; an operator or reporter may name one (then sees all anyway, see 0001_foundations). */
  tenantId: string | null;
  /** The token's `sub`, recorded as `jwt:<sub>` in the audit trail. */
  subject: string | null;
  /** Token expiry (seconds since the epoch); websocket connections are closed when it passes. */
  expiresAt: number | null;
}

export const ANONYMOUS: Caller = Object.freeze({ role: 'anonymous', tenantId: null, subject: null, expiresAt: null });

/** A token that was presented but cannot be trusted or used. Reported as UNAUTHENTICATED (HTTP 401). */
export class AuthError extends Error {
  readonly code = 'UNAUTHENTICATED';
}

const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'EdDSA'];
const CLOCK_TOLERANCE_S = 5;

export class Authenticator {
  readonly settings: JwtSettings;
  private readonly secret: Uint8Array | undefined;
  private readonly jwks: ReturnType<typeof createRemoteJWKSet> | undefined;

  constructor(settings: JwtSettings) {
    this.settings = settings;
    this.secret = settings.secret === undefined ? undefined : new TextEncoder().encode(settings.secret);
    this.jwks = settings.jwksUrl === undefined ? undefined : createRemoteJWKSet(new URL(settings.jwksUrl));
  }

  /** True when some kind of token can be verified (otherwise every caller is anonymous). */
  get acceptsTokens(): boolean {
    return this.secret !== undefined || this.jwks !== undefined;
  }

  /** The caller of an `Authorization: Bearer <jwt>` header; anonymous without one. Throws AuthError. */
  async fromAuthorization(header: string | string[] | undefined | null): Promise<Caller> {
    const value = Array.isArray(header) ? header[0] : header;
    if (value === undefined || value === null || value.trim() === '') return ANONYMOUS;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(value);
    if (!m) throw new AuthError('the Authorization header must be "Bearer <token>"');
    return this.verify(m[1]!);
  }

  /** The caller of graphql-ws connection params: `{ authorization: "Bearer <jwt>" }` (or `Authorization`, or `token`). */
  async fromConnectionParams(params: Readonly<Record<string, unknown>> | undefined | null): Promise<Caller> {
    if (!params) return ANONYMOUS;
    const header = params.authorization ?? params.Authorization;
    if (typeof header === 'string') return this.fromAuthorization(header);
    if (typeof params.token === 'string') return this.verify(params.token);
    if (header !== undefined || params.token !== undefined) throw new AuthError('connection param authorization must be a string "Bearer <token>"');
    return ANONYMOUS;
  }

  async verify(token: string): Promise<Caller> {
    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw new AuthError('the token is not a JWT');
    }
    const options = {
      ...(this.settings.issuer ? { issuer: this.settings.issuer } : {}),
      ...(this.settings.audience ? { audience: this.settings.audience } : {}),
      requiredClaims: ['exp'],
      clockTolerance: CLOCK_TOLERANCE_S,
    };
    let payload: JWTPayload;
    try {
      if (alg === 'HS256') {
        if (!this.secret) throw new AuthError('HS256 tokens are not accepted: the server has no BALLAST_JWT_SECRET');
        ({ payload } = await jwtVerify(token, this.secret, { ...options, algorithms: ['HS256'] }));
      } else if (alg !== undefined && ASYMMETRIC.includes(alg)) {
        if (!this.jwks) throw new AuthError(`${alg} tokens are not accepted: the server has no BALLAST_JWKS_URL`);
        ({ payload } = await jwtVerify(token, this.jwks, { ...options, algorithms: ASYMMETRIC }));
      } else {
        throw new AuthError(`tokens signed with ${alg ?? 'no algorithm'} are not accepted (HS256 or RS256/ES256)`);
      }
    } catch (err) {
      throw err instanceof AuthError ? err : new AuthError(describeJoseError(err), { cause: err });
    }
    return this.callerOf(payload);
  }

  private callerOf(payload: JWTPayload): Caller {
    const rawRole = payload[this.settings.roleClaim];
    const roleName = typeof rawRole === 'string' ? rawRole.replace(/^ballast_/, '') : undefined;
    if (!roleName || !(API_ROLES as readonly string[]).includes(roleName)) {
      throw new AuthError(`the token's ${this.settings.roleClaim} claim must be one of ${API_ROLES.join(', ')} (got ${JSON.stringify(rawRole ?? null)})`);
    }
    const rawTenant = payload[this.settings.tenantClaim];
    if (rawTenant !== undefined && rawTenant !== null && (typeof rawTenant !== 'string' || rawTenant === '' || Buffer.byteLength(rawTenant, 'utf8') > 200)) {
      throw new AuthError(`the token's ${this.settings.tenantClaim} claim must be a non-empty string of at most 200 bytes of UTF-8`);
    }
    const tenantId = typeof rawTenant === 'string' ? rawTenant : null;
    if (roleName === 'client' && tenantId === null) {
      throw new AuthError(`a client token needs a ${this.settings.tenantClaim} claim: clients act for one tenant`);
    }
    return { role: roleName as ApiRole, tenantId, subject: typeof payload.sub === 'string' ? payload.sub : null, expiresAt: payload.exp ?? null };
  }
}

function describeJoseError(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'the token has expired';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'the token signature is invalid';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `the token's ${err.claim} claim is not accepted (${err.reason})`;
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'no key of the identity provider matches the token';
  if (err instanceof joseErrors.JOSEError) return `the token is not valid (${err.code})`;
  return `the token could not be verified (${(err as Error).message})`;
}

/** The Postgres settings of a caller's requests (PostGraphile applies them with set_config(..., true)). */
export function pgSettingsFor(caller: Caller): Record<string, string> {
  return {
    role: `ballast_${caller.role}`,
    'ballast.tenant_id': caller.tenantId ?? '',
    'ballast.actor': caller.subject ? `jwt:${caller.subject}` : `jwt:${caller.role}`,
  };
}

export interface MintOptions {
  role: Exclude<ApiRole, 'anonymous'>;
  tenantId?: string | undefined;
  subject?: string | undefined;
  /** Lifetime in seconds (default one hour). */
  expiresInS?: number | undefined;
  issuer?: string | undefined;
  audience?: string | undefined;
  roleClaim?: string | undefined;
  tenantClaim?: string | undefined;
}

/** Signs an HS256 token for development and tests (`ballast token`). */
export async function mintToken(secret: string, opts: MintOptions): Promise<string> {
  const claims: Record<string, unknown> = { [opts.roleClaim ?? 'role']: opts.role };
  if (opts.tenantId !== undefined) claims[opts.tenantClaim ?? 'tenant_id'] = opts.tenantId;
  let jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + (opts.expiresInS ?? 3600));
  if (opts.subject) jwt = jwt.setSubject(opts.subject);
  if (opts.issuer) jwt = jwt.setIssuer(opts.issuer);
  if (opts.audience) jwt = jwt.setAudience(opts.audience);
  return jwt.sign(new TextEncoder().encode(secret));
}

/** "1h", "30m", "7d", "45s" or plain seconds → seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)\s*([smhd]?)$/.exec(text.trim());
  if (!m) throw new Error(`"${text}" is not a duration; use e.g. 30m, 1h, 7d or a number of seconds`);
  const n = Number(m[1]);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86_400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  return n * unit;
}
