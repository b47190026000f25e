// What the GraphQL schema exposes of schema `ballast`, decided here rather than by what happens to exist:
//   - read surface: the views jobs, steps, attempts, events, model_calls, reviews, dead_letters, pipelines,
//     budgets, schedules, pauses, limits, gate_history, fair_shares, prompt_labels, prompt_label_history, job_prompts, model_call_savings,
//     model_cache_settings and alerts, with the keys and relations views cannot declare (smart tags), read-only (INSERT INTO ballast.jobs
//     stays an SQL feature; submitJob is the GraphQL way), filterable and orderable only on columns that make sense;
//   - every other view and every function is hidden (the mutations and subscriptions are written explicitly in
//     mutations.ts and subscriptions.ts); graphile_worker and ballast_private are not introspected at all;
//   - names read like the domain: jobs, job(id:), job.steps, step.attempts, attempt.modelCalls (no Relay global
//     ids: `id` is the row's id, a BigInt).
import { addPgTableCondition, jsonPgSmartTags } from 'postgraphile/utils';
import { listOfCodec, TYPES } from 'postgraphile/@dataplan/pg';

interface ViewSpec {
  primaryKey: string;
  /** GraphQL names for columns whose own name a relation takes (steps.attempts is a count; step.attempts the rows). */
  rename?: Record<string, string>;
  foreignKeys?: string[];
  notNull: string[];
  /** Columns offered in `condition` (equality filters). */
  filter: string[];
  /** Columns offered in `orderBy`. */
  order: string[];
  /** The list field's name, when the plural of the view's name does not read well (gate_history: gateHistory). */
  listField?: string;
  /** The single-row field's name, likewise (needed when it would take the list's name). */
  rowField?: string;
}

const FK = {
  job: '(job_id) references ballast.jobs (id)',
  step: '(step_id) references ballast.steps (id)',
  attempt: '(attempt_id) references ballast.attempts (id)',
};

