// A scriptable LLM server for tests: node:http on 127.0.0.1, port 0. It speaks enough of two wire protocols for the
// real AI SDK adapters to talk to it unmodified: OpenAI chat completions (POST /v1/chat/completions, JSON or SSE
// when the request says stream: true) and Anthropic messages (POST /v1/messages, JSON or SSE). Each request takes
// the next scripted Reply for its protocol (a request with nothing scripted gets a 500 saying so, which fails the
// test loudly); every request is recorded with its body and whether the client hung up before the reply ended.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Protocol = 'openai' | 'anthropic';

export interface Reply {
  /** Assistant text (for Anthropic's forced JSON tool: the tool input, when it parses as an object). */
  text?: string;
  /** A refusal: OpenAI's message.refusal (content null); Anthropic stop_reason `refusal` with this text. */
  refusal?: string;
  /** Protocol-neutral finish: rendered as finish_reason (OpenAI) or stop_reason (Anthropic). Default stop. */
  finish?: 'stop' | 'length' | 'content_filter';
  /** The model the response claims (default: the model asked for). */
  model?: string;
  /** Sent as x-request-id (OpenAI) or request-id (Anthropic). */
  requestId?: string;
  responseId?: string;
  usage?: { input: number; output: number; cached?: number; reasoning?: number };
  /** An HTTP error: this status with `body` (JSON) and `headers`. */
  status?: number;
  body?: unknown;
  headers?: Record<string, string>;
  /** Never answer ('headers'), or stop after the first streamed chunk ('after-first-chunk'). */
  hang?: 'headers' | 'after-first-chunk';
  /** Streaming: pause this long after the first chunk (so first-token and end times differ measurably). */
  chunkGapMs?: number;
  /** Streaming: the text sent as exactly these chunks, in order (default: pieces of 8 characters of `text`). */
  chunks?: string[];
  /** Streaming: pause this long after every chunk (chunkGapMs still applies after the first). */
  everyChunkGapMs?: number;
  /** Anthropic streaming: send an `error` event after the first chunk (e.g. overloaded_error). */
  streamError?: { type: string; message: string };
}

export interface RecordedRequest {
  protocol: Protocol;
  path: string;
  headers: IncomingMessage['headers'];
  body: Record<string, any>;
  /** The client closed the connection before the reply was complete (an abort or timeout on its side). */
  clientAborted: boolean;
  /** Resolves when the exchange is over (reply finished or connection closed). */
  closed: Promise<void>;
  /** Streaming: when (Date.now()) the first text chunk was written, and when the stream was ended. */
  firstChunkAt?: number;
  endedAt?: number;
}

export class FakeLLM {
  readonly requests: RecordedRequest[] = [];
  /**
   * Answers a request that has nothing scripted (scripted replies come first): a reply that depends on the request,
   * e.g. on the prompt text. Undefined: the 500 of an unscripted request.
   */
  respond: ((req: RecordedRequest) => Reply | undefined) | undefined;
  private readonly queues: Record<Protocol, Reply[]> = { openai: [], anthropic: [] };
  private readonly waiters: { n: number; resolve: () => void }[] = [];
  private server: Server | undefined;
  private port = 0;
  private sequence = 0;

