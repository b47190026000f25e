// What one request may cost. Three limits, each with its own error code:
//   - depth (QUERY_TOO_DEEP): fields nested in fields, fragments expanded; introspection (__schema, __type,
//     __typename) does not count, so GraphiQL keeps working;
//   - cost (QUERY_TOO_COSTLY): the most rows the query could return. Each connection counts its page size
//     multiplied by the page sizes of the connections around it (jobs(first: 50) { steps(first: 10) } = 50 + 500).
//     A page size given by a variable counts as the maximum page; a connection without first/last as the default;
//   - page size (INVALID_PAGE_SIZE): `first`/`last` at most maxPage; without either a connection returns the
//     default page. `offset` is not offered: pages are cursor-based (after/before), which stay fast deep in a table.
// Depth and cost are validation rules: a query over a limit is refused before anything runs. The body size limit is
// the HTTP server's (http.ts) and the websocket's.
import {
  GraphQLError, getNamedType, isInterfaceType, isObjectType, Kind,
  type ASTVisitor, type FieldNode, type FragmentDefinitionNode, type GraphQLCompositeType, type GraphQLNamedType,
  type OperationDefinitionNode, type SelectionSetNode, type ValidationContext, type ValidationRule,
} from 'postgraphile/graphql';
import { access, constant, lambda, type ConnectionStep, type FieldArg, type Step } from 'postgraphile/grafast';
import type { ServerLimits } from './config.ts';
import { clientError } from './errors.ts';

interface Measure {
  depth: number;
  cost: number;
}

function pageOf(field: FieldNode, limits: ServerLimits): number {
  let page: number | undefined;
  for (const arg of field.arguments ?? []) {
    if (arg.name.value !== 'first' && arg.name.value !== 'last') continue;
    const n = arg.value.kind === Kind.INT ? Number(arg.value.value) : arg.value.kind === Kind.NULL ? limits.defaultPage : limits.maxPage;
    page = Math.max(page ?? 0, n);
  }
  return page ?? limits.defaultPage;
}

function measure(context: ValidationContext, selectionSet: SelectionSetNode, parent: GraphQLNamedType | undefined,
  depth: number, multiplier: number, limits: ServerLimits, fragments: Set<string>): Measure {
  const result: Measure = { depth, cost: 0 };
  const fields = parent && (isObjectType(parent) || isInterfaceType(parent)) ? parent.getFields() : undefined;
  for (const selection of selectionSet.selections) {
    let inner: Measure | undefined;
    if (selection.kind === Kind.FIELD) {
      if (selection.name.value.startsWith('__')) continue;
      const def = fields?.[selection.name.value];
      let m = multiplier;
      if (def?.args.some((a) => a.name === 'first')) {
        m = multiplier * pageOf(selection, limits);
        result.cost += m;
      }
      inner = selection.selectionSet
        ? measure(context, selection.selectionSet, def ? getNamedType(def.type) : undefined, depth + 1, m, limits, fragments)
        : { depth: depth + 1, cost: 0 };
    } else if (selection.kind === Kind.INLINE_FRAGMENT) {
      const type = selection.typeCondition ? context.getSchema().getType(selection.typeCondition.name.value) : parent;
      inner = measure(context, selection.selectionSet, type ?? undefined, depth, multiplier, limits, fragments);
    } else {
      const name = selection.name.value;
      const fragment: FragmentDefinitionNode | null | undefined = context.getFragment(name);
      if (!fragment || fragments.has(name)) continue; // unknown or cyclic: other rules report it
      fragments.add(name);
      const type = context.getSchema().getType(fragment.typeCondition.name.value) as GraphQLCompositeType | undefined;
      inner = measure(context, fragment.selectionSet, type, depth, multiplier, limits, fragments);
      fragments.delete(name);
    }
    result.depth = Math.max(result.depth, inner.depth);
    result.cost += inner.cost;
  }
  return result;
}

