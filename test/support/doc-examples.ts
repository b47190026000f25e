// The documentation's examples, for the tests that run them (test/readme.test.ts, test/graphql-readme.test.ts):
// README.md and every page of docs/, so that an example moved to another page is still executed.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

/**
 * The pages in the order a reader meets them: the examples of a page may use what those before it created (job 1
 * is the README tour's). Pages of docs/ not listed here come after, in alphabetical order.
 */
const READING_ORDER = [
  'README.md', 'docs/sql-api.md', 'docs/pipelines.md', 'docs/operating.md', 'docs/model-steps.md',
  'docs/security.md', 'docs/graphql.md', 'docs/live-updates.md',
];

/** README.md and every docs/*.md, in reading order (paths relative to the repository root). */
export function docPages(): string[] {
  const pages = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)];
  return [...READING_ORDER.filter((p) => pages.includes(p)), ...pages.filter((p) => !READING_ORDER.includes(p))];
}

/** The text of a page; throws if it does not exist. */
export function pageText(page: string): string {
  return readFileSync(join(root, page), 'utf8');
}

/** The bodies of the ```<lang> blocks of a text, in order. */
export function codeBlocks(text: string, lang: string): string[] {
  return [...text.matchAll(new RegExp('^```' + lang + '\\n([\\s\\S]*?)^```', 'gm'))].map((m) => m[1]!);
}

/** The statements of a SQL block, comment lines removed. */
export function sqlStatements(block: string): string[] {
  return block.replace(/^--.*$/gm, '').split(/;\s*\n/).map((s) => s.trim()).filter(Boolean);
}
