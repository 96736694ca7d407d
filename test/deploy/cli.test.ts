import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { API, call } from '../support/rest.js';
import {
  ROOT,
  runToExit,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from '../support/server-process.js';

/**
 * The single-executable client (issue 19, point 3), as a CI job without Node.js gets it: built
 * by `npm run build:cli` (test:deploy runs it first), fetched from a running server, checked
 * against its digest, and run in a minimal Debian root that has no node (mmdebstrap
 * --variant=minbase, entered with chroot: it needs root, as CI has).
 */

const BUILT = join(ROOT, 'dist/cli/tracker-linux-x64');
/** By its path: the commands in the root run with the root's PATH, which spawn searches. */
const CHROOT = '/usr/sbin/chroot';

describe('the single-executable CLI, fetched from the server, in a root without Node.js', () => {
  const dir = tempDir('tracker-deploy-');
  const root = join(dir.path, 'root');
  let server: ServerProcess;

  before(async () => {
    assert.ok(
      existsSync(BUILT),
      'npm run build:cli made dist/cli/tracker-linux-x64 (npm run test:deploy does)',
    );
    server = await startServerProcess();
    const made = await runToExit('mmdebstrap', ['--variant=minbase', '--quiet', 'bookworm', root], {
      timeoutMs: 300_000,
    });
    assert.equal(made.code, 0, `mmdebstrap: ${made.stderr}`);
  });
  after(async () => {
    await server?.stop();
    dir.remove();
  });

  /** A command run in the root, with the root's PATH (the commands there are found in it). */
  const inRoot = (command: string[]) =>
    runToExit(CHROOT, [root, ...command], {
      env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/root' },
      timeoutMs: 60_000,
    });

  test('GET /cli/tracker-linux-x64 serves the client made from the blob of build:cli, with its SHA-256, in a header and beside it', async () => {
    const response = await fetch(`${server.baseUrl}/cli/tracker-linux-x64`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/octet-stream');
    const body = Buffer.from(await response.arrayBuffer());
    const digest = createHash('sha256').update(body).digest('hex');
    assert.equal(response.headers.get('x-checksum-sha256'), digest);
    assert.equal(Number(response.headers.get('content-length')), body.length);
    assert.deepEqual(body.subarray(0, 4), Buffer.from([0x7f, 0x45, 0x4c, 0x46]), 'an ELF executable');
    const line = await (await fetch(`${server.baseUrl}/cli/tracker-linux-x64.sha256`)).text();
    assert.equal(line, `${digest}  tracker-linux-x64\n`, "sha256sum's format: sha256sum -c takes it");
    // The server made it from its node and the blob: the bytes build:cli wrote from the same.
    assert.equal(line, readFileSync(`${BUILT}.sha256`, 'utf8'));
    mkdirSync(join(root, 'usr/local/bin'), { recursive: true });
    writeFileSync(join(root, 'usr/local/bin/tracker'), body);
    chmodSync(join(root, 'usr/local/bin/tracker'), 0o755);
    const unknown = await fetch(`${server.baseUrl}/cli/tracker-darwin-arm64`);
    assert.equal(unknown.status, 404);
  });

  test('tracker run works in a root that has no node: the lock is held while the command runs, then released', async (t) => {
    assert.ok(existsSync(join(root, 'usr/local/bin/tracker')), 'fetched by the test before');
    const noNode = await inRoot(['sh', '-c', 'command -v node || echo none']);
    assert.equal(noNode.stdout.trim(), 'none', 'the root has no node');
    const service = `deploy-${randomUUID().slice(0, 8)}`;
    const run = await inRoot([
      ...`tracker run --url ${server.baseUrl} --service ${service} --ttl 30s --`.split(' '),
      ...['sh', '-c', 'echo "held $TRACKER_LOCK_ID $TRACKER_FENCING_TOKEN"'],
    ]);
    assert.equal(run.code, 0, run.stderr);
    const [, id, token] = /^held (\S+) (\d+)$/m.exec(run.stdout) ?? [];
    assert.ok(id && token, run.stdout);
    const history = (await call(server.baseUrl, 'GET', `${API}/history?service=${service}`)).json as {
      events: Array<{ type: string; lock: { id: string } }>;
    };
    assert.deepEqual(
      history.events.map((event) => [event.type, event.lock.id]),
      [
        ['released', id],
        ['acquired', id],
      ],
    );
    // The one command that loads yaml (a dependency the bundle must hold, not require at run time).
    const created = await inRoot(
      'tracker token create --name ci --scopes lock:write --file /root/tokens.yaml'.split(' '),
    );
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /^trk_\S+$/m);
    assert.match(readFileSync(join(root, 'root/tokens.yaml'), 'utf8'), /^\s+- name: ci$/m);
    const size = readFileSync(join(root, 'usr/local/bin/tracker')).length;
    t.diagnostic(`single-executable CLI: ${(size / 1024 / 1024).toFixed(1)} MiB`);
  });
});
