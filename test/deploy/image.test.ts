import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  cpSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { healthClient, unary } from '../support/grpc-client.js';
import { API, call } from '../support/rest.js';
import { ROOT, runToExit, startServerProcess, tempDir } from '../support/server-process.js';

/**
 * The container image (issue 19, point 1), built and run the only way these machines allow:
 * nothing comes from a registry, so the base is made here (mmdebstrap's minbase, this
 * machine's node, npm and Node headers, its CA bundle: the npm registry is reached through a
 * TLS-inspecting proxy), imported with `podman import`; the Containerfile is built on it with
 * `podman build --isolation chroot`; `podman run` does not work in these VMs, so the image's
 * files are mounted (`podman image mount`) and its command run in them with chroot, as its
 * user, with its environment.
 */

const BASE = 'localhost/tracker-test-base:bookworm';
const IMAGE = 'localhost/tracker:test';
const CHROOT = '/usr/sbin/chroot';
/** What the image may add to its base: 250 MB on a slim Node 20 base of about 200 MB. */
const ADDED_BUDGET = 50e6;

interface ImageConfig {
  User: string;
  Entrypoint: string[];
  Cmd: string[];
  Env: string[];
  Volumes: Record<string, unknown>;
  ExposedPorts: Record<string, unknown>;
  WorkingDir: string;
}

/** What `podman image inspect` says of an image (the health check sits beside its Config). */
interface Inspected {
  Config: ImageConfig;
  Healthcheck?: { Test: string[] };
}

const podman = (...args: string[]) =>
  execFileSync('podman', args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }).trim();

