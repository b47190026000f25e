// What one request may cost. Each limit has its own error code, and all are validation rules: an operation over a
// limit is refused before anything is planned or run.
//   - depth (QUERY_TOO_DEEP): fields nested in fields, fragments expanded; introspection (__schema, __type,
//     __typename) does not count, so GraphiQL keeps working;
//   - cost (QUERY_TOO_COSTLY): the most rows the query could return. Each connection counts its page size
//     multiplied by the page sizes of the connections around it (jobs(first: 50) { steps(first: 10) } = 50 + 500).
//     A page size given by a variable counts as the maximum page; a connection without first/last as the default;
//     `first: 0` as 1 (its query still runs);
//   - size (QUERY_TOO_LARGE): fields once fragments are expanded, introspection included: what the planner works
//     through. Fragments are measured once each and reused at every spread, so a document that doubles at every
//     spread costs linear time to measure and is refused;
//   - aliases (TOO_MANY_ALIASES) and root fields (TOO_MANY_ROOT_FIELDS): the same field asked many times over. Root
//     fields are the operation's response keys once fragments are expanded: a spread at the root brings its fields;
//   - page size (INVALID_PAGE_SIZE): `first`/`last` at most maxPage; without either a connection returns the
//     default page. `offset` is not offered: pages are cursor-based (after/before), which stay fast deep in a table.
// The body size limit is the HTTP server's (http.ts) and the websocket's.
import {
  GraphQLError, getNamedType, isInterfaceType, isObjectType, Kind,
  type ASTVisitor, type FieldNode, type FragmentDefinitionNode, type GraphQLCompositeType, type GraphQLNamedType,
  type OperationDefinitionNode, type SelectionSetNode, type ValidationContext, type ValidationRule,
} from 'postgraphile/graphql';
import { access, constant, lambda, type ConnectionStep, type FieldArg, type Step } from 'postgraphile/grafast';
import type { ServerLimits } from './config.ts';
import { clientError } from './errors.ts';

interface Measure {
  /** Deepest field nesting (introspection not counted). */
  depth: number;
  /** Rows the query could return (introspection not counted). */
  cost: number;
  /** Fields in the document once fragments are expanded (introspection counted): the planner's work. */
  fields: number;
  /** Aliased fields once fragments are expanded. */
  aliases: number;
}

function pageOf(field: FieldNode, limits: ServerLimits): number {
  let page: number | undefined;
  for (const arg of field.arguments ?? []) {
    if (arg.name.value !== 'first' && arg.name.value !== 'last') continue;
    const n = arg.value.kind === Kind.INT ? Number(arg.value.value) : arg.value.kind === Kind.NULL ? limits.defaultPage : limits.maxPage;
    page = Math.max(page ?? 0, n);
  }
  // `first: 0` still runs the connection's query (totalCount, pageInfo): it costs at least one row.
  return Math.max(1, page ?? limits.defaultPage);
}

const INTROSPECTION_TYPES: Record<string, string> = { __schema: '__Schema', __type: '__Type' };

/**
 * Walks a selection set once. A fragment is measured once per document (at depth 0, multiplier 1) and its measure
 * reused at every spread: depth adds, cost scales with the multiplier (every cost inside is a multiple of it), fields
 * and aliases add. So a document whose spreads double at every level (twenty fragments each spreading the next twice,
 * under 1 KB) is measured in linear time, and its expanded size (2^20 fields) is refused instead of planned.
 */
class Measurer {
  private readonly memo = new Map<string, Measure>();
  private readonly open = new Set<string>();
  private readonly context: ValidationContext;
  private readonly limits: ServerLimits;

  constructor(context: ValidationContext, limits: ServerLimits) {
    this.context = context;
    this.limits = limits;
  }

  measure(selectionSet: SelectionSetNode, parent: GraphQLNamedType | undefined, depth: number, multiplier: number, introspection: boolean): Measure {
    const result: Measure = { depth, cost: 0, fields: 0, aliases: 0 };
    const schema = this.context.getSchema();
    const fields = parent && (isObjectType(parent) || isInterfaceType(parent)) ? parent.getFields() : undefined;
    for (const selection of selectionSet.selections) {
      let inner: Measure;
      if (selection.kind === Kind.FIELD) {
        const name = selection.name.value;
        result.fields += 1;
        if (selection.alias) result.aliases += 1;
        const intro = introspection || name.startsWith('__');
        const def = fields?.[name];
        let m = multiplier;
        if (!intro && def?.args.some((a) => a.name === 'first')) {
          m = multiplier * pageOf(selection, this.limits);
          result.cost += m;
        }
        const type = def ? getNamedType(def.type) : INTROSPECTION_TYPES[name] ? schema.getType(INTROSPECTION_TYPES[name]!) ?? undefined : undefined;
        inner = selection.selectionSet
          ? this.measure(selection.selectionSet, type, intro ? depth : depth + 1, m, intro)
          : { depth: intro ? depth : depth + 1, cost: 0, fields: 0, aliases: 0 };
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        const type = selection.typeCondition ? schema.getType(selection.typeCondition.name.value) : parent;
        inner = this.measure(selection.selectionSet, type ?? undefined, depth, multiplier, introspection);
      } else {
        const unit = this.fragment(selection.name.value, introspection);
        if (!unit) continue; // unknown or cyclic: other rules report it
        inner = { depth: depth + unit.depth, cost: multiplier * unit.cost, fields: unit.fields, aliases: unit.aliases };
      }
      result.depth = Math.max(result.depth, inner.depth);
      result.cost += inner.cost;
      result.fields += inner.fields;
      result.aliases += inner.aliases;
    }
    return result;
  }

