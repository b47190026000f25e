// Inbound webhooks (migration 0048, docs/webhooks.md): the statements the API server runs for a delivery (look the
// endpoint up with its secrets, submit, log a refusal), one statement each. Errors leave translated (src/errors.ts).
import { translateError } from '../errors.ts';
import type { Queryable } from './verbs.ts';

/** An endpoint as the server needs it: secrets included (never shown by ballast.webhook_endpoints). */
export interface WebhookEndpoint {
  path: string;
  pipeline: string;
  tenantId: string;
  secrets: string[];
  enabled: boolean;
}

export type WebhookRefusalReason =
  | 'bad_signature' | 'old_timestamp' | 'missing_headers' | 'replay' | 'invalid_input' | 'too_large' | 'unknown_endpoint' | 'disabled'
  | 'unknown_pipeline';

export interface WebhookSubmission {
  jobId: string;
  created: boolean;
  status: string;
}

async function run<R>(client: Queryable, text: string, values: readonly unknown[]): Promise<readonly R[]> {
  try {
    return (await client.query<R>({ text, values })).rows;
  } catch (err) {
    throw translateError(err);
  }
}

/** The endpoint served at POST /webhooks/<path>, or undefined. */
export async function webhookEndpointFor(client: Queryable, path: string): Promise<WebhookEndpoint | undefined> {
  const rows = await run<{ path: string; pipeline: string; tenant_id: string; secrets: string[]; enabled: boolean }>(client,
    'select path, pipeline, tenant_id, secrets, enabled from ballast_private.webhook_endpoint_for($1)', [path]);
  const r = rows[0];
  return r && { path: r.path, pipeline: r.pipeline, tenantId: r.tenant_id, secrets: r.secrets, enabled: r.enabled };
}

/** Submits a verified delivery: one job per (path, webhook id); a retry gets the same job with created = false. */
export async function submitWebhook(client: Queryable, path: string, webhookId: string, body: unknown): Promise<WebhookSubmission> {
  const rows = await run<{ job_id: string; created: boolean; status: string }>(client,
    'select job_id::text, created, status from ballast_private.submit_webhook($1, $2, $3::jsonb)', [path, webhookId, JSON.stringify(body)]);
  const r = rows[0]!;
  return { jobId: r.job_id, created: r.created, status: r.status };
}

/** Appends a row to ballast.webhook_refusals (never the body or a secret). */
export async function refuseWebhook(client: Queryable, refusal: { path: string; webhookId: string | null; reason: WebhookRefusalReason; detail: string | null; remoteAddress: string | null }): Promise<void> {
  await run(client, 'select ballast_private.refuse_webhook($1, $2, $3, $4, $5)',
    [refusal.path, refusal.webhookId, refusal.reason, refusal.detail, refusal.remoteAddress]);
}
