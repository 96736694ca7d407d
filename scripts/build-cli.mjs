// Builds the single-executable client (`npm run build:cli`): the CLI bundled into one
// CommonJS file by esbuild, with no server and no native module (`tracker serve` is
// src/cli/no-server.ts there): dist/cli/tracker.cjs, which the npm package and the container
// image carry, and from which the server makes what it serves at GET /cli/tracker-linux-x64
// (src/http/cli-download.ts). Then, on linux-x64, the executable itself, made the server's
// way from this machine's node (src/single-executable.ts): dist/cli/tracker-linux-x64 and its
// .sha256. `--bundle-only` (the npm package's prepack) stops after the bundle.
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { CLI_BUNDLE, CLI_NAME } from '../dist/src/http/cli-download.js';
import {
  digestSingleExecutable,
  makeSeaBlob,
  planSingleExecutable,
  writeSingleExecutable,
} from '../dist/src/single-executable.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist/cli');
const started = Date.now();
const bundleOnly = process.argv.includes('--bundle-only');

if (!bundleOnly && (process.platform !== 'linux' || process.arch !== 'x64')) {
  throw new Error(
    `the single executable is built for linux-x64, on linux-x64 (this is ${process.platform}-${process.arch}); --bundle-only makes the bundle anywhere`,
  );
}
const bundle = join(out, CLI_BUNDLE);
const result = await build({
  entryPoints: [join(root, 'src/cli/main.ts')],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  outfile: bundle,
  legalComments: 'none',
  logLevel: 'warning',
  metafile: true,
  plugins: [
    {
      name: 'client-only',
      setup(context) {
        // The server (and with it every database driver) stays out: `serve` says so instead.
        context.onResolve({ filter: /^\.\.\/server\.js$/ }, () => ({
          path: join(root, 'src/cli/no-server.ts'),
        }));
        // src/config/yaml.ts loads yaml on first use through createRequire(import.meta.url),
        // which a CommonJS bundle has not, and a bundle would not hold it: here, statically.
        context.onLoad({ filter: /[\\/]src[\\/]config[\\/]yaml\.ts$/ }, () => ({
          contents: "import * as YAML from 'yaml';\nexport const yaml = () => YAML;\n",
          loader: 'ts',
          resolveDir: join(root, 'src/config'),
        }));
      },
    },
  ],
});
const inputs = Object.keys(result.metafile.inputs);
const native = inputs.filter((input) => /better-sqlite3|[\\/]pg[\\/]|\.node$/.test(input));
if (native.length > 0) throw new Error(`the client bundle took server modules: ${native.join(', ')}`);
const kib = (bytes) => `${(bytes / 1024).toFixed(0)} KiB`;
if (bundleOnly) {
  console.log(`wrote dist/cli/${CLI_BUNDLE} (${kib(statSync(bundle).size)})`);
  process.exit(0);
}

// The executable, the bytes the server serves when it runs on this node.
const blob = await makeSeaBlob(process.execPath, bundle);
const executable = await planSingleExecutable(process.execPath, blob);
const binary = join(out, CLI_NAME);
rmSync(binary, { force: true });
await writeSingleExecutable(executable, binary);
const digest = await digestSingleExecutable(executable);
writeFileSync(join(out, `${CLI_NAME}.sha256`), `${digest}  ${CLI_NAME}\n`);
console.log(
  `wrote dist/cli/${CLI_NAME} (${(executable.size / 1024 / 1024).toFixed(1)} MiB; bundle ${kib(readFileSync(bundle).length)}, SEA blob ${kib(blob.length)}) in ${((Date.now() - started) / 1000).toFixed(1)} s; sha256 ${digest}`,
);
