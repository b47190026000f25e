// The summary line of `npm test` from tap's raw output (one .tap file per test file): top-level test points, plus
// one failure for every file whose output stops before its plan (killed by tap's per-file timeout, or crashed):
// such a file may have printed only passing points, and must still count as failed.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

function listTapFiles(dir: string): string[] {
  let out: string[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out = out.concat(listTapFiles(p));
    else if (e.endsWith('.tap')) out.push(p);
  }
  return out;
}

/** Counts the top-level test points of each file's raw TAP; a file without its plan counts one more failure. */
export function countTap(dir: string): { passed: number; failed: number; skipped: number; incompleteFiles: string[] } {
  let passed = 0, failed = 0, skipped = 0;
  const incompleteFiles: string[] = [];
  for (const file of listTapFiles(dir)) {
    let planned = false;
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (/^1\.\.\d+/.test(line)) planned = true;
      const m = /^(not ok|ok) \d+/.exec(line);
      if (!m) continue;
      if (/# (SKIP|TODO)/i.test(line)) skipped++;
      else if (m[1] === 'ok') passed++;
      else failed++;
    }
    if (!planned) {
      failed++;
      incompleteFiles.push(file);
    }
  }
  return { passed, failed, skipped, incompleteFiles };
}