export const READ_VIEWS: Record<string, ViewSpec> = {
  jobs: {
    primaryKey: 'id',
    // Child jobs (0038): job.parentJob and job.parentStep, and their childJobs.
    foreignKeys: [
      '(parent_job_id) references ballast.jobs (id)|@fieldName parentJob|@foreignFieldName childJobs',
      '(parent_step_id) references ballast.steps (id)|@fieldName parentStep|@foreignFieldName childJobs',
    ],
    notNull: ['id', 'tenant_id', 'pipeline', 'pipeline_version', 'input', 'status', 'priority', 'created_at', 'updated_at'],
    filter: ['tenant_id', 'pipeline', 'pipeline_version', 'status', 'idempotency_key', 'parent_job_id', 'parent_step_id'],
    order: ['id', 'created_at', 'updated_at', 'finished_at', 'priority'],
  },
  steps: {
    primaryKey: 'id', foreignKeys: [FK.job], rename: { attempts: 'attempt_count' },
    notNull: ['id', 'job_id', 'name', 'status', 'attempts', 'max_attempts', 'created_at', 'updated_at'],
    filter: ['job_id', 'name', 'status'], order: ['id', 'updated_at'],
  },
  attempts: {
    primaryKey: 'id', foreignKeys: [FK.job, FK.step], rename: { model_calls: 'model_call_count' },
    notNull: ['id', 'step_id', 'job_id', 'number', 'outcome', 'started_at'],
    filter: ['job_id', 'step_id', 'outcome'], order: ['id'],
  },
  events: {
    primaryKey: 'id', foreignKeys: [FK.job, FK.step],
    notNull: ['id', 'job_id', 'type', 'actor', 'at'],
    filter: ['job_id', 'step_id', 'type'], order: ['id'],
  },
  model_calls: {
    primaryKey: 'id', foreignKeys: [FK.job, FK.step, FK.attempt],
    notNull: ['id', 'attempt_id', 'step_id', 'job_id', 'tenant_id', 'rung', 'provider', 'requested_model', 'started_at'],
    filter: ['job_id', 'step_id', 'attempt_id', 'provider', 'requested_model'], order: ['id'],
  },
  reviews: {
    primaryKey: 'step_id', foreignKeys: [FK.job, `${FK.step}|@foreignFieldName pendingReview`],
    notNull: ['step_id', 'job_id', 'tenant_id', 'pipeline', 'step_name'],
    filter: ['job_id', 'tenant_id', 'pipeline'], order: ['step_id', 'requested_at'],
  },
  dead_letters: {
    primaryKey: 'step_id', foreignKeys: [FK.job, FK.step],
    notNull: ['step_id', 'job_id', 'tenant_id', 'pipeline', 'step_name'],
    filter: ['job_id', 'tenant_id', 'pipeline', 'step_name'], order: ['step_id', 'failed_at'],
  },
  pipelines: {
    primaryKey: 'name,version',
    notNull: ['name', 'version', 'definition', 'input_schema', 'definition_hash', 'registered_at'],
    filter: ['name'], order: ['name', 'version'],
  },
  budgets: {
    primaryKey: 'tenant_id',
    notNull: ['tenant_id', 'limit_usd', 'period', 'on_exhausted'],
    filter: ['tenant_id'], order: ['tenant_id'],
  },
  schedules: {
    primaryKey: 'id',
    notNull: ['id', 'tenant_id', 'name', 'pipeline', 'input', 'priority', 'cron', 'time_zone', 'on_missed', 'max_catch_up',
      'paused', 'fired_count', 'skipped_count', 'created_at', 'updated_at'],
    filter: ['tenant_id', 'name', 'pipeline', 'paused'], order: ['id', 'name', 'next_fire_at'],
  },
  // Pauses and limits (0037): operators and reporters read them; a client token is refused by Postgres.
  pauses: {
    primaryKey: 'key',
    notNull: ['key', 'reason', 'paused_at', 'in_force'],
    filter: ['in_force'], order: ['key', 'until', 'paused_at'],
  },
  limits: {
    primaryKey: 'pattern,kind',
    notNull: ['pattern', 'kind', 'amount', 'burst', 'set_at', 'keys_seen'],
    filter: ['pattern', 'kind'], order: ['pattern', 'kind', 'set_at'],
  },
  gate_history: {
    primaryKey: 'id', listField: 'gateHistory', rowField: 'gateHistoryEntry',
    notNull: ['id', 'action', 'key', 'at'],
    filter: ['action', 'key', 'step_id'], order: ['id', 'at'],
  },
  // Fair sharing (0040): operators and reporters read the weights; a client token is refused by Postgres.
  fair_shares: {
    primaryKey: 'tenant_id', listField: 'fairShares', rowField: 'fairShare',
    notNull: ['tenant_id', 'weight', 'finish_tag', 'set_at'],
    filter: ['tenant_id'], order: ['tenant_id', 'weight', 'set_at'],
  },
  // Prompt labels (0041): operators and reporters read labels and their history; each job's pins follow its tenant.
  prompt_labels: {
    primaryKey: 'prompt_name,label',
    notNull: ['prompt_name', 'label', 'version', 'updated_at'],
    filter: ['prompt_name', 'label'], order: ['prompt_name', 'label', 'updated_at'],
  },
  prompt_label_history: {
    primaryKey: 'id', listField: 'promptLabelHistory', rowField: 'promptLabelHistoryEntry',
    notNull: ['id', 'prompt_name', 'label', 'action', 'reason', 'at'],
    filter: ['prompt_name', 'label', 'action'], order: ['id', 'at'],
  },
  job_prompts: {
    primaryKey: 'job_id,prompt_name,label', foreignKeys: [`${FK.job}|@foreignFieldName prompts`],
    notNull: ['job_id', 'tenant_id', 'prompt_name', 'label', 'version', 'arm', 'pinned_at'],
    filter: ['job_id', 'prompt_name', 'label', 'version', 'arm'], order: ['job_id', 'pinned_at'],
  },
  // Paid once (0042): what reusing stored answers saved, per pipeline, tenant, model and kind (a client sees its
  // tenant's rows), and the pipelines whose answers are cached across jobs (operators and reporters).
  model_call_savings: {
    primaryKey: 'pipeline,tenant_id,provider,model,reuse_kind', listField: 'modelCallSavings', rowField: 'modelCallSaving',
    notNull: ['pipeline', 'tenant_id', 'provider', 'model', 'reuse_kind', 'reused_calls', 'cost_saved_usd', 'first_at', 'last_at'],
    filter: ['pipeline', 'tenant_id', 'model', 'reuse_kind'], order: ['pipeline', 'cost_saved_usd', 'last_at'],
  },
  model_cache_settings: {
    primaryKey: 'pipeline', listField: 'modelCacheSettings', rowField: 'modelCacheSetting',
    notNull: ['pipeline', 'ttl', 'set_at'], filter: ['pipeline'], order: ['pipeline', 'set_at'],
  },
  // Alerts (0045): a client sees its tenant's budget alerts, operators and reporters every alert (row-level security).
  alerts: {
    primaryKey: 'id',
    notNull: ['id', 'kind', 'rule', 'rule_id', 'group_key', 'group', 'metric', 'raised_at', 'open'],
    filter: ['kind', 'rule', 'open', 'tenant_id'], order: ['id', 'raised_at'],
  },
};