  /** Base URL of the API, including /v1 (what OPENAI_BASE_URL / ANTHROPIC_BASE_URL hold). */
  get baseURL(): string {
    return `http://127.0.0.1:${this.port}/v1`;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async close(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }

  /** Queues replies for the next requests of `protocol`, in order. */
  script(protocol: Protocol, ...replies: Reply[]): void {
    this.queues[protocol].push(...replies);
  }

  /** Replies scripted but not yet requested (a test asserts 0 to prove no extra or missing calls). */
  pending(protocol: Protocol): number {
    return this.queues[protocol].length;
  }

  /** Resolves once `n` requests in all have arrived (to act while a call is in flight, without sleeping). */
  waitForRequests(n: number): Promise<void> {
    if (this.requests.length >= n) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }

  last(): RecordedRequest {
    const r = this.requests.at(-1);
    if (!r) throw new Error('the fake LLM has received no request');
    return r;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let raw = '';
    for await (const chunk of req) raw += chunk;
    const protocol: Protocol | undefined = req.url === '/v1/chat/completions' ? 'openai' : req.url === '/v1/messages' ? 'anthropic' : undefined;
    let settle = () => {};
    const closed = new Promise<void>((resolve) => (settle = resolve));
    const recorded: RecordedRequest = { protocol: protocol ?? 'openai', path: req.url ?? '', headers: req.headers, body: raw ? JSON.parse(raw) : {}, clientAborted: false, closed };
    this.requests.push(recorded);
    for (const w of [...this.waiters]) {
      if (this.requests.length < w.n) continue;
      this.waiters.splice(this.waiters.indexOf(w), 1);
      w.resolve();
    }
    res.on('close', () => {
      if (!res.writableFinished) recorded.clientAborted = true;
      settle();
    });
    if (!protocol || req.method !== 'POST') return json(res, 404, { error: { message: `fake LLM: no route ${req.method} ${req.url}` } });
    const reply = this.queues[protocol].shift() ?? this.respond?.(recorded);
    if (!reply) return json(res, 500, { error: { message: `fake LLM: nothing scripted for this ${protocol} request`, type: 'test_error' } });
    if (reply.hang === 'headers') return; // never answers; the client must give up
    const id = reply.requestId ? { [protocol === 'openai' ? 'x-request-id' : 'request-id']: reply.requestId } : {};
    if (reply.status) return json(res, reply.status, reply.body ?? {}, { ...id, ...reply.headers });
    const ctx = { reply, rec: recorded, body: recorded.body, model: reply.model ?? String(recorded.body.model), id: reply.responseId ?? `fake-${++this.sequence}`, headers: id };
    if (recorded.body.stream) await (protocol === 'openai' ? openaiStream(res, ctx) : anthropicStream(res, ctx));
    else json(res, 200, protocol === 'openai' ? openaiJson(ctx) : anthropicJson(ctx), id);
  }
}

interface Ctx {
  reply: Reply;
  rec: RecordedRequest;
  body: Record<string, any>;
  model: string;
  id: string;
  headers: Record<string, string>;
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

const OPENAI_FINISH = { stop: 'stop', length: 'length', content_filter: 'content_filter' } as const;
const ANTHROPIC_STOP = { stop: 'end_turn', length: 'max_tokens', content_filter: 'refusal' } as const;

function openaiUsage(r: Reply) {
  const u = r.usage ?? { input: 10, output: 5 };
  return {
    prompt_tokens: u.input, completion_tokens: u.output, total_tokens: u.input + u.output,
    prompt_tokens_details: { cached_tokens: u.cached ?? 0 }, completion_tokens_details: { reasoning_tokens: u.reasoning ?? 0 },
  };
}

function openaiJson({ reply, model, id }: Ctx) {
  return {
    id, object: 'chat.completion', created: Math.floor(Date.now() / 1000), model,
    choices: [{ index: 0, message: { role: 'assistant', content: reply.refusal ? null : reply.text ?? '', refusal: reply.refusal ?? null }, finish_reason: OPENAI_FINISH[reply.finish ?? 'stop'] }],
    usage: openaiUsage(reply),
  };
}

function pieces(text: string): string[] {
  return text.match(/[\s\S]{1,8}/g) ?? [];
}

function pause(ms: number | undefined): Promise<void> {
  return ms ? new Promise((r) => setTimeout(r, ms)) : Promise.resolve();
}

async function openaiStream(res: ServerResponse, { reply, rec, model, id, headers }: Ctx): Promise<void> {
  res.writeHead(200, { 'content-type': 'text/event-stream', ...headers });
  const chunk = (delta: object, finish: string | null, extra: object = {}) =>
    res.write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: 1, model, choices: [{ index: 0, delta, finish_reason: finish }], ...extra })}\n\n`);
  const parts = reply.refusal ? [] : reply.chunks ?? pieces(reply.text ?? '');
  chunk({ role: 'assistant', content: '' }, null);
  for (const [i, p] of parts.entries()) {
    chunk({ content: p }, null);
    await pause(reply.everyChunkGapMs);
    if (i > 0) continue;
    rec.firstChunkAt = Date.now();
    if (reply.hang === 'after-first-chunk') return;
    await pause(reply.chunkGapMs);
  }
  if (reply.refusal) chunk({ refusal: reply.refusal }, null);
  chunk({}, OPENAI_FINISH[reply.finish ?? 'stop']);
  res.write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: 1, model, choices: [], usage: openaiUsage(reply) })}\n\n`);
  res.end('data: [DONE]\n\n');
  rec.endedAt = Date.now();
}

