// Builds the GitHub Action (action/): action/src/{main,post,heartbeat}.ts, each bundled with
// everything it imports (the SDK, node: built-ins only) into one ES module in action/dist/.
// GitHub runs those files as they are in the repository, with no install step: they are
// committed, and test/github-action.test.ts fails when they differ from what this builds
// (the output is deterministic: no timestamps, no absolute paths, no source maps).
//
// `node scripts/build-action.mjs` (npm run build:action) writes them; bundleAction() builds
// them in memory for the test.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const ENTRIES = ['main', 'post', 'heartbeat'];

/**
 * What the bundles may contain: the action's sources, the SDK and the little it shares with
 * the CLI. Anything else (a store, better-sqlite3, pg, Fastify) fails the build.
 */
const ALLOWED = [/^action\/src\//, /^src\/sdk\//, /^src\/cli\/lock-env\.ts$/, /^src\/duration\.ts$/];

/** The bundles as [{ path (relative to the repository), text }], built in memory. */
export async function bundleAction() {
  const result = await build({
    absWorkingDir: root,
    entryPoints: ENTRIES.map((entry) => ({ in: `action/src/${entry}.ts`, out: entry })),
    outdir: 'action/dist',
    write: false,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    sourcemap: false,
    legalComments: 'none',
    metafile: true,
    logLevel: 'warning',
    banner: {
      js: '// Built by scripts/build-action.mjs from action/src/ (npm run build:action): do not edit.',
    },
  });
  const stray = Object.keys(result.metafile.inputs).filter(
    (input) => !ALLOWED.some((allowed) => allowed.test(input)),
  );
  if (stray.length > 0) throw new Error(`the action's bundles must not contain ${stray.join(', ')}`);
  return result.outputFiles.map((file) => ({ path: relative(root, file.path), text: file.text }));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const { path, text } of await bundleAction()) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
    process.stdout.write(`wrote ${path} (${Math.round(text.length / 1024)} KiB)\n`);
  }
}
