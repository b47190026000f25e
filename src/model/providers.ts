// Model providers, configured by environment or config object, never by code. A model is named `provider:model`
// (`openai:gpt-4o-mini`, `anthropic:claude-haiku-4-5`, `ollama:llama3.1`, `local:wink`); the provider part picks a
// ProviderConfig by name and its kind picks the Vercel AI SDK adapter:
//
// | kind              | adapter                                   | configured by                                          |
// |-------------------|-------------------------------------------|--------------------------------------------------------|
// | openai            | @ai-sdk/openai, chat completions API      | OPENAI_API_KEY, OPENAI_BASE_URL                        |
// | anthropic         | @ai-sdk/anthropic, messages API           | ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL                  |
// | openai-compatible | @ai-sdk/openai-compatible (Ollama, vLLM,  | `ollama` is built in (OLLAMA_BASE_URL, default          |
// |                   | llama.cpp server, LM Studio, ...)         | http://127.0.0.1:11434/v1); one more server by          |
// |                   |                                           | BALLAST_OPENAI_COMPATIBLE_URL (+ _NAME, _API_KEY,       |
// |                   |                                           | _STRUCTURED_OUTPUTS=0); any number by config object     |
// | local             | ballast's own wink-nlp model, no network  | always present as `local`                              |
//
// Base URLs include the version path (`.../v1`), as the AI SDK expects. Adapters are created per call (cheap) so
// each call gets its own recording fetch; the SDK's retries are always 0 because ballast owns retries. An adapter's
// package is imported on the first call that needs it, so importing ballast (or a worker without model steps) does
// not load the AI SDK's providers.
import type { LanguageModelV4 } from '@ai-sdk/provider';
import { ModelConfigError } from './failure.ts';
import { parseModelRef, PROVIDER_NAME } from './model-ref.ts';

export { parseModelRef, type ModelRef } from './model-ref.ts';
import { localLanguageModel } from './local-provider.ts';

export type ProviderKind = 'openai' | 'anthropic' | 'openai-compatible' | 'local';

export interface ProviderConfig {
  /** The name used before the colon in `provider:model`. Lower-case letters, digits, `-`, `_`, `.`. */
  name: string;
  kind: ProviderKind;
  /** API base URL including the version path, e.g. https://api.openai.com/v1. Default: the kind's public API. */
  baseURL?: string;
  apiKey?: string;
  /** Where the key comes from, named in error messages (e.g. OPENAI_API_KEY). */
  apiKeyEnv?: string;
  /** Extra headers sent with every request. */
  headers?: Record<string, string>;
  /**
   * openai-compatible only: whether the server accepts `response_format: json_schema` (Ollama 0.5+, vLLM, llama.cpp
   * and LM Studio do). When false the schema is sent in the system prompt and JSON mode is requested. Default true.
   */
  structuredOutputs?: boolean;
}

/** The fetch the adapters use; callModel passes one that records status, headers and the first byte. */
export type FetchFunction = typeof globalThis.fetch;

type Env = Record<string, string | undefined>;

/**
 * The providers the environment describes: openai and anthropic (always listed; a call without their key fails
 * with a message naming the variable), ollama, local, and the server named by BALLAST_OPENAI_COMPATIBLE_URL.
 */
export function providersFromEnv(env: Env = process.env): ProviderConfig[] {
  const list: ProviderConfig[] = [
    { name: 'openai', kind: 'openai', baseURL: env.OPENAI_BASE_URL || undefined, apiKey: env.OPENAI_API_KEY || undefined, apiKeyEnv: 'OPENAI_API_KEY' },
    { name: 'anthropic', kind: 'anthropic', baseURL: env.ANTHROPIC_BASE_URL || undefined, apiKey: env.ANTHROPIC_API_KEY || undefined, apiKeyEnv: 'ANTHROPIC_API_KEY' },
    { name: 'ollama', kind: 'openai-compatible', baseURL: env.OLLAMA_BASE_URL || 'http://127.0.0.1:11434/v1' },
    { name: 'local', kind: 'local' },
  ];
  const url = env.BALLAST_OPENAI_COMPATIBLE_URL;
  if (url) {
    const name = env.BALLAST_OPENAI_COMPATIBLE_NAME || 'compatible';
    list.push({
      name,
      kind: 'openai-compatible',
      baseURL: url,
      apiKey: env.BALLAST_OPENAI_COMPATIBLE_API_KEY || undefined,
      apiKeyEnv: 'BALLAST_OPENAI_COMPATIBLE_API_KEY',
      structuredOutputs: env.BALLAST_OPENAI_COMPATIBLE_STRUCTURED_OUTPUTS !== '0',
    });
  }
  return list;
}