const isBallast = (entity: { extensions?: { pg?: { schemaName?: string } } }) => entity.extensions?.pg?.schemaName === 'ballast';

/** Primary keys, relations and NOT NULL columns the views cannot declare themselves. */
const SmartTagsPlugin = jsonPgSmartTags({
  version: 1,
  config: {
    class: Object.fromEntries(Object.entries(READ_VIEWS).map(([view, spec]) => [`ballast.${view}`, {
      tags: { primaryKey: spec.primaryKey, ...(spec.foreignKeys ? { foreignKey: spec.foreignKeys } : {}) },
      attribute: Object.fromEntries([...new Set([...spec.notNull, ...Object.keys(spec.rename ?? {})])].map((column) => [column, {
        tags: { ...(spec.notNull.includes(column) ? { notNull: true } : {}), ...(spec.rename?.[column] ? { name: spec.rename[column] } : {}) },
      }])),
    }])),
  },
});

/** Everything not listed above is hidden; what is listed is read-only and filtered/ordered as declared. */
const ExposurePlugin: GraphileConfig.Plugin = {
  name: 'BallastExposurePlugin',
  version: '1.0.0',
  schema: {
    entityBehavior: {
      pgResource: {
        override: {
          provides: ['ballastExposure'],
          callback(behavior, resource) {
            if (!isBallast(resource.codec) && !isBallast(resource)) return [behavior, '-*'];
            if ((resource as { parameters?: unknown }).parameters) return [behavior, '-*'];
            return READ_VIEWS[resource.name] ? [behavior, '-insert', '-update', '-delete'] : [behavior, '-*'];
          },
        },
      },
      pgCodecAttribute: {
        override: {
          provides: ['ballastExposure'],
          callback(behavior, [codec, attributeName]) {
            const spec = READ_VIEWS[codec.extensions?.pg?.name ?? ''];
            if (!spec || !isBallast(codec)) return behavior;
            return [behavior, spec.filter.includes(attributeName) || spec.primaryKey === attributeName ? 'filterBy' : '-filterBy',
              spec.order.includes(attributeName) ? 'orderBy' : '-orderBy'];
          },
        },
      },
    },
  },
};

/** Plain names: jobs / job(id:), job.steps, step.job, no `allJobs`, `jobByRowId`, `stepsByJobId` or `rowId`. */
const NamingPlugin: GraphileConfig.Plugin = {
  name: 'BallastNamingPlugin',
  version: '1.0.0',
  inflection: {
    replace: {
      _attributeName(_prev, _options, { attributeName, codec }) {
        const attribute = codec.attributes[attributeName];
        return this.coerceToGraphQLName((attribute?.extensions?.tags?.name as string | undefined) || attributeName);
      },
      allRowsConnection(_prev, _options, resource) {
        const listField = READ_VIEWS[resource.name]?.listField;
        if (listField && isBallast(resource.codec)) return listField;
        return this.camelCase(this.pluralize(this._singularizedResourceName(resource)));
      },
      rowByUnique(_prev, _options, { resource }) {
        const rowField = READ_VIEWS[resource.name]?.rowField;
        if (rowField && isBallast(resource.codec)) return rowField;
        return this.camelCase(this._singularizedResourceName(resource));
      },
      singleRelation(prev, _options, details) {
        const relation = details.registry.pgRelations[details.codec.name]![details.relationName]!;
        if (typeof relation.extensions?.tags?.fieldName === 'string') return prev!(details);
        return this.camelCase(this._singularizedResourceName(relation.remoteResource));
      },
      singleRelationBackwards(prev, _options, details) {
        const relation = details.registry.pgRelations[details.codec.name]![details.relationName]!;
        if (typeof relation.extensions?.tags?.foreignFieldName === 'string') return prev!(details);
        return this.camelCase(this._singularizedResourceName(relation.remoteResource));
      },
      manyRelationConnection(prev, _options, details) {
        const relation = details.registry.pgRelations[details.codec.name]![details.relationName]!;
        if (typeof relation.extensions?.tags?.foreignFieldName === 'string') return prev!(details);
        return this.camelCase(this.pluralize(this._singularizedResourceName(relation.remoteResource)));
      },
    },
  },
};

