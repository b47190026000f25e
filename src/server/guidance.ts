// What a refused caller should do next: which token an action needs and how to get one. Used by the FORBIDDEN and
// UNAUTHENTICATED messages (errors.ts, http.ts, introspection.ts, ws.ts, live/feeds.ts) and by Ruru's start page
// (ruru.ts), so they all name the same header and the same command. The needs are the rules of Postgres
// (migrations/0001_foundations.sql) in words; they name roles, never another tenant's data.
import type { ApiRole } from './auth.ts';
import type { JwtSettings } from './config.ts';

/** The command that mints a development token (HS256 with BALLAST_JWT_SECRET or .ballast/jwt-secret). */
export const MINT_COMMAND = 'npm run -s ballast -- token';
/** Where a token goes: the HTTP header, or the graphql-ws connection params. */
export const TOKEN_HEADER = 'Authorization: Bearer <token>';
export const TOKEN_PLACES = `the header "${TOKEN_HEADER}" (over graphql-ws: connectionParams { authorization: "Bearer <token>" })`;

type TokenRole = Exclude<ApiRole, 'anonymous'>;

export interface Need {
  /** The roles whose tokens may do it. */
  roles: TokenRole[];
  /** What kind of token it needs, in words. */
  text: string;
}

const mintArgs = (role: TokenRole) => (role === 'client' ? '--role client --tenant <tenant>' : `--role ${role}`);

/** How to get a token of one of `roles` on a server with these JWT settings. */
export function howToGetToken(jwt: Pick<JwtSettings, 'secret' | 'jwksUrl'> | undefined, roles: TokenRole[] = ['operator']): string {
  const mint = `mint one with ${roles.map((r) => `\`${MINT_COMMAND} ${mintArgs(r)}\``).join(' or ')}`;
  if (!jwt) return `${mint} (development), or get one from your identity provider`;
  if (jwt.secret && jwt.jwksUrl) return `${mint}, or get one from your identity provider`;
  if (jwt.secret) return mint;
  if (jwt.jwksUrl) return 'get one from your identity provider (the server checks it against BALLAST_JWKS_URL)';
  return 'this server accepts no token yet: start it with BALLAST_JWT_SECRET or BALLAST_JWKS_URL set';
}

const READ: Need = { roles: ['client', 'operator', 'reporter'], text: 'a token: a client token reads its own tenant, an operator or reporter token every tenant' };

/** The token each mutation needs; every query field is a read (READ), but those of QUERY_NEEDS. */
const MUTATION_NEEDS: Record<string, Need> = {
  submitJob: { roles: ['client', 'operator'], text: 'a client token of the tenant it submits for, or an operator token (any tenant)' },
  submitJobs: { roles: ['client', 'operator'], text: 'a client token of the tenant it submits for, or an operator token (any tenant)' },
  cancelJob: { roles: ['client', 'operator'], text: "a client token of the job's tenant, or an operator token" },
  sendEvent: { roles: ['client', 'operator'], text: 'a client token of the tenant whose steps wait for the key, or an operator token' },
  replayStep: { roles: ['operator'], text: 'an operator token' },
  replayJob: { roles: ['operator'], text: 'an operator token' },
  resolveReview: { roles: ['operator'], text: 'an operator token' },
  setSchedule: { roles: ['client', 'operator'], text: "a client token of the schedule's tenant, or an operator token (any tenant)" },
  pauseSchedule: { roles: ['client', 'operator'], text: "a client token of the schedule's tenant, or an operator token" },
  resumeSchedule: { roles: ['client', 'operator'], text: "a client token of the schedule's tenant, or an operator token" },
  deleteSchedule: { roles: ['client', 'operator'], text: "a client token of the schedule's tenant, or an operator token" },
  pauseKey: { roles: ['operator'], text: 'an operator token' },
  resumeKey: { roles: ['operator'], text: 'an operator token' },
  setLimit: { roles: ['operator'], text: 'an operator token' },
  deleteLimit: { roles: ['operator'], text: 'an operator token' },
  setFairShare: { roles: ['operator'], text: 'an operator token' },
  stopFairSharing: { roles: ['operator'], text: 'an operator token' },
  createPromptVersion: { roles: ['operator'], text: 'an operator token' },
  setPromptLabel: { roles: ['operator'], text: 'an operator token' },
  setPromptCanary: { roles: ['operator'], text: 'an operator token' },
  clearPromptCanary: { roles: ['operator'], text: 'an operator token' },
};

/** The reads a client token may not do (the others are READ). */
const QUERY_NEEDS: Record<string, Need> = {
  pauses: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
  pause: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
  limits: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
  limit: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
  gateHistory: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
  gateHistoryEntry: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
  fairShares: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
  fairShare: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
  promptLabels: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
  promptLabel: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
  promptLabelHistory: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
  promptLabelHistoryEntry: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
  comparePromptArms: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
  modelCacheSettings: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
  modelCacheSetting: { roles: ['operator', 'reporter'], text: 'an operator or reporter token' },
};

/** What the root field `field` needs (a read when it is not a mutation). */
export function needOf(field: string | undefined): Need & { field: string } {
  const need = (field !== undefined && (MUTATION_NEEDS[field] ?? QUERY_NEEDS[field])) || READ;
  return { ...need, field: field ?? 'this request' };
}

/** "<field> needs <token>, sent in <places>; <how to get one>." */
export function whatToDo(field: string | undefined, jwt: Pick<JwtSettings, 'secret' | 'jwksUrl'> | undefined): string {
  const need = needOf(field);
  return `${need.field} needs ${need.text}, sent in ${TOKEN_PLACES}; ${howToGetToken(jwt, need.roles)}.`;
}
