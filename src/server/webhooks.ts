// POST /webhooks/<path>: inbound webhooks (docs/webhooks.md). The body is read once (up to the server's body limit),
// verified per Standard Webhooks with the standardwebhooks library against each active secret of the endpoint
// (HMAC-SHA256 of id.timestamp.body, 5-minute tolerance, several signatures, constant-time compare), then submitted
// with the webhook id as idempotency key. Answers at once (202 with the job id); the work happens in the job. A
// refusal writes only its row in ballast.webhook_refusals.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type pg from 'pg';
import type { Logger } from 'pino';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { BallastError, IdempotencyConflictError, InvalidInputError } from '../errors.ts';
import { refuseWebhook, submitWebhook, webhookEndpointFor, type WebhookRefusalReason } from '../db/webhooks.ts';

export const WEBHOOK_PREFIX = '/webhooks/';

export interface WebhookRouteOptions {
  pool: pg.Pool;
  maxBytes: number;
  log: Logger;
}

class Refusal extends Error {
  readonly status: number;
  readonly reason: WebhookRefusalReason;
  readonly extra: Record<string, unknown>;
  constructor(status: number, reason: WebhookRefusalReason, message: string, extra: Record<string, unknown> = {}) {
    super(message);
    this.status = status;
    this.reason = reason;
    this.extra = extra;
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const buffer = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': String(buffer.length), 'cache-control': 'no-store' });
  res.end(buffer);
}

// Reads the body up to maxBytes; past it, the rest is drained and dropped (ending the stream early would destroy the
// socket before the 413 is sent) and undefined is returned.
async function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer | undefined> {
  if (Number(req.headers['content-length'] ?? 0) > maxBytes) return undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size <= maxBytes) chunks.push(chunk);
  }
  return size > maxBytes ? undefined : Buffer.concat(chunks);
}

function headerText(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Verifies with each secret in turn; any passing is enough. Throws a Refusal naming why none passed. */
function verify(secrets: string[], body: Buffer, headers: Record<string, string>): void {
  let last: unknown;
  for (const secret of secrets) {
    try {
      new Webhook(secret).verify(body, headers, { jsonParse: false });
      return;
    } catch (err) {
      if (!(err instanceof WebhookVerificationError)) throw err;
      last = err;
      if (/timestamp too (old|new)/i.test(err.message)) {
        throw new Refusal(401, 'old_timestamp', `webhook-timestamp is outside the 5-minute tolerance (${err.message}); a late redelivery must be signed afresh`);
      }
      if (/missing|invalid signature headers/i.test(err.message)) {
        throw new Refusal(400, 'missing_headers', `${err.message}: send webhook-id, webhook-timestamp (Unix seconds) and webhook-signature`);
      }
    }
  }
  throw new Refusal(401, 'bad_signature', `no signature matches an active secret of this endpoint (${(last as Error | undefined)?.message ?? 'no secret'})`);
}

async function accept(o: WebhookRouteOptions, path: string, req: IncomingMessage, webhookId: string | undefined): Promise<{ status: number; body: unknown }> {
  if (req.method !== 'POST') return { status: 405, body: { error: 'use POST' } };
  const endpoint = await webhookEndpointFor(o.pool, path);
  if (!endpoint) throw new Refusal(404, 'unknown_endpoint', `no webhook endpoint ${path} (ballast.set_webhook_endpoint creates one)`);
  if (!endpoint.enabled) throw new Refusal(404, 'disabled', `webhook endpoint ${path} is disabled`);
  const raw = await readBody(req, o.maxBytes);
  if (!raw) throw new Refusal(413, 'too_large', `the body is over the limit of ${o.maxBytes} bytes (BALLAST_GRAPHQL_MAX_BODY)`);
  const headers: Record<string, string> = {};
  for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) headers[name] = headerText(req, name) ?? '';
  verify(endpoint.secrets, raw, headers);
  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new Refusal(400, 'invalid_input', `the body is not JSON: ${(err as Error).message}`);
  }
  try {
    const s = await submitWebhook(o.pool, path, webhookId!, body);
    return { status: 202, body: { job_id: s.jobId, created: s.created, status: s.status } };
  } catch (err) {
    if (err instanceof InvalidInputError) throw new Refusal(400, 'invalid_input', err.message, { issues: err.issues });
    if (err instanceof IdempotencyConflictError) {
      throw new Refusal(409, 'replay', `webhook id ${webhookId} was already delivered with another body: refused as a replay`);
    }
    if (err instanceof BallastError && err.code === 'unknown_pipeline') throw new Refusal(503, 'unknown_pipeline', err.message);
    throw err;
  }
}

/** Handles POST /webhooks/<path>: 202 {job_id, created}, or 400/401/404/409/413/503 {error, reason}. */
export async function handleWebhook(o: WebhookRouteOptions, req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
  const webhookId = headerText(req, 'webhook-id');
  const remoteAddress = req.socket.remoteAddress ?? null;
  try {
    const { status, body } = await accept(o, path, req, webhookId);
    return send(res, status, body);
  } catch (err) {
    if (!(err instanceof Refusal)) throw err;
    o.log.warn({ path, webhookId, reason: err.reason, remoteAddress }, `webhook refused: ${err.message}`);
    await refuseWebhook(o.pool, { path: path.slice(0, 200), webhookId: webhookId ?? null, reason: err.reason, detail: err.message, remoteAddress });
    if (err.status === 413) res.setHeader('connection', 'close');
    return send(res, err.status, { error: err.message, reason: err.reason, ...err.extra });
  }
}
