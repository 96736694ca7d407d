// Builds the single-executable client (`npm run build:cli`): the CLI bundled into one
// CommonJS file by esbuild, with no server and no native module (`tracker serve` is
// src/cli/no-server.ts there), made into a Node single-executable application (SEA) by
// injecting it into a copy of this node binary with postject. Linux x64 only: the binary is
// this machine's node. Writes dist/cli/tracker-linux-x64 and tracker-linux-x64.sha256, which
// the server serves at GET /cli/tracker-linux-x64.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist/cli');
const name = 'tracker-linux-x64';
const started = Date.now();

if (process.platform !== 'linux' || process.arch !== 'x64') {
  throw new Error(
    `the single executable is built for linux-x64, on linux-x64 (this is ${process.platform}-${process.arch})`,
  );
}
mkdirSync(out, { recursive: true });
const bundle = join(out, 'tracker.cjs');
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
      },
    },
  ],
});
const inputs = Object.keys(result.metafile.inputs);
const native = inputs.filter((input) => /better-sqlite3|[\\/]pg[\\/]|\.node$/.test(input));
if (native.length > 0) throw new Error(`the client bundle took server modules: ${native.join(', ')}`);

const config = join(out, 'sea-config.json');
const blob = join(out, 'sea-prep.blob');
writeFileSync(config, JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true }));
execFileSync(process.execPath, ['--experimental-sea-config', config], { stdio: 'inherit' });
const binary = join(out, name);
rmSync(binary, { force: true });
copyFileSync(process.execPath, binary);
chmodSync(binary, 0o755);
execFileSync(
  process.execPath,
  [
    join(root, 'node_modules/postject/dist/cli.js'),
    binary,
    'NODE_SEA_BLOB',
    blob,
    '--sentinel-fuse',
    'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2',
  ],
  // postject warns of ELF note sections it does not parse (harmless, and known): kept out.
  { stdio: ['ignore', 'ignore', 'pipe'] },
);
rmSync(blob);
rmSync(config);
const digest = createHash('sha256').update(readFileSync(binary)).digest('hex');
writeFileSync(join(out, `${name}.sha256`), `${digest}  ${name}\n`);
const size = readFileSync(binary).length;
console.log(
  `wrote dist/cli/${name} (${(size / 1024 / 1024).toFixed(1)} MiB, bundle ${(readFileSync(bundle).length / 1024).toFixed(0)} KiB) in ${((Date.now() - started) / 1000).toFixed(1)} s; sha256 ${digest}`,
);
