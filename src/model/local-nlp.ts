// What the `local` provider actually computes: deterministic English NLP with wink-nlp and its small English model
// (wink-eng-lite-web-model, ~4 MB, shipped inside the npm package, no network). It is NOT a language model: it does
// not follow instructions, reason or write. It finds entities (dates, times, money, percentages, numbers, emails,
// URLs, hashtags...; wink's lite model has no person/organisation recogniser, so runs of proper nouns are reported
// as `PROPER_NOUN`, not guessed into people or companies), scores sentiment (-1..1, wink's lexicon-based scorer),
// picks keywords (most frequent non-stop-word nouns) and summarises by taking the leading sentence(s) (the "lead"
// baseline of extractive summarisation). Same text in, same JSON out.
import type { Detail, Document, ItemToken, ItsFunction, ItsHelpers, WinkMethods } from 'wink-nlp';

export interface Entity {
  type: string;
  value: string;
}

export interface Analysis {
  sentences: string[];
  /** The first sentence, or the first two when the first is short (under 12 words). */
  summary: string;
  sentiment: { score: number; label: 'positive' | 'negative' | 'neutral' };
  entities: Entity[];
  keywords: string[];
  /** Word and punctuation tokens, by wink's tokenizer (not a model vocabulary). */
  tokens: number;
  language: 'en';
}

let loaded: Promise<{ nlp: WinkMethods; its: ItsHelpers }> | undefined;

/** wink-nlp and its model, loaded on first use (~100 ms) so importing ballast stays cheap. */
function load(): Promise<{ nlp: WinkMethods; its: ItsHelpers }> {
  loaded ??= (async () => {
    const [{ default: winkNLP }, { default: model }] = await Promise.all([import('wink-nlp'), import('wink-eng-lite-web-model')]);
    const nlp = winkNLP(model);
    return { nlp, its: nlp.its };
  })();
  return loaded;
}

/** Counts tokens the way the local model reports usage. */
export async function countTokens(text: string): Promise<number> {
  const { nlp } = await load();
  return nlp.readDoc(text).tokens().length();
}

function properNouns(doc: Document, its: ItsHelpers): Entity[] {
  const out: Entity[] = [];
  let run: string[] = [];
  const flush = () => {
    if (run.length) out.push({ type: 'PROPER_NOUN', value: run.join(' ') });
    run = [];
  };
  doc.tokens().each((t: ItemToken) => {
    // Tokens inside a recognised entity ("July" in "4 July 1906") belong to that entity.
    if (t.out(its.pos) === 'PROPN' && !t.parentEntity()) run.push(t.out());
    else flush();
  });
  flush();
  return out;
}

function keywords(doc: Document, its: ItsHelpers, max = 5): string[] {
  const counts = new Map<string, number>();
  doc.tokens().each((t: ItemToken) => {
    const pos = t.out(its.pos);
    if ((pos === 'NOUN' || pos === 'PROPN') && !t.out(its.stopWordFlag) && t.out(its.type) === 'word' && !t.parentEntity()) {
      // wink's typings declare its.lemma with a signature t.out() does not accept, though it works there (documented use).
      const lemma = String(t.out(its.lemma as unknown as ItsFunction<string>)).toLowerCase();
      counts.set(lemma, (counts.get(lemma) ?? 0) + 1);
    }
  });
  // Stable sort: equal counts keep their order of first appearance.
  return [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, max).map(([w]) => w);
}

function unique(entities: Entity[]): Entity[] {
  const seen = new Set<string>();
  return entities.filter((e) => {
    const key = `${e.type}\u0000${e.value}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Analyses English text; deterministic. */
export async function analyse(text: string): Promise<Analysis> {
  const { nlp, its } = await load();
  const doc = nlp.readDoc(text);
  const sentences = doc.sentences().out() as string[];
  const first = sentences[0] ?? '';
  const summary = first.split(/\s+/).length < 12 && sentences[1] ? `${first} ${sentences[1]}` : first;
  const score = Math.round(Number(doc.out(its.sentiment)) * 1000) / 1000;
  const label = score > 0.05 ? 'positive' : score < -0.05 ? 'negative' : 'neutral';
  const found = (doc.entities().out(its.detail) as Detail[]).map((d) => ({ type: d.type, value: d.value }));
  return {
    sentences,
    summary,
    sentiment: { score, label },
    entities: unique([...found, ...properNouns(doc, its)]),
    keywords: keywords(doc, its),
    tokens: doc.tokens().length(),
    language: 'en',
  };
}

/**
 * The document to analyse in a prompt written for an LLM: the body of a ``` fence, of <text>...</text> or of a
 * """ block when there is one; else what follows the first line ending in a colon ("Extract the entities from this
 * review:\n..."); else the whole prompt.
 */
export function documentOf(prompt: string): string {
  const block = /```[a-zA-Z]*\n?([\s\S]*?)```/.exec(prompt) ?? /<text>([\s\S]*?)<\/text>/i.exec(prompt) ?? /"""([\s\S]*?)"""/.exec(prompt);
  if (block?.[1]?.trim()) return block[1].trim();
  const colon = /:[ \t]*\n/.exec(prompt);
  if (colon && prompt.slice(colon.index + colon[0].length).trim()) return prompt.slice(colon.index + colon[0].length).trim();
  return prompt.trim();
}
