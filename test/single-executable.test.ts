import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { CLI_BUNDLE, type CliDownloadOptions, registerCliDownload } from '../src/http/cli-download.js';
import {
  digestSingleExecutable,
  makeSeaBlob,
  planSingleExecutable,
  SingleExecutableError,
  writeSingleExecutable,
} from '../src/single-executable.js';
import { runToExit, tempDir } from './support/server-process.js';

/**
 * The single executable made from this node and a SEA blob (src/single-executable.ts), and the
 * server's GET /cli/tracker-linux-x64 that serves it. test:deploy runs the real client made
 * so in a root without node; here, a small script, so that `npm test` covers the ELF work.
 */

const dir = tempDir('tracker-sea-');
after(() => dir.remove());

/** A SEA blob of `source`, made by this node. */
async function blobOf(name: string, source: string): Promise<Buffer> {
  const main = join(dir.path, `${name}.cjs`);
  writeFileSync(main, source);
  return makeSeaBlob(process.execPath, main);
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

describe('a single executable made from this node and a blob', () => {
  const program = join(dir.path, 'hello');

  before(async () => {
    const blob = await blobOf(
      'hello',
      'console.log(["hello", ...process.argv.slice(2), typeof require].join(" "));',
    );
    await writeSingleExecutable(await planSingleExecutable(process.execPath, blob), program);
  });

  test('runs the blob with its arguments, as its own program (not as node)', async () => {
    const run = await runToExit(program, ['from', 'the blob', '--version'], { timeoutMs: 60_000 });
    assert.equal(run.code, 0, run.stderr);
    // `--version` reaches the script instead of node: the fuse is set and the note found.
    assert.equal(run.stdout, 'hello from the blob --version function\n');
  });

  test('its size and digest are those of the bytes written', async () => {
    const blob = await blobOf('again', 'console.log(1);');
    const executable = await planSingleExecutable(process.execPath, blob);
    const path = join(dir.path, 'again');
    await writeSingleExecutable(executable, path);
    const written = readFileSync(path);
    assert.equal(written.length, executable.size);
    assert.equal(await digestSingleExecutable(executable), sha256(written));
    // Node's bytes, but for the header, the fuse and what follows them.
    const node = readFileSync(process.execPath);
    assert.ok(written.length > node.length);
    assert.equal(Buffer.compare(written.subarray(4096, 65536), node.subarray(4096, 65536)), 0);
  });

  test('refuses what it cannot make one of: not ELF, a node already made one, no fuse', async () => {
    const blob = await blobOf('refused', 'console.log(2);');
    const text = join(dir.path, 'text');
    writeFileSync(text, 'not an executable at all, but long enough to hold an ELF header.......');
    await assert.rejects(planSingleExecutable(text, blob), SingleExecutableError);
    await assert.rejects(planSingleExecutable(program, blob), /already a single executable/);
    // An ELF executable without Node's fuse.
    await assert.rejects(planSingleExecutable('/bin/sh', blob), /has 0 SEA fuses/);
  });
});

describe('GET /cli/tracker-linux-x64', () => {
  const cliDir = tempDir('tracker-cli-');
  /** A "node" that makes no blob, and notes each time it is asked to. */
  const fakeNode = join(dir.path, 'not-node');
  const calls = join(dir.path, 'not-node.calls');
  let app: FastifyInstance;
  let base = '';
  const options: CliDownloadOptions = {
    dir: cliDir.path,
    node: process.execPath,
    platform: 'linux',
    arch: 'x64',
  };

  before(async () => {
    app = Fastify();
    registerCliDownload(app, options);
    // The same routes on a server whose node is another platform's, or is no node at all.
    app.register(
      async (scope) => registerCliDownload(scope, { ...options, platform: 'darwin', arch: 'arm64' }),
      {
        prefix: '/darwin',
      },
    );
    writeFileSync(fakeNode, `#!/bin/sh\necho "$@" >> ${calls}\nexit 1\n`, { mode: 0o755 });
    app.register(async (scope) => registerCliDownload(scope, { ...options, node: fakeNode }), {
      prefix: '/broken',
    });
    base = await app.listen({ host: '127.0.0.1', port: 0 });
  });
  after(async () => {
    await app.close();
    cliDir.remove();
  });

  const notBuilt = async (path: string, why: RegExp) => {
    const response = await fetch(`${base}${path}`);
    assert.equal(response.status, 404, path);
    const body = (await response.json()) as { code: string; error: string };
    assert.equal(body.code, 'CLI_NOT_BUILT');
    assert.match(body.error, why);
  };
  const bundle = join(cliDir.path, CLI_BUNDLE);

  test('404 CLI_NOT_BUILT, saying why, until build:cli has written the bundle', async () => {
    await notBuilt('/cli/tracker-linux-x64', /not built here \(npm run build:cli\)/);
    await notBuilt('/cli/tracker-linux-x64.sha256', /not built here/);
  });

  test('the executable made from the bundle by the server node, with its digest in a header and beside it', async () => {
    writeFileSync(bundle, 'console.log("served");');
    const response = await fetch(`${base}/cli/tracker-linux-x64`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/octet-stream');
    assert.equal(response.headers.get('content-disposition'), 'attachment; filename="tracker-linux-x64"');
    const body = Buffer.from(await response.arrayBuffer());
    assert.equal(Number(response.headers.get('content-length')), body.length);
    assert.equal(response.headers.get('x-checksum-sha256'), sha256(body));
    const line = await (await fetch(`${base}/cli/tracker-linux-x64.sha256`)).text();
    assert.equal(line, `${sha256(body)}  tracker-linux-x64\n`);
    const program = join(dir.path, 'served');
    writeFileSync(program, body, { mode: 0o755 });
    assert.equal((await runToExit(program, [], { timeoutMs: 60_000 })).stdout, 'served\n');

    // A rebuilt bundle is served at the next request.
    writeFileSync(bundle, 'console.log("rebuilt");');
    const rebuilt = await (await fetch(`${base}/cli/tracker-linux-x64.sha256`)).text();
    assert.notEqual(rebuilt, line);
  });

  test('404 CLI_NOT_BUILT where the server node cannot make it: another platform, or no SEA blob made', async () => {
    writeFileSync(bundle, 'console.log(3);');
    await notBuilt('/darwin/cli/tracker-linux-x64.sha256', /darwin-arm64, and makes no linux-x64 executable/);
    await notBuilt('/broken/cli/tracker-linux-x64', /could not be made on this server \(its log says why\)$/);
    // Answered from the failure, not made again at every request (the route is open to all).
    await notBuilt('/broken/cli/tracker-linux-x64.sha256', /could not be made/);
    assert.equal(readFileSync(calls, 'utf8').trim().split('\n').length, 1);
  });
});
