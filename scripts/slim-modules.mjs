// Makes an installed production node_modules fit for the container image (the Containerfile
// runs it after `npm prune --omit=dev`): takes out what nothing loads at run time.
//  - type declarations, TypeScript sources, source maps and Markdown, in every package;
//  - @types/* (declarations only);
//  - better-sqlite3's SQLite sources and build files (26 MB): its compiled module stays;
//  - of swagger-ui-dist, every file but those the server serves at /docs (SWAGGER_UI_ASSETS).
// Prints what it took. The image test runs the server from the image (a lock through SQLite,
// the gRPC port, /docs, /metrics): a file taken that something needs fails it.
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { SWAGGER_UI_ASSETS } from '../dist/src/http/openapi.js';

const modules = join(process.cwd(), process.argv[2] ?? 'node_modules');
let taken = 0;
const take = (path) => {
  taken += size(path);
  rmSync(path, { recursive: true, force: true });
};
const size = (path) => {
  const stats = statSync(path, { throwIfNoEntry: false });
  if (stats === undefined) return 0;
  if (!stats.isDirectory()) return stats.size;
  return readdirSync(path).reduce((total, entry) => total + size(join(path, entry)), 0);
};

const NOT_RUN = /(\.d\.[cm]?ts|\.[cm]?ts|\.map|\.md|\.markdown)$/i;
const walk = (dir) => {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) walk(path);
    else if (entry.isFile() && NOT_RUN.test(entry.name)) take(path);
  }
};
const before = size(modules);
walk(modules);
take(join(modules, '@types'));

const sqlite = join(modules, 'better-sqlite3');
for (const part of ['deps', 'src', 'binding.gyp']) take(join(sqlite, part));
const release = join(sqlite, 'build/Release');
for (const entry of readdirSync(release)) if (entry !== 'better_sqlite3.node') take(join(release, entry));
for (const entry of readdirSync(join(sqlite, 'build')))
  if (entry !== 'Release') take(join(sqlite, 'build', entry));

const swagger = join(modules, 'swagger-ui-dist');
const kept = new Set([...Object.keys(SWAGGER_UI_ASSETS), 'package.json', 'LICENSE', 'NOTICE']);
for (const entry of readdirSync(swagger)) if (!kept.has(entry)) take(join(swagger, entry));

console.log(
  `slim-modules: ${relative(process.cwd(), modules)} ${(before / 1e6).toFixed(1)} MB → ${((before - taken) / 1e6).toFixed(1)} MB`,
);
