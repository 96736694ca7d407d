import { createRequire } from 'node:module';

/**
 * The yaml package, loaded when a YAML file (the tokens file, the resources file) is first
 * read or edited: a server without one, and every CLI command but `tracker token`, never pay
 * for it (about 40 ms of start-up).
 */
const require = createRequire(import.meta.url);
let yamlModule: typeof import('yaml') | undefined;

export function yaml(): typeof import('yaml') {
  yamlModule ??= require('yaml') as typeof import('yaml');
  return yamlModule;
}
