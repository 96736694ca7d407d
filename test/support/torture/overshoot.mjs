// The fault run's broken variant `overshoot`: a server process started with
// `node --import <this file>` loads core/grants.js with its capacity rule off by one, so that
// a semaphore admits one holder more than its limit. The production code has no branch for
// it: this module rewrites the compiled rule as the server loads it (a module customization
// hook), and refuses to start the server if the rule it rewrites is no longer there (the
// variant would silently stop being broken). Plain JavaScript: the server runs on plain node,
// also when the run itself runs from source.
import { register } from 'node:module';
import { isMainThread } from 'node:worker_threads';

const RULE = 'return holders.length < limit;';
const BROKEN = 'return holders.length <= limit;';

// Loaded by --import on the main thread, it registers itself; the hooks run on their own thread.
if (isMainThread) register(import.meta.url);

export async function load(url, context, nextLoad) {
  const result = await nextLoad(url, context);
  if (!url.endsWith('/core/grants.js')) return result;
  const source = String(result.source);
  if (!source.includes(RULE)) throw new Error(`overshoot: ${url} no longer has "${RULE}"`);
  return { ...result, source: source.replace(RULE, BROKEN) };
}