/** Anthropic's forced JSON tool (older models): answer with a tool_use block when the text is a JSON object. */
function toolInput({ reply, body }: Ctx): object | undefined {
  const forced = Array.isArray(body.tools) && body.tools.some((t: { name?: string }) => t.name === 'json');
  if (!forced || reply.refusal || !reply.text) return undefined;
  try {
    const value = JSON.parse(reply.text);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

function anthropicUsage(r: Reply) {
  const u = r.usage ?? { input: 10, output: 5 };
  return { input_tokens: u.input, output_tokens: u.output, cache_read_input_tokens: u.cached ?? 0, cache_creation_input_tokens: 0,
    ...(u.reasoning ? { output_tokens_details: { thinking_tokens: u.reasoning } } : {}) };
}

function anthropicStop(ctx: Ctx): string {
  if (ctx.reply.refusal) return 'refusal';
  if (toolInput(ctx)) return 'tool_use';
  return ANTHROPIC_STOP[ctx.reply.finish ?? 'stop'];
}

function anthropicJson(ctx: Ctx) {
  const input = toolInput(ctx);
  const content = input ? [{ type: 'tool_use', id: 'toolu_1', name: 'json', input }] : [{ type: 'text', text: ctx.reply.refusal ?? ctx.reply.text ?? '' }];
  return { id: ctx.id, type: 'message', role: 'assistant', model: ctx.model, content, stop_reason: anthropicStop(ctx), stop_sequence: null, usage: anthropicUsage(ctx.reply) };
}

async function anthropicStream(res: ServerResponse, ctx: Ctx): Promise<void> {
  const { reply, rec, model, id, headers } = ctx;
  res.writeHead(200, { 'content-type': 'text/event-stream', ...headers });
  const event = (type: string, data: object) => res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
  const usage = anthropicUsage(reply);
  event('message_start', { message: { id, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: { ...usage, output_tokens: 1 } } });
  const input = toolInput(ctx);
  const text = input ? JSON.stringify(input) : reply.refusal ?? reply.text ?? '';
  event('content_block_start', { index: 0, content_block: input ? { type: 'tool_use', id: 'toolu_1', name: 'json', input: {} } : { type: 'text', text: '' } });
  for (const [i, p] of (input || reply.refusal ? pieces(text) : reply.chunks ?? pieces(text)).entries()) {
    event('content_block_delta', { index: 0, delta: input ? { type: 'input_json_delta', partial_json: p } : { type: 'text_delta', text: p } });
    await pause(reply.everyChunkGapMs);
    if (i > 0) continue;
    rec.firstChunkAt = Date.now();
    if (reply.hang === 'after-first-chunk') return;
    if (reply.streamError) {
      event('error', { error: reply.streamError });
      res.end();
      return;
    }
    await pause(reply.chunkGapMs);
  }
  event('content_block_stop', { index: 0 });
  event('message_delta', { delta: { stop_reason: anthropicStop(ctx), stop_sequence: null }, usage: { output_tokens: usage.output_tokens, ...(usage.output_tokens_details ? { output_tokens_details: usage.output_tokens_details } : {}) } });
  event('message_stop', {});
  res.end();
  rec.endedAt = Date.now();
}
