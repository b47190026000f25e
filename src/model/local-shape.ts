// Shapes a local Analysis (local-nlp.ts) into the JSON Schema a call asks for, for the simple shapes an extraction
// step typically declares: properties named entities, sentiment, score, label, summary, sentences, keywords (or
// topics/tags), language, tokens/word count, dates, emails, urls, amounts. Properties it has no analysis for are
// left out rather than invented, so a contract the local model cannot meet fails validation visibly (a schema
// violation) instead of passing with made-up values.
import type { Analysis, Entity } from './local-nlp.ts';

/** The part of JSON Schema this module reads. */
export interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  items?: Schema | Schema[];
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  anyOf?: Schema[];
  oneOf?: Schema[];
}

function typeOf(s: Schema): string | undefined {
  if (Array.isArray(s.type)) return s.type.find((t) => t !== 'null');
  if (s.type) return s.type;
  const alt = (s.anyOf ?? s.oneOf)?.find((a) => a.type !== 'null');
  return alt ? typeOf(alt) : s.properties ? 'object' : undefined;
}

function itemSchema(s: Schema): Schema {
  const items = s.items;
  return (Array.isArray(items) ? items[0] : items) ?? {};
}

/** A name reduced for matching: `sentiment_score`, `sentimentScore` and `SentimentScore` all become sentimentscore. */
const norm = (name: string) => name.toLowerCase().replace(/[^a-z0-9]/g, '');

/** A sentiment score -1..1 rescaled to a 0..1 range when the schema asks for one. */
function score(a: Analysis, s: Schema): number {
  const raw = a.sentiment.score;
  if ((s.minimum ?? -1) >= 0 && (s.maximum ?? 1) <= 1) return Math.round(((raw + 1) / 2) * 1000) / 1000;
  return raw;
}

/** The sentiment label, mapped onto the schema's enum when it has one (e.g. POSITIVE, pos, Positive). */
function label(a: Analysis, s: Schema): string | undefined {
  const l = a.sentiment.label;
  if (!s.enum) return l;
  const options = s.enum.filter((e): e is string => typeof e === 'string');
  return options.find((e) => e.toLowerCase() === l) ?? options.find((e) => l.startsWith(e.toLowerCase()) || e.toLowerCase().startsWith(l.slice(0, 3)));
}

function entity(e: Entity, s: Schema): unknown {
  if (typeOf(s) === 'string') return e.value;
  const out: Record<string, unknown> = {};
  for (const [name, prop] of Object.entries(s.properties ?? { type: {}, value: {} })) {
    const n = norm(name);
    if (['type', 'label', 'kind', 'category', 'entitytype'].includes(n)) {
      const options = prop.enum?.filter((x): x is string => typeof x === 'string');
      const value = options ? options.find((o) => o.toUpperCase() === e.type.toUpperCase()) : e.type;
      if (value !== undefined) out[name] = value;
    } else if (['value', 'text', 'name', 'entity', 'span'].includes(n)) {
      out[name] = e.value;
    }
  }
  return out;
}

function entitiesOf(a: Analysis, types: string[]): string[] {
  return a.entities.filter((e) => types.includes(e.type)).map((e) => e.value);
}

/** The value for one property, or undefined when the analysis has nothing for it. */
function property(name: string, s: Schema, a: Analysis): unknown {
  const n = norm(name);
  const t = typeOf(s);
  switch (n) {
    case 'entities':
    case 'namedentities':
      return t === 'array' ? a.entities.map((e) => entity(e, itemSchema(s))) : undefined;
    case 'sentiment':
      if (t === 'number') return score(a, s);
      if (t === 'string') return label(a, s);
      if (t === 'object') return shape(a, s);
      return undefined;
    case 'score': case 'sentimentscore': case 'polarity':
      return t === 'number' ? score(a, s) : undefined;
    case 'label': case 'sentimentlabel': case 'tone':
      return t === 'string' ? label(a, s) : undefined;
    case 'summary': case 'abstract': case 'tldr':
      return t === 'string' ? a.summary : undefined;
    case 'sentences':
      return t === 'array' ? a.sentences : undefined;
    case 'keywords': case 'topics': case 'tags': case 'keyphrases':
      return t === 'array' ? a.keywords : undefined;
    case 'language': case 'lang':
      return t === 'string' ? a.language : undefined;
    case 'tokens': case 'tokencount': case 'wordcount': case 'words':
      return t === 'integer' || t === 'number' ? a.tokens : undefined;
    case 'dates': return t === 'array' ? entitiesOf(a, ['DATE', 'TIME']) : undefined;
    case 'emails': return t === 'array' ? entitiesOf(a, ['EMAIL']) : undefined;
    case 'urls': case 'links': return t === 'array' ? entitiesOf(a, ['URL']) : undefined;
    case 'amounts': case 'money': return t === 'array' ? entitiesOf(a, ['MONEY']) : undefined;
    default: return undefined;
  }
}

/**
 * The analysis in the shape of `schema`: an object schema gets the properties it names that the analysis can fill;
 * an array schema gets the entities; a string schema the summary; no schema (or an unknown one) the whole analysis.
 */
export function shape(a: Analysis, schema: Schema | undefined): unknown {
  const t = schema ? typeOf(schema) : undefined;
  if (!schema || !t) return { ...a };
  if (t === 'array') return a.entities.map((e) => entity(e, itemSchema(schema)));
  if (t === 'string') return a.summary;
  if (t === 'number') return score(a, schema);
  if (t !== 'object') return { ...a };
  const out: Record<string, unknown> = {};
  for (const [name, prop] of Object.entries(schema.properties ?? {})) {
    const value = property(name, prop, a);
    if (value !== undefined) out[name] = value;
  }
  return out;
}
