// The built-in `local` provider: an AI SDK LanguageModelV4 that runs deterministic English NLP in-process
// (local-nlp.ts: wink-nlp, no network, no API key), so model steps, `npm start` and the tests go through exactly the
// code path of a real provider (callModel → generateText/streamText → adapter → normalised record). It is not an
// LLM: it reads the document out of the prompt, analyses it, and answers with JSON: the analysis shaped to the
// requested schema when one is given (local-shape.ts), the whole analysis otherwise. Model ids: `wink` (alias
// `nlp`). Token counts in its usage are wink tokens (words and punctuation), not a model vocabulary.
import { NoSuchModelError, type LanguageModelV4, type LanguageModelV4CallOptions, type LanguageModelV4GenerateResult,
  type LanguageModelV4Prompt, type LanguageModelV4StreamPart, type LanguageModelV4Usage } from '@ai-sdk/provider';
import { analyse, countTokens, documentOf } from './local-nlp.ts';
import { shape, type Schema } from './local-shape.ts';

export const LOCAL_MODEL_IDS = ['wink', 'nlp'] as const;
/** Reported as the returned model: what actually produced the output. */
export const LOCAL_RETURNED_MODEL = 'wink-eng-lite-web-model';

let sequence = 0;

function lastUserText(prompt: LanguageModelV4Prompt): string {
  for (let i = prompt.length - 1; i >= 0; i--) {
    const m = prompt[i]!;
    if (m.role !== 'user') continue;
    return m.content.map((p) => (p.type === 'text' ? p.text : '')).join('\n');
  }
  return '';
}

function promptText(prompt: LanguageModelV4Prompt): string {
  return prompt.map((m) => (typeof m.content === 'string' ? m.content
    : m.content.map((p) => ('text' in p && typeof p.text === 'string' ? p.text : '')).join('\n'))).join('\n');
}

function usage(input: number, output: number): LanguageModelV4Usage {
  return {
    inputTokens: { total: input, noCache: input, cacheRead: 0, cacheWrite: 0 },
    outputTokens: { total: output, text: output, reasoning: 0 },
  };
}

function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('The operation was aborted.', 'AbortError');
}

async function run(options: LanguageModelV4CallOptions) {
  if (options.abortSignal?.aborted) throw abortError(options.abortSignal);
  const document = documentOf(lastUserText(options.prompt));
  const analysis = await analyse(document);
  const json = options.responseFormat?.type === 'json';
  const value = shape(analysis, json ? (options.responseFormat as { schema?: Schema }).schema : undefined);
  let text = JSON.stringify(value);
  const [inputTokens, outputTokens] = await Promise.all([countTokens(promptText(options.prompt)), countTokens(text)]);
  let finish: 'stop' | 'length' = 'stop';
  // Honour the output limit like a model would: cut the text and say so.
  if (options.maxOutputTokens !== undefined && outputTokens > options.maxOutputTokens) {
    text = text.slice(0, Math.max(1, Math.floor(text.length * (options.maxOutputTokens / outputTokens))));
    finish = 'length';
  }
  return {
    text,
    finishReason: { unified: finish, raw: finish === 'length' ? 'max_tokens' : 'stop' },
    usage: usage(inputTokens, Math.min(outputTokens, options.maxOutputTokens ?? outputTokens)),
    response: { id: `local-${process.pid}-${++sequence}`, modelId: LOCAL_RETURNED_MODEL, timestamp: new Date() },
  };
}

/** The local model `modelId` (`wink` or `nlp`); throws NoSuchModelError for any other id. */
export function localLanguageModel(modelId: string): LanguageModelV4 {
  if (!(LOCAL_MODEL_IDS as readonly string[]).includes(modelId)) {
    throw new NoSuchModelError({ modelId, modelType: 'languageModel', message: `local has no model "${modelId}" (it has: ${LOCAL_MODEL_IDS.join(', ')})` });
  }
  return {
    specificationVersion: 'v4',
    provider: 'local',
    modelId,
    supportedUrls: {},
    async doGenerate(options): Promise<LanguageModelV4GenerateResult> {
      const r = await run(options);
      return {
        content: [{ type: 'text', text: r.text }],
        finishReason: r.finishReason,
        usage: r.usage,
        response: r.response,
        warnings: [],
      };
    },
    async doStream(options) {
      const r = await run(options);
      // The text in 24-character deltas, so streaming consumers see several chunks and a first-token time.
      const pieces = r.text.match(/.{1,24}/gs) ?? [];
      const parts: LanguageModelV4StreamPart[] = [
        { type: 'stream-start', warnings: [] },
        { type: 'response-metadata', ...r.response },
        { type: 'text-start', id: 't0' },
        ...pieces.map((delta): LanguageModelV4StreamPart => ({ type: 'text-delta', id: 't0', delta })),
        { type: 'text-end', id: 't0' },
        { type: 'finish', finishReason: r.finishReason, usage: r.usage },
      ];
      const stream = new ReadableStream<LanguageModelV4StreamPart>({
        start(controller) {
          for (const p of parts) controller.enqueue(p);
          controller.close();
        },
      });
      return { stream };
    },
  };
}
