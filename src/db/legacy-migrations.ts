// The migration history before the fold (issue 14). Up to git commit db4e03d ballast had 29 numbered migrations,
// 0001_schema .. 0030_api_descriptions (0011 was never used); they were folded into the baseline files of
// migrations/ (0001_foundations .. 0011_reports), whose end state is exactly theirs: a database migrated through the
// old files and one migrated from the baseline have the same schema (docs/schema.sql) and the same shipped rows
// (error catalogue, transition tables, seeded model prices). So a database that ran all 29 old files is adopted:
// src/db/migrate.ts replaces their rows in ballast_private.migrations by the baseline's names, and runs nothing of
// the baseline again. A database that ran only some of them must first be migrated to the old 0030 by the old code.

/** The names node-pg-migrate recorded for the old migrations, in the order they ran. */
export const LEGACY_MIGRATIONS: readonly string[] = [
  '0001_schema',
  '0002_json_schema',
  '0003_state_machine',
  '0004_pipelines_and_submit',
  '0005_execution',
  '0006_public_views',
  '0007_operator_verbs',
  '0008_map_steps',
  '0009_model_steps',
  '0010_tenancy',
  '0012_reports',
  '0013_core_v2',
  '0014_notify_per_statement',
  '0015_submit_jobs',
  '0016_liveness',
  '0017_effects',
  '0018_pending_steps_index',
  '0019_oldest_transactions',
  '0020_lean_settle',
  '0021_lean_submit',
  '0022_claim_gates',
  '0023_set_based_insert',
  '0024_index_review',
  '0025_event_order',
  '0026_tenancy_holes',
  '0027_json_schema_bounds',
  '0028_model_edges',
  '0029_keys_and_sizes',
  '0030_api_descriptions',
];

/** The baseline files (migrations/*.sql without the extension) that equal the end state of LEGACY_MIGRATIONS. No
 * name is in both lists, so a history tells which it is. */
export const BASELINE_MIGRATIONS: readonly string[] = [
  '0001_foundations',
  '0002_tables',
  '0003_json_schema',
  '0004_state_machines',
  '0005_pipelines_and_submit',
  '0006_execution',
  '0007_effects_and_signals',
  '0008_operator_verbs',
  '0009_model_steps_and_budgets',
  '0010_public_views',
  '0011_reports',
];

/** The last commit whose migrations are the old ones: a partial old history is finished with it. */
export const LEGACY_COMMIT = 'db4e03d';

/** A database whose history holds some of the old migrations but not all: this version cannot continue it. */
export class PartialLegacyHistoryError extends Error {
  readonly lastApplied: string;
  readonly appliedCount: number;
  constructor(lastApplied: string, appliedCount: number, prefix = 'This database: ') {
    super(
      `${prefix}its migration history stops at ${lastApplied} (${appliedCount} of the ${LEGACY_MIGRATIONS.length} migrations ` +
        `0001_schema .. 0030_api_descriptions). This version of ballast starts from a folded baseline ` +
        `(${BASELINE_MIGRATIONS[0]} .. ${BASELINE_MIGRATIONS.at(-1)}) equal to the old 0030_api_descriptions, so it ` +
        `cannot continue a partial history. Migrate this database first with ballast at git commit ${LEGACY_COMMIT} ` +
        `(\`git checkout ${LEGACY_COMMIT} && npm run migrate\` with this DATABASE_URL), then run this version again; ` +
        `or, for a local .ballast/ dev database, remove .ballast/ to start fresh. Nothing was changed.`,
    );
    this.name = 'PartialLegacyHistoryError';
    this.lastApplied = lastApplied;
    this.appliedCount = appliedCount;
  }
}
