// Builds the dashboard into dist/web/: web/app.ts and its modules bundled into one ES module,
// and web/styles.css, each written under a name that carries a hash of its content
// (app-<hash>.js, styles-<hash>.css), and index.html with its `assets/app.js` and
// `assets/styles.css` rewritten to those names. The server (src/http/dashboard.ts) serves
// exactly the files found there, the hashed ones as immutable: a changed file gets a new
// name, so a browser never keeps an old one. No source map is written: none is served.
//
// `--web DIR` and `--out DIR` build another copy of the sources elsewhere (for the tests).
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { web: { type: 'string' }, out: { type: 'string' } } });
const web = resolve(values.web ?? join(root, 'web'));
const out = resolve(values.out ?? join(root, 'dist/web'));

/**
 * `app.js` with `body` -> `app-<the first 16 hex digits of its SHA-256>.js`. The same rule
 * as hashedAssetName() in src/http/dashboard.ts, which serves a file only when its name
 * matches its content this way.
 */
function hashedName(name, body) {
  const hash = createHash('sha256').update(body).digest('hex').slice(0, 16);
  const dot = name.lastIndexOf('.');
  return `${name.slice(0, dot)}-${hash}${name.slice(dot)}`;
}

// Start clean: a file left over from an older build would still be served.
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const bundle = await build({
  entryPoints: [join(web, 'app.ts')],
  outfile: join(out, 'app.js'),
  write: false,
  bundle: true,
  format: 'esm',
  target: 'es2020',
  platform: 'browser',
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
  tsconfig: join(web, 'tsconfig.json'),
});
if (bundle.outputFiles.length !== 1) {
  throw new Error(`esbuild wrote ${bundle.outputFiles.length} files; the dashboard expects one bundle`);
}

const assets = {
  'app.js': bundle.outputFiles[0].contents,
  'styles.css': readFileSync(join(web, 'styles.css')),
};
let html = readFileSync(join(web, 'index.html'), 'utf8');
for (const [name, body] of Object.entries(assets)) {
  const hashed = hashedName(name, body);
  writeFileSync(join(out, hashed), body);
  const reference = `"assets/${name}"`;
  const found = html.split(reference).length - 1;
  if (found !== 1) throw new Error(`${join(web, 'index.html')} must load ${reference} once; found ${found}`);
  html = html.replace(reference, `"assets/${hashed}"`);
}
writeFileSync(join(out, 'index.html'), html);
