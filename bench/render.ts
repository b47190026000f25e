// `node bench/render.ts [results.json]`: writes the Markdown report again from a results file (default
// bench/results/latest.json) to the .md file beside it, e.g. after the report's layout changed.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderMarkdown } from './report.ts';

const file = process.argv[2] ?? fileURLToPath(new URL('./results/latest.json', import.meta.url));
const md = renderMarkdown(JSON.parse(readFileSync(file, 'utf8')));
writeFileSync(file.replace(/\.json$/, '.md'), md);
console.log(md);