  private readonly keysMemo = new Map<string, Set<string>>();

  /**
   * The response keys (alias, else name) of a selection set's own fields, inline fragments and spread fragments
   * expanded: the root fields of an operation, as they are executed (the same key twice runs once). Each fragment's
   * keys are collected once (memoised), so spreads that double at every level cost linear time here too.
   */
  responseKeys(selectionSet: SelectionSetNode, into = new Set<string>()): Set<string> {
    for (const selection of selectionSet.selections) {
      if (selection.kind === Kind.FIELD) into.add(selection.alias?.value ?? selection.name.value);
      else if (selection.kind === Kind.INLINE_FRAGMENT) this.responseKeys(selection.selectionSet, into);
      else {
        const name = selection.name.value;
        let keys = this.keysMemo.get(name);
        if (!keys) {
          const fragment = this.context.getFragment(name);
          if (!fragment || this.open.has(`k:${name}`)) continue; // unknown or cyclic: other rules report it
          this.open.add(`k:${name}`);
          keys = this.responseKeys(fragment.selectionSet);
          this.open.delete(`k:${name}`);
          this.keysMemo.set(name, keys);
        }
        for (const k of keys) into.add(k);
      }
    }
    return into;
  }

  /** A fragment's measure at depth 0 and multiplier 1 (memoised); undefined for an unknown or cyclic one. */
  private fragment(name: string, introspection: boolean): Measure | undefined {
    const key = `${introspection ? 'i' : 'q'}:${name}`;
    const known = this.memo.get(key);
    if (known) return known;
    const fragment: FragmentDefinitionNode | null | undefined = this.context.getFragment(name);
    if (!fragment || this.open.has(key)) return undefined;
    this.open.add(key);
    const type = this.context.getSchema().getType(fragment.typeCondition.name.value) as GraphQLCompositeType | undefined;
    const m = this.measure(fragment.selectionSet, type, 0, 1, introspection);
    this.open.delete(key);
    this.memo.set(key, m);
    return m;
  }
}

/** Validation rule enforcing maxDepth, maxCost, maxFields, maxAliases and maxRootFields on every operation. */
export function queryLimitsRule(limits: ServerLimits): ValidationRule {
  return (context: ValidationContext): ASTVisitor => {
    const measurer = new Measurer(context, limits);
    return {
      OperationDefinition(node: OperationDefinitionNode) {
        const schema = context.getSchema();
        const root = node.operation === 'query' ? schema.getQueryType() : node.operation === 'mutation' ? schema.getMutationType() : schema.getSubscriptionType();
        const { depth, cost, fields, aliases } = measurer.measure(node.selectionSet, root ?? undefined, 0, 1, false);
        const rootFields = measurer.responseKeys(node.selectionSet).size;
        const refuse = (message: string, code: string, extensions: Record<string, unknown>) =>
          context.reportError(new GraphQLError(message, { nodes: [node], extensions: { code, ...extensions } }));
        if (rootFields > limits.maxRootFields) {
          refuse(`the operation selects ${rootFields} root fields (response keys, fragments expanded); the limit is ${limits.maxRootFields} (BALLAST_GRAPHQL_MAX_ROOT_FIELDS): send several requests`,
            'TOO_MANY_ROOT_FIELDS', { rootFields, maxRootFields: limits.maxRootFields });
        }
        if (fields > limits.maxFields) {
          refuse(`the operation has ${fields} fields once its fragments are expanded; the limit is ${limits.maxFields} (BALLAST_GRAPHQL_MAX_FIELDS): select fewer fields or spread fragments less often`,
            'QUERY_TOO_LARGE', { fields, maxFields: limits.maxFields });
        }
        if (aliases > limits.maxAliases) {
          refuse(`the operation has ${aliases} aliased fields once its fragments are expanded; the limit is ${limits.maxAliases} (BALLAST_GRAPHQL_MAX_ALIASES): send several requests`,
            'TOO_MANY_ALIASES', { aliases, maxAliases: limits.maxAliases });
        }
        if (depth > limits.maxDepth) {
          refuse(`the query is ${depth} fields deep; the limit is ${limits.maxDepth} (BALLAST_GRAPHQL_MAX_DEPTH): split it into several queries`,
            'QUERY_TOO_DEEP', { depth, maxDepth: limits.maxDepth });
        }
        if (cost > limits.maxCost) {
          refuse(`the query could return up to ${cost} rows; the limit is ${limits.maxCost} (BALLAST_GRAPHQL_MAX_COST): ask for smaller pages (first/last) or fewer nested connections`,
            'QUERY_TOO_COSTLY', { cost, maxCost: limits.maxCost });
        }
      },
    };
  };
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
