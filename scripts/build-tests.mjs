// Compiles the tests (test/**/*.ts) to dist/test/ with esbuild, file by file (no bundling,
// no type check: `npm run typecheck` does that), beside dist/src/ that `npm run build` makes.
// The suite then runs on plain node: a loader hook (tsx) would cost every test file and
// every child it starts a quarter of a second of CPU before the first test, and each import
// a round trip to the hook's thread. Imports of ../src/x.js find dist/src/x.js, as the
// sources find src/x.ts.
import { readdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = join(root, 'dist/test');

function sources(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sources(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: sources(join(root, 'test')),
  outdir: out,
  outbase: join(root, 'test'),
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: 'linked',
  logLevel: 'warning',
});
process.stdout.write(`tests compiled to ${relative(root, out)}/\n`);