export interface ResolvedModel {
  config: ProviderConfig;
  modelId: string;
  /** The AI SDK model, bound to `fetch`. */
  model: LanguageModelV4;
}

/** A set of providers by name; later configs replace earlier ones of the same name. */
export class ProviderRegistry {
  private readonly byName = new Map<string, ProviderConfig>();

  constructor(configs: readonly ProviderConfig[]) {
    for (const c of configs) {
      if (!PROVIDER_NAME.test(c.name)) {
        throw new ModelConfigError('unknown_provider', `provider name "${c.name}" is not valid: use lower-case letters, digits, "-", "_" or "."`);
      }
      if (c.kind === 'openai-compatible' && !c.baseURL) {
        throw new ModelConfigError('unknown_provider', `provider "${c.name}" (openai-compatible) needs a baseURL, e.g. http://127.0.0.1:11434/v1`);
      }
      this.byName.set(c.name, c);
    }
  }

  /** The environment's providers plus `extra` (which win on a name clash). */
  static fromEnv(extra: readonly ProviderConfig[] = [], env: Env = process.env): ProviderRegistry {
    return new ProviderRegistry([...providersFromEnv(env), ...extra]);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  get(name: string): ProviderConfig | undefined {
    return this.byName.get(name);
  }

  /** The provider config and model id of `provider:model`; throws ModelConfigError for an unknown provider. */
  lookup(ref: string): { config: ProviderConfig; modelId: string } {
    const { provider, modelId } = parseModelRef(ref);
    const config = this.byName.get(provider);
    if (!config) {
      throw new ModelConfigError('unknown_provider',
        `model "${ref}": no provider named "${provider}" (configured: ${this.names().join(', ')}). ` +
        'Set BALLAST_OPENAI_COMPATIBLE_URL (and _NAME) or pass a provider config.');
    }
    return { config, modelId };
  }

  /**
   * Imports the adapter package `ref` needs (once per process), so that resolve() does not: callModel waits for it
   * before its clock starts. Never throws; resolve() reports an unknown provider or a missing package.
   */
  async load(ref: string): Promise<void> {
    try {
      const { kind } = this.lookup(ref).config;
      if (kind === 'openai') await import('@ai-sdk/openai');
      else if (kind === 'anthropic') await import('@ai-sdk/anthropic');
      else if (kind === 'openai-compatible') await import('@ai-sdk/openai-compatible');
    } catch {
      // reported by resolve()
    }
  }

  /** Builds the AI SDK model for `ref`, its HTTP requests going through `fetch` (importing the adapter if needed). */
  async resolve(ref: string, fetch: FetchFunction = globalThis.fetch): Promise<ResolvedModel> {
    const { config, modelId } = this.lookup(ref);
    return { config, modelId, model: await buildModel(config, modelId, fetch) };
  }
}

function requireKey(config: ProviderConfig, modelId: string): string {
  if (config.apiKey) return config.apiKey;
  const where = config.apiKeyEnv ?? `the apiKey of provider "${config.name}"`;
  throw new ModelConfigError('missing_api_key', `${config.name} model ${modelId}: no API key: set ${where}`);
}

async function buildModel(config: ProviderConfig, modelId: string, fetch: FetchFunction): Promise<LanguageModelV4> {
  switch (config.kind) {
    case 'openai': {
      const { createOpenAI } = await import('@ai-sdk/openai');
      // The chat completions API: the one every OpenAI-compatible server also speaks.
      return createOpenAI({ apiKey: requireKey(config, modelId), baseURL: config.baseURL, headers: config.headers, fetch })
        .chat(modelId);
    }
    case 'anthropic': {
      const { createAnthropic } = await import('@ai-sdk/anthropic');
      return createAnthropic({ apiKey: requireKey(config, modelId), baseURL: config.baseURL, headers: config.headers, fetch })
        .messages(modelId);
    }
    case 'openai-compatible': {
      const { createOpenAICompatible } = await import('@ai-sdk/openai-compatible');
      return createOpenAICompatible({
        name: config.name,
        baseURL: config.baseURL!,
        apiKey: config.apiKey,
        headers: config.headers,
        fetch,
        includeUsage: true,
        supportsStructuredOutputs: config.structuredOutputs ?? true,
      }).chatModel(modelId);
    }
    case 'local':
      return localLanguageModel(modelId);
  }
}