/** Time and list filters on jobs: createdAfter / createdBefore / statusIn. */
const timestamptz = TYPES.timestamptz;
const textList = listOfCodec(TYPES.text);
const JobConditions: GraphileConfig.Plugin[] = [
  addPgTableCondition({ schemaName: 'ballast', tableName: 'jobs' }, 'createdAfter',
    (build) => ({ type: build.getTypeByName('Datetime') as never, description: 'Jobs created at or after this time.' }),
    (value, { sql, sqlTableAlias, sqlValueWithCodec }) => (value == null ? null : sql`${sqlTableAlias}.created_at >= ${sqlValueWithCodec(value, timestamptz)}`)),
  addPgTableCondition({ schemaName: 'ballast', tableName: 'jobs' }, 'createdBefore',
    (build) => ({ type: build.getTypeByName('Datetime') as never, description: 'Jobs created before this time.' }),
    (value, { sql, sqlTableAlias, sqlValueWithCodec }) => (value == null ? null : sql`${sqlTableAlias}.created_at < ${sqlValueWithCodec(value, timestamptz)}`)),
  addPgTableCondition({ schemaName: 'ballast', tableName: 'jobs' }, 'statusIn',
    (build) => ({ type: new build.graphql.GraphQLList(new build.graphql.GraphQLNonNull(build.graphql.GraphQLString)), description: 'Jobs in any of these statuses.' }),
    (value, { sql, sqlTableAlias, sqlValueWithCodec }) => (value == null ? null : sql`${sqlTableAlias}.status = any(${sqlValueWithCodec(value, textList)})`)),
];

/**
 * Descriptions PostGraphile leaves out: the values of the orderBy enums and the arguments of the single-row fields
 * (job(id:), pipeline(name:, version:)). The types and fields themselves take theirs from the SQL comments (0010_public_views).
 */
const DescriptionsPlugin: GraphileConfig.Plugin = {
  name: 'BallastDescriptionsPlugin',
  version: '1.0.0',
  schema: {
    hooks: {
      GraphQLEnumType_values_value(value, build, context) {
        if (value.description || !context.scope.isPgRowSortEnum) return value;
        const name = context.scope.valueName;
        const direction = name.endsWith('_DESC') ? 'descending' : 'ascending';
        const by = name === 'NATURAL' ? undefined
          : /^PRIMARY_KEY_(ASC|DESC)$/.test(name) ? 'the primary key'
          : `\`${build.inflection.camelCase(name.replace(/_(ASC|DESC)$/, '').toLowerCase())}\``;
        return { ...value, description: by ? `By ${by}, ${direction}.` : 'No explicit order (the rows as Postgres returns them).' };
      },
      GraphQLObjectType_fields_field_args_arg(arg, build, context) {
        const { isPgRowByUniqueConstraintField, pgFieldResource, argName } = context.scope as typeof context.scope & {
          isPgRowByUniqueConstraintField?: boolean; pgFieldResource?: { codec: { attributes?: Record<string, { description?: string }> } };
        };
        if (arg.description || !isPgRowByUniqueConstraintField || !pgFieldResource?.codec.attributes) return arg;
        const codec = pgFieldResource.codec as never;
        const attributes: [string, { description?: string }][] = Object.entries(pgFieldResource.codec.attributes);
        const description = attributes.find(([attributeName]) => build.inflection.attribute({ attributeName, codec }) === argName)?.[1].description;
        return description ? { ...arg, description } : arg;
      },
    },
  },
};

export const SurfacePlugins: GraphileConfig.Plugin[] = [SmartTagsPlugin, ExposurePlugin, NamingPlugin, DescriptionsPlugin, ...JobConditions];
