// The `N passed, N failed` line of `npm test` (test/support/tap-count.ts) counts a test file that was cut short
// (tap's per-file timeout, a crash) as failed even when all it printed were passing points, and counts each such file.
import t from 'tap';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { countTap } from './support/tap-count.ts';

t.test('complete, failing and cut-short files', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tap-count-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'test'));
  writeFileSync(join(dir, 'test', 'a.test.ts.tap'), 'TAP version 14\n# Subtest: one\n    ok 1 - x\n    1..1\nok 1 - one\nok 2 - two # SKIP\n1..2\n');
  writeFileSync(join(dir, 'test', 'b.test.ts.tap'), 'TAP version 14\nok 1 - one\nnot ok 2 - two\n1..2\n');
  // Killed by the timeout: two passing points, no plan.
  writeFileSync(join(dir, 'test', 'c.test.ts.tap'), 'TAP version 14\nok 1 - one\nok 2 - two\n# Subtest: three\n    ok 1 - partial\n');
  writeFileSync(join(dir, 'test', 'd.test.ts.tap'), 'TAP version 14\n# Subtest: slow\n');
  const r = countTap(dir);
  t.same([r.passed, r.failed, r.skipped], [4, 3, 1], 'four passing points, one failing point and two cut-short files');
  t.same(r.incompleteFiles.map((f) => f.split('/').pop()).sort(), ['c.test.ts.tap', 'd.test.ts.tap']);
});