describe('the container image, built from the Containerfile on a base made here', () => {
  const dir = tempDir('tracker-image-');
  const mounts: string[] = [];
  let root = '';
  let config: ImageConfig;
  let healthcheck: string[] = [];
  const timings: string[] = [];

  before(async () => {
    let started = Date.now();
    const base = join(dir.path, 'base');
    const made = await runToExit(
      'mmdebstrap',
      ['--variant=minbase', '--quiet', '--include=ca-certificates', 'bookworm', base],
      {
        timeoutMs: 300_000,
      },
    );
    assert.equal(made.code, 0, made.stderr);
    // This machine's node (a Node 20 build), npm, Node's headers (better-sqlite3 compiles
    // against them: nodejs.org is out of reach) and the CA bundle the proxy needs.
    const node = realpathSync(process.execPath);
    mkdirSync(join(base, 'usr/local/bin'), { recursive: true });
    copyFileSync(node, join(base, 'usr/local/bin/node'));
    chmodSync(join(base, 'usr/local/bin/node'), 0o755);
    const npm = realpathSync(join(dirname(node), '../lib/node_modules/npm'));
    cpSync(npm, join(base, 'usr/local/lib/node_modules/npm'), { recursive: true });
    execFileSync('ln', ['-s', '../lib/node_modules/npm/bin/npm-cli.js', join(base, 'usr/local/bin/npm')]);
    cpSync(join(dirname(node), '../include/node'), join(base, 'usr/local/include/node'), { recursive: true });
    copyFileSync('/etc/ssl/certs/ca-certificates.crt', join(base, 'etc/ssl/certs/ca-certificates.crt'));
    const tar = join(dir.path, 'base.tar');
    execFileSync('tar', ['-C', base, '-cf', tar, '.']);
    podman(
      'import',
      ...['--change', 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt'],
      ...['--change', 'ENV npm_config_nodedir=/usr/local'],
      ...['--change', 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      tar,
      BASE,
    );
    timings.push(`base ${((Date.now() - started) / 1000).toFixed(0)} s`);
    started = Date.now();
    const built = await runToExit(
      'podman',
      [
        'build',
        '--isolation',
        'chroot',
        '--format',
        'docker',
        '--build-arg',
        `BASE=${BASE}`,
        '-t',
        IMAGE,
        '-f',
        'Containerfile',
        '.',
      ],
      { timeoutMs: 900_000, cwd: ROOT },
    );
    assert.equal(built.code, 0, built.stdout.slice(-4000) + built.stderr.slice(-4000));
    timings.push(`build ${((Date.now() - started) / 1000).toFixed(0)} s`);
    const [inspected] = JSON.parse(podman('image', 'inspect', IMAGE)) as Inspected[];
    assert.ok(inspected);
    config = inspected.Config;
    healthcheck = inspected.Healthcheck?.Test ?? [];
    root = podman('image', 'mount', IMAGE);
    // What a runtime gives a container: /proc, the data volume (here a folder of ours), and a
    // writable /tmp (the mounted image is read-only, as the Kubernetes manifests make the
    // root: they mount an emptyDir there, as here a tmpfs).
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'mode=1777,size=64m', 'tmpfs', join(root, 'tmp')]);
    mounts.push(join(root, 'tmp'));
    const data = join(dir.path, 'data');
    mkdirSync(data);
    execFileSync('chown', ['10001:10001', data]);
    execFileSync('mount', ['--bind', data, join(root, 'var/lib/tracker')]);
    mounts.push(join(root, 'var/lib/tracker'));
    execFileSync('mount', ['-t', 'proc', 'proc', join(root, 'proc')]);
    mounts.push(join(root, 'proc'));
  });

  after(() => {
    for (const mount of mounts.reverse()) execFileSync('umount', ['-l', mount]);
    if (root !== '') podman('image', 'unmount', IMAGE);
    for (const image of [IMAGE, BASE]) {
      try {
        podman('rmi', '-f', image);
      } catch {
        // Already gone.
      }
    }
    dir.remove();
  });

  test('its configuration: a non-root user, `tracker serve`, the data volume, the ports, a health check on /healthz', (t) => {
    assert.equal(config.User, '10001:10001');
    assert.deepEqual(config.Entrypoint, ['node', '/opt/tracker/dist/src/cli/main.js']);
    assert.deepEqual(config.Cmd, ['serve']);
    assert.ok('/var/lib/tracker' in config.Volumes);
    assert.deepEqual(Object.keys(config.ExposedPorts).sort(), ['8080/tcp', '8765/tcp']);
    assert.match(healthcheck.join(' '), /\/healthz/);
    assert.ok(config.Env.includes('TRACKER_DATABASE_URL=sqlite:/var/lib/tracker/tracker.db'));
    // Production dependencies only: no compiler-side package, no test tool.
    for (const dev of ['typescript', 'esbuild', '@biomejs', 'playwright-core']) {
      assert.throws(
        () => readFileSync(join(root, 'opt/tracker/node_modules', dev, 'package.json')),
        `${dev} is not in the image`,
      );
    }
    // Nothing the server does not load: no second node (the client is a blob), no SQLite sources.
    assert.throws(() => readFileSync(join(root, 'opt/tracker/dist/cli/tracker-linux-x64')));
    assert.throws(() =>
      readFileSync(join(root, 'opt/tracker/node_modules/better-sqlite3/deps/sqlite3/sqlite3.c')),
    );
    const size = Number(podman('image', 'inspect', IMAGE, '--format', '{{.Size}}'));
    const baseSize = Number(podman('image', 'inspect', BASE, '--format', '{{.Size}}'));
    const added = size - baseSize;
    t.diagnostic(
      `${timings.join(', ')}; image ${(size / 1e6).toFixed(0)} MB, of which the test base ${(baseSize / 1e6).toFixed(0)} MB: Tracker adds ${(added / 1e6).toFixed(1)} MB`,
    );
    // The issue's budget: under 250 MB on node:20-bookworm-slim, which is about 200 MB (it
    // cannot be pulled here: the base above stands in for it, with the same node and npm).
    assert.ok(added < ADDED_BUDGET, `Tracker adds ${added} bytes to its base; the budget is ${ADDED_BUDGET}`);
  });

  test('its command runs the server as the non-root user: a lock taken and released, SIGTERM ends it cleanly', async () => {
    const env = Object.fromEntries(
      config.Env.map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]),
    );
    const [user, group] = config.User.split(':');
    const server = await startServerProcess({
      command: [CHROOT, `--userspec=${user}:${group}`, root, ...config.Entrypoint, ...config.Cmd],
      args: ['--http-port', '0', '--grpc-port', '0'],
      env: { ...env, HOME: '/var/lib/tracker' },
    });
    try {
      const status = readFileSync(`/proc/${server.child.pid}/status`, 'utf8');
      assert.match(status, /^Uid:\s+10001\s+10001\s+10001\s+10001$/m, 'runs as uid 10001');
      const taken = await call(server.baseUrl, 'POST', `${API}/lock`, {
        service: 'image',
        who: 'container-test',
      });
      assert.equal(taken.status, 201, JSON.stringify(taken.json));
      const released = await call(
        server.baseUrl,
        'GET',
        `${API}/unlock/${(taken.json as { id: string }).id}`,
      );
      assert.equal(released.status, 200);
      // The gRPC port, the API docs' files and the metrics: what the slimmed modules must still hold.
      const health = healthClient(server.grpcAddress);
      try {
        assert.deepEqual(await unary(health, 'Check', { service: '' }), { status: 'SERVING' });
      } finally {
        health.close();
      }
      for (const path of ['/docs/swagger-ui-bundle.js', '/docs/swagger-ui.css', '/metrics']) {
        assert.equal((await fetch(`${server.baseUrl}${path}`)).status, 200, path);
      }
      // The client, made by the image's node from the blob: its digest holds, and it runs.
      const cli = await fetch(`${server.baseUrl}/cli/tracker-linux-x64`);
      assert.equal(
        cli.status,
        200,
        `the image serves the single-executable client: ${cli.status === 200 ? '' : `${await cli.text()} ${server.lines.slice(-3).join('\n')}`}`,
      );
      const binary = Buffer.from(await cli.arrayBuffer());
      assert.equal(createHash('sha256').update(binary).digest('hex'), cli.headers.get('x-checksum-sha256'));
      const executable = join(dir.path, 'tracker');
      writeFileSync(executable, binary, { mode: 0o755 });
      const help = await runToExit(executable, ['--help'], { timeoutMs: 30_000 });
      assert.equal(help.code, 0, help.stderr);
      assert.match(help.stdout, /^Usage: tracker /);
      assert.equal(await server.stop(30_000), 0, 'SIGTERM: drained, exit 0');
      assert.ok(
        readFileSync(join(dir.path, 'data', 'tracker.db')).length > 0,
        'the SQLite file is on the volume',
      );
    } finally {
      await server.stop();
    }
  });
});
