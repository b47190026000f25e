// A subscription document, compiled once: parsed and validated against the API's schema (with the same limits as
// every other operation), its one root field and arguments resolved, and its selection reduced to a *shape*: the
// response keys, the fields behind them and their sub-selections, after fragments, aliases and @skip/@include.
//
// Every subscriber with the same shape (typically all the tabs of one dashboard) shares one rendering of each event:
// the hub projects the event through the shape and serialises it once (hub.ts), and the same bytes go to each socket.
// The values projected are the ones the schema's types declare (JobChange, JobSnapshot, StepSnapshot): plain
// JSON-ready objects built by feeds.ts, so projecting is a walk over the shape with no resolver to run.
import {
  GraphQLIncludeDirective, GraphQLSkipDirective, Kind, getArgumentValues, getDirectiveValues, getNamedType,
  getVariableValues, parse, specifiedRules, validate, GraphQLError,
  type DocumentNode, type FieldNode, type FragmentDefinitionNode, type GraphQLObjectType, type GraphQLSchema,
  type OperationDefinitionNode, type SelectionSetNode, type ValidationRule,
} from 'postgraphile/graphql';

/** One response key of a shape: the field it reads and, for objects, the shape of their own selection. */
export interface ShapeField {
  key: string;
  field: string;
  /** For `__typename`: the type's name. */
  typename?: string;
  sub?: Shape;
}
export type Shape = ShapeField[];

export interface CompiledSubscription {
  /** The root field: jobUpdated or tenantEvents. */
  field: string;
  /** Its response key (the alias, or the field name). */
  key: string;
  args: Record<string, unknown>;
  shape: Shape;
  /** Equal for subscriptions whose messages are byte for byte the same. */
  shapeKey: string;
}

export type CompileResult =
  | { kind: 'subscription'; value: CompiledSubscription }
  | { kind: 'errors'; errors: readonly GraphQLError[] }
  /** Not a subscription (a query or mutation over the socket): graphql-ws runs it as usual. */
  | { kind: 'other' };

interface Parsed {
  document: DocumentNode;
  errors: readonly GraphQLError[];
}

/** Documents remembered (parsed and validated); dashboards send the same few again and again. */
const CACHE_SIZE = 200;

export class SubscriptionCompiler {
  private readonly cache = new Map<string, Parsed>();
  private readonly schema: GraphQLSchema;
  private readonly rules: readonly ValidationRule[];

  constructor(schema: GraphQLSchema, extraRules: readonly ValidationRule[]) {
    this.schema = schema;
    this.rules = [...specifiedRules, ...extraRules];
  }

  compile(query: string, operationName: string | null | undefined, variables: Record<string, unknown> | null | undefined): CompileResult {
    let parsed = this.cache.get(query);
    if (parsed) {
      // Most recently used last, so the oldest goes first when the cache is full.
      this.cache.delete(query);
      this.cache.set(query, parsed);
    } else {
      parsed = this.parse(query);
      this.cache.set(query, parsed);
      if (this.cache.size > CACHE_SIZE) this.cache.delete(this.cache.keys().next().value!);
    }
    const operation = findOperation(parsed.document, operationName);
    if (!operation || operation.operation !== 'subscription') {
      return { kind: 'other' };
    }
    if (parsed.errors.length > 0) return { kind: 'errors', errors: parsed.errors };
    const coerced = getVariableValues(this.schema, operation.variableDefinitions ?? [], variables ?? {});
    if (coerced.errors) return { kind: 'errors', errors: coerced.errors };
    const vars = coerced.coerced;
    const fragments = fragmentsOf(parsed.document);
    const root = this.schema.getSubscriptionType()!;
    const fields = new Map<string, FieldNode[]>();
    collect(operation.selectionSet, root, vars, fragments, fields, new Set());
    // Validation allows exactly one root field in a subscription.
    const [key, nodes] = [...fields][0]!;
    const node = nodes[0]!;
    const def = root.getFields()[node.name.value]!;
    const args = getArgumentValues(def, node, vars);
    const shape = shapeOf(nodes, getNamedType(def.type) as GraphQLObjectType, vars, fragments);
    return { kind: 'subscription', value: { field: def.name, key, args, shape, shapeKey: JSON.stringify([key, shape]) } };
  }

