// Who may introspect the schema (__schema, __type): BALLAST_GRAPHQL_INTROSPECTION = all | authenticated | off.
// Default: `authenticated` outside production (Ruru and codegen work with a token), `off` in production. __typename
// is never refused (clients need it). The decision depends on the caller, and grafserv caches validation per
// document, so it is not a validation rule: preset.ts checks each request's body (HTTP and websocket) in grafserv's
// processGraphQLRequestBody middleware, before validation, and refuses with INTROSPECTION_DISABLED.
import { Kind, parse, visit, type DocumentNode } from 'postgraphile/graphql';
import type { Caller } from './auth.ts';
import type { JwtSettings } from './config.ts';
import { clientError } from './errors.ts';
import { howToGetToken, TOKEN_PLACES } from './guidance.ts';

export type IntrospectionPolicy = 'all' | 'authenticated' | 'off';

/** Whether `caller` may introspect under `policy`. */
export const mayIntrospect = (policy: IntrospectionPolicy, caller: Caller) =>
  policy === 'all' || (policy === 'authenticated' && caller.role !== 'anonymous');

/** Whether `query` selects __schema or __type anywhere (a cheap text test first; parsed only when it may). */
export function introspects(query: string): boolean {
  if (!query.includes('__schema') && !query.includes('__type')) return false;
  let document: DocumentNode;
  try {
    document = parse(query, { maxTokens: 20_000 });
  } catch {
    return false; // unparseable: validation says so
  }
  let found = false;
  visit(document, {
    [Kind.FIELD](node) {
      if (node.name.value === '__schema' || node.name.value === '__type') found = true;
    },
  });
  return found;
}

/** Throws INTROSPECTION_DISABLED when `caller` may not run `query` under `policy`. */
export function checkIntrospection(policy: IntrospectionPolicy, caller: Caller, query: unknown, jwt?: Pick<JwtSettings, 'secret' | 'jwksUrl'>): void {
  if (typeof query !== 'string' || mayIntrospect(policy, caller) || !introspects(query)) return;
  throw clientError('INTROSPECTION_DISABLED', policy === 'off'
    ? 'introspection is off on this server (BALLAST_GRAPHQL_INTROSPECTION=off); the schema is documented in docs/graphql.md'
    : `introspection needs a token (BALLAST_GRAPHQL_INTROSPECTION=authenticated): send one in ${TOKEN_PLACES}; ${howToGetToken(jwt, ['operator', 'reporter'])}`,
  { policy, statusCode: 403 });
}
