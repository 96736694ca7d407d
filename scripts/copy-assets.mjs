// Copies the non-TypeScript files the server reads at run time (the .proto and the .sql
// migrations) into dist/, at the same relative depth as in the source tree, so that
// src/x/y.ts and dist/src/x/y.js find them by the same relative path.
import { chmodSync, cpSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function copyTree(from, to, keep) {
  for (const entry of readdirSync(join(root, from), { withFileTypes: true })) {
    const src = join(from, entry.name);
    if (entry.isDirectory()) copyTree(src, join(to, entry.name), keep);
    else if (keep(entry.name)) {
      mkdirSync(join(root, to), { recursive: true });
      cpSync(join(root, src), join(root, to, entry.name));
    }
  }
}

copyTree('proto', 'dist/proto', (name) => name.endsWith('.proto'));
copyTree('src', 'dist/src', (name) => name.endsWith('.sql'));

// The `tracker` binary (package.json "bin") must be executable.
chmodSync(join(root, 'dist/src/cli/main.js'), 0o755);
