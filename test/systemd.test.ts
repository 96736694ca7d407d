import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { API, call } from './support/rest.js';
import { ROOT, runToExit, startServerProcess, tempDir } from './support/server-process.js';

/** deploy/systemd/tracker.service (issue 19, point 4): systemd's own checks, then its command run. */

const UNIT = readFileSync(join(ROOT, 'deploy/systemd/tracker.service'), 'utf8');
const BINARY = '/usr/local/bin/tracker';

/** The unit's `Key=value` lines of a section, in order. */
function directives(section: string): Array<[string, string]> {
  const body = UNIT.split(/^\[/m).find((part) => part.startsWith(`${section}]`)) ?? '';
  return body
    .split('\n')
    .slice(1)
    .filter((line) => /^[A-Za-z]+=/.test(line))
    .map((line) => {
      const at = line.indexOf('=');
      return [line.slice(0, at), line.slice(at + 1)];
    });
}
const service = directives('Service');
const settingOf = (key: string) => service.filter(([name]) => name === key).map(([, value]) => value);

/**
 * The unit as systemd would load it here: `systemd-analyze verify` also checks that ExecStart's
 * program exists, so the installed path points at this checkout's CLI (a two-line wrapper).
 */
function unitHere(dir: string): string {
  const wrapper = join(dir, 'tracker');
  writeFileSync(wrapper, `#!/bin/sh\nexec ${process.execPath} ${join(ROOT, 'dist/src/cli/main.js')} "$@"\n`);
  chmodSync(wrapper, 0o755);
  const path = join(dir, 'tracker.service');
  writeFileSync(path, UNIT.replaceAll(BINARY, wrapper));
  return path;
}

test('systemd-analyze verify takes the unit without a warning; its security exposure is OK (under 2)', async () => {
  const dir = tempDir();
  try {
    const unit = unitHere(dir.path);
    const verify = await runToExit('systemd-analyze', ['verify', unit], { timeoutMs: 30_000, cwd: dir.path });
    assert.equal(verify.code, 0, verify.stderr);
    assert.equal(verify.stderr.trim(), '', 'no warning (an unknown or misspelled key is one)');
    const security = await runToExit('systemd-analyze', ['security', '--offline=yes', unit], {
      timeoutMs: 30_000,
      cwd: dir.path,
    });
    const exposure = /Overall exposure level for tracker\.service: ([\d.]+)/.exec(
      security.stdout + security.stderr,
    );
    assert.ok(exposure, security.stdout + security.stderr);
    assert.ok(Number(exposure[1]) < 2, `exposure ${exposure[1]}: ${security.stdout}`);
  } finally {
    dir.remove();
  }
});

test('hardened as asked: a dynamic user, its state directory, a read-only system, no new privileges, restarts', () => {
  assert.deepEqual(settingOf('DynamicUser'), ['yes']);
  assert.deepEqual(settingOf('StateDirectory'), ['tracker']);
  assert.deepEqual(settingOf('ProtectSystem'), ['strict']);
  assert.deepEqual(settingOf('NoNewPrivileges'), ['yes']);
  assert.deepEqual(settingOf('Restart'), ['on-failure']);
  assert.deepEqual(settingOf('ExecStart'), [`${BINARY} serve`]);
  // The SQLite file lives in the state directory: the one place ProtectSystem=strict lets it write.
  assert.ok(settingOf('Environment').includes('TRACKER_DATABASE_URL=sqlite:/var/lib/tracker/tracker.db'));
  assert.deepEqual(directives('Install'), [['WantedBy', 'multi-user.target']]);
});

test("the unit's command and environment run the server, which SIGTERM stops within TimeoutStopSec", async () => {
  const dir = tempDir();
  try {
    const environment = Object.fromEntries(
      settingOf('Environment').map((entry) => {
        const at = entry.indexOf('=');
        return [entry.slice(0, at), entry.slice(at + 1).replace('/var/lib/tracker', dir.path)];
      }),
    );
    const [program, ...args] = (settingOf('ExecStart')[0] ?? '').split(' ');
    assert.equal(program, BINARY);
    // The installed `tracker`, as the wrapper of this checkout's CLI: `tracker serve`, as the unit says.
    unitHere(dir.path);
    const server = await startServerProcess({
      command: [join(dir.path, 'tracker'), ...args],
      args: ['--http-port', '0', '--grpc-port', '0'],
      env: environment,
    });
    const taken = await call(server.baseUrl, 'POST', `${API}/lock`, { service: 'vm', who: 'systemd-test' });
    assert.equal(taken.status, 201);
    const stopSeconds = Number(settingOf('TimeoutStopSec')[0]);
    const code = await server.stop(stopSeconds * 1000);
    assert.equal(code, 0, 'a clean exit on SIGTERM, before systemd would SIGKILL it');
    assert.ok(
      readFileSync(join(dir.path, 'tracker.db')).length > 0,
      'the SQLite file is in the state directory',
    );
  } finally {
    dir.remove();
  }
});