  private parse(query: string): Parsed {
    let document: DocumentNode;
    try {
      document = parse(query, { maxTokens: 5000 });
    } catch (err) {
      return { document: { kind: Kind.DOCUMENT, definitions: [] }, errors: [err instanceof GraphQLError ? err : new GraphQLError(String(err))] };
    }
    return { document, errors: validate(this.schema, document, this.rules) };
  }
}

function findOperation(document: DocumentNode, name: string | null | undefined): OperationDefinitionNode | undefined {
  const operations = document.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
  if (name) return operations.find((o) => o.name?.value === name);
  return operations.length === 1 ? operations[0] : undefined;
}

function fragmentsOf(document: DocumentNode): Map<string, FragmentDefinitionNode> {
  const map = new Map<string, FragmentDefinitionNode>();
  for (const d of document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) map.set(d.name.value, d);
  return map;
}

function included(node: { directives?: readonly unknown[] } & Parameters<typeof getDirectiveValues>[1], vars: Record<string, unknown>): boolean {
  if (!node.directives?.length) return true;
  if (getDirectiveValues(GraphQLSkipDirective, node, vars)?.if === true) return false;
  if (getDirectiveValues(GraphQLIncludeDirective, node, vars)?.if === false) return false;
  return true;
}

/** Collects the fields of a selection set by response key (the spec's CollectFields, for object types only). */
function collect(set: SelectionSetNode, type: GraphQLObjectType, vars: Record<string, unknown>,
  fragments: Map<string, FragmentDefinitionNode>, out: Map<string, FieldNode[]>, visited: Set<string>): void {
  for (const selection of set.selections) {
    if (!included(selection, vars)) continue;
    switch (selection.kind) {
      case Kind.FIELD: {
        const key = selection.alias?.value ?? selection.name.value;
        const list = out.get(key);
        if (list) list.push(selection);
        else out.set(key, [selection]);
        break;
      }
      case Kind.INLINE_FRAGMENT:
        if (!selection.typeCondition || selection.typeCondition.name.value === type.name) {
          collect(selection.selectionSet, type, vars, fragments, out, visited);
        }
        break;
      case Kind.FRAGMENT_SPREAD: {
        const name = selection.name.value;
        const fragment = fragments.get(name);
        if (visited.has(name) || !fragment || fragment.typeCondition.name.value !== type.name) break;
        visited.add(name);
        collect(fragment.selectionSet, type, vars, fragments, out, visited);
        break;
      }
    }
  }
}

function shapeOf(nodes: FieldNode[], type: GraphQLObjectType, vars: Record<string, unknown>, fragments: Map<string, FragmentDefinitionNode>): Shape {
  const fields = new Map<string, FieldNode[]>();
  for (const node of nodes) if (node.selectionSet) collect(node.selectionSet, type, vars, fragments, fields, new Set());
  const shape: Shape = [];
  for (const [key, list] of fields) {
    const name = list[0]!.name.value;
    if (name === '__typename') {
      shape.push({ key, field: name, typename: type.name });
      continue;
    }
    const def = type.getFields()[name]!;
    const named = getNamedType(def.type);
    const withSelection = list.filter((n) => n.selectionSet);
    shape.push(withSelection.length > 0
      ? { key, field: name, sub: shapeOf(withSelection, named as GraphQLObjectType, vars, fragments) }
      : { key, field: name });
  }
  return shape;
}

/** The response object of `value` (a JobChange, JobSnapshot or StepSnapshot) under `shape`. */
export function project(value: Record<string, unknown>, shape: Shape): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of shape) {
    if (f.typename !== undefined) {
      out[f.key] = f.typename;
      continue;
    }
    const v = value[f.field];
    if (f.sub && v !== null && v !== undefined) {
      out[f.key] = Array.isArray(v) ? v.map((x) => project(x as Record<string, unknown>, f.sub!)) : project(v as Record<string, unknown>, f.sub);
    } else {
      out[f.key] = v === undefined ? null : v;
    }
  }
  return out;
}