/** Validation rule enforcing maxDepth and maxCost on every operation (HTTP and websocket). */
export function queryLimitsRule(limits: ServerLimits): ValidationRule {
  return (context: ValidationContext): ASTVisitor => ({
    OperationDefinition(node: OperationDefinitionNode) {
      const schema = context.getSchema();
      const root = node.operation === 'query' ? schema.getQueryType() : node.operation === 'mutation' ? schema.getMutationType() : schema.getSubscriptionType();
      const { depth, cost } = measure(context, node.selectionSet, root ?? undefined, 0, 1, limits, new Set());
      if (depth > limits.maxDepth) {
        context.reportError(new GraphQLError(
          `the query is ${depth} fields deep; the limit is ${limits.maxDepth} (BALLAST_GRAPHQL_MAX_DEPTH): split it into several queries`,
          { nodes: [node], extensions: { code: 'QUERY_TOO_DEEP', depth, maxDepth: limits.maxDepth } }));
      }
      if (cost > limits.maxCost) {
        context.reportError(new GraphQLError(
          `the query could return up to ${cost} rows; the limit is ${limits.maxCost} (BALLAST_GRAPHQL_MAX_COST): ask for smaller pages (first/last) or fewer nested connections`,
          { nodes: [node], extensions: { code: 'QUERY_TOO_COSTLY', cost, maxCost: limits.maxCost } }));
      }
    },
  });
}

/** The page a connection reads: last wins over first (first carries the default); before alone reads backwards. */
export function pageFor(first: unknown, last: unknown, before: unknown, limits: ServerLimits): { first: number | null; last: number | null } {
  const check = (name: string, n: unknown): number => {
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > limits.maxPage) {
      throw clientError('INVALID_PAGE_SIZE', `${name} must be between 0 and ${limits.maxPage}; got ${String(n)}`, { maxPage: limits.maxPage });
    }
    return n;
  };
  if (last !== null && last !== undefined) return { first: null, last: check('last', last) };
  if (before !== null && before !== undefined) return { first: null, last: limits.defaultPage };
  return { first: check('first', first ?? limits.defaultPage), last: null };
}

type ArgSpec = { type: unknown; description?: string; defaultValue?: unknown; applyPlan?: unknown; [key: string]: unknown };

/**
 * Caps first/last of every connection and gives `first` a default. `last` and `before` are applied before `first`
 * (argument order decides), so `first`'s plan sees them and sets both first and last from the three values.
 */
export function pageSizePlugin(limits: ServerLimits): GraphileConfig.Plugin {
  const lastOf = new WeakMap<Step, Step>();
  const applyLast = (_: Step, $connection: ConnectionStep<any, any, any, any>, arg: FieldArg) => {
    lastOf.set($connection, arg.getRaw());
  };
  const applyFirst = (_: Step, $connection: ConnectionStep<any, any, any, any>, arg: FieldArg) => {
    const $last = lastOf.get($connection) ?? constant(null);
    const $before = $connection.getBefore() ?? constant(null);
    const $page = lambda([arg.getRaw(), $last, $before], ([first, last, before]) => pageFor(first, last, before, limits));
    $connection.setFirst(access($page, 'first'));
    $connection.setLast(access($page, 'last'));
  };
  return {
    name: 'BallastPageSizePlugin',
    version: '1.0.0',
    description: 'first/last capped at a maximum, a default page size, no offset pagination',
    after: ['PgFirstLastBeforeAfterArgsPlugin'],
    schema: {
      hooks: {
        GraphQLObjectType_fields_field_args(args, _build, context) {
          if (!context.scope.isPgFieldConnection || !('first' in args)) return args;
          const { first, last, before, offset: _offset, ...rest } = args as Record<string, ArgSpec>;
          const out: Record<string, ArgSpec> = {};
          if (last) out.last = { ...last, applyPlan: applyLast };
          if (before) out.before = before;
          out.first = {
            ...first!,
            defaultValue: limits.defaultPage,
            description: `Read the first \`n\` values (at most ${limits.maxPage}; ${limits.defaultPage} when neither first nor last is given).`,
            applyPlan: applyFirst,
          };
          return Object.assign(out, rest) as typeof args;
        },
      },
    },
  };
}
