// A model reference, `provider:model`, parsed without loading any provider: pipeline definitions check their model
// steps' references with it, and the AI SDK and its providers (about 50 MB of a process's memory) load only when a
// model step runs (src/pipeline/pipeline.ts imports the ladder lazily).
import { ModelConfigError } from './failure.ts';

export interface ModelRef {
  provider: string;
  modelId: string;
}

export const PROVIDER_NAME = /^[a-z][a-z0-9_.-]{0,62}$/;

/** Splits `provider:model` (the model id may contain further colons, e.g. `ollama:llama3.1:8b`). */
export function parseModelRef(ref: string): ModelRef {
  const i = ref.indexOf(':');
  const provider = i > 0 ? ref.slice(0, i) : '';
  const modelId = i > 0 ? ref.slice(i + 1) : '';
  if (!PROVIDER_NAME.test(provider) || !modelId) {
    throw new ModelConfigError('invalid_model_ref',
      `model "${ref}" is not of the form provider:model (e.g. openai:gpt-4o-mini, anthropic:claude-haiku-4-5, ollama:llama3.1, local:wink)`);
  }
  return { provider, modelId };
}
