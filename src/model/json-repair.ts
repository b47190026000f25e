// Local JSON repair: the cheap first rung of the contract ladder, tried before a model is asked again. Models wrap
// JSON in markdown fences, put a sentence before or after it, leave trailing commas, use single quotes or stop
// mid-object. This module cuts the JSON out of the text and hands it to `jsonrepair` (josdejong/jsonrepair: no
// dependencies, ISC, maintained since 2011; it fixes quotes, commas, comments and Python literals). An answer that
// ends inside a string or with brackets still open was cut off: it is reported as truncated, never completed by
// repair (that would store an invented end as valid output). Text with no JSON in it (a refusal in prose, "I cannot help with that") is not repairable:
// jsonrepair alone would turn it into a JSON string, which is not a repair but a different answer.
import { jsonrepair } from 'jsonrepair';

export type JsonParse =
  | { ok: true; value: unknown; repaired: false }
  | { ok: true; value: unknown; repaired: true; repairedText: string }
  | { ok: false; reason: string; truncated?: true };

/**
 * Where JSON `text` ends: inside a string, or with arrays or objects still open. Such an answer was cut off (a
 * token limit, a dropped connection, whatever the finish reason says): repair may fix syntax, never invent the end
 * of an answer, so it is not repaired.
 */
export function unfinished(text: string): 'string' | 'array or object' | undefined {
  let depth = 0;
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === '\\') i++;
      else if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
  }
  if (quote) return 'string';
  return depth > 0 ? 'array or object' : undefined;
}

/** JSON.parse that reports instead of throwing. */
function strictParse(text: string): { ok: true; value: unknown } | { ok: false; reason: string } {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
}

/**
 * The part of `text` that looks like JSON: the body of a ```json fence if there is one, else from the first `{` or
 * `[` to the last matching closer (or to the end, when the model stopped early). undefined when there is none.
 */
export function extractJsonCandidate(text: string): string | undefined {
  const fenced = /```[a-zA-Z0-9_-]*\s*\n?([\s\S]*?)(?:```|$)/.exec(text);
  const body = (fenced && /[[{]/.test(fenced[1] ?? '') ? fenced[1]! : text).trim();
  const start = body.search(/[[{]/);
  if (start < 0) return undefined;
  const open = body[start]!;
  const close = open === '{' ? '}' : ']';
  const end = body.lastIndexOf(close);
  return end > start ? body.slice(start, end + 1) : body.slice(start);
}

/**
 * Parses model output as JSON, repairing it locally when strict parsing fails. `repaired: true` says the value
 * needed repair (the ladder records that as outcome `repaired`, method `json_repair`).
 */
export function parseJsonOutput(text: string): JsonParse {
  const strict = strictParse(text.trim());
  if (strict.ok) return { ok: true, value: strict.value, repaired: false };
  const candidate = extractJsonCandidate(text);
  if (candidate === undefined) return { ok: false, reason: `no JSON object or array in the output (${strict.reason})` };
  const open = unfinished(candidate);
  if (open) return { ok: false, truncated: true, reason: `the output ends inside ${open === 'string' ? 'a string' : 'an open array or object'}: it was cut off, and repair does not invent the rest` };
  let repairedText: string;
  try {
    repairedText = jsonrepair(candidate);
  } catch (err) {
    return { ok: false, reason: `not JSON and not repairable: ${(err as Error).message}` };
  }
  const repaired = strictParse(repairedText);
  if (!repaired.ok) return { ok: false, reason: `not JSON and not repairable: ${repaired.reason}` };
  // The candidate started with { or [, so anything else means jsonrepair guessed at prose: refuse the guess.
  if (typeof repaired.value !== 'object' || repaired.value === null) {
    return { ok: false, reason: 'not JSON and not repairable: no object or array could be recovered' };
  }
  return { ok: true, value: repaired.value, repaired: true, repairedText };
}
