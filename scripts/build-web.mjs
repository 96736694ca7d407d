// Builds the dashboard into dist/web/: web/app.ts and its modules bundled into one ES module
// (with its source map), next to index.html and styles.css. The server (src/http/dashboard.ts)
// serves exactly the files found there; nothing is loaded from elsewhere at run time.
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist/web');

// Start clean: a file left over from an older build would still be served.
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

await build({
  entryPoints: [join(root, 'web/app.ts')],
  outfile: join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  target: 'es2020',
  platform: 'browser',
  minify: true,
  sourcemap: true,
  legalComments: 'none',
  logLevel: 'warning',
  tsconfig: join(root, 'web/tsconfig.json'),
});

for (const file of ['index.html', 'styles.css']) copyFileSync(join(root, 'web', file), join(out, file));
