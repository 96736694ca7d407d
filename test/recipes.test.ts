import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import {
  type ProcessRun,
  ROOT,
  runToExit,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

/*
 * The "Recipes" of README.md (the CLI instead of curl and jq), run against the real
 * server and the real CLI.
 *
 * test/fixtures/recipes/*.sh are the recipes' shell scripts; the first test fails unless each
 * appears verbatim in README.md (YAML-embedded ones with their YAML indentation, the
 * GitLab line as a `script:` item, the Jenkins line inside `sh '...'`). Each runs with bash
 * (Jenkins: sh) in a temporary workspace where `tracker` is a shim for dist/src/cli/main.js,
 * first in PATH and in node_modules/.bin (for `npx tracker`). What the recipes call
 * (./deploy-app.sh, ./deploy.sh, `npm run migrate`, the report generator) is a stub that
 * records the lock env it was given and the server's lock list while it runs.
 */

const FIXTURES = join(ROOT, 'test/fixtures/recipes');
const DOCS = join(ROOT, 'README.md');
const CLI = join(ROOT, 'dist/src/cli/main.js');
const SCRIPT_TIMEOUT_MS = 30_000;

const indent = (spaces: number) => (text: string) =>
  text
    .split('\n')
    .map((line) => (line === '' ? line : `${' '.repeat(spaces)}${line}`))
    .join('\n');

/** How each fixture is written in README.md. */
const IN_DOCS = {
  'deploy.sh': (text: string) => text,
  'migrate.sh': (text: string) => text,
  'github-actions-deploy.sh': indent(10),
  'gitlab-ci-deploy.sh': (text: string) => `    - ${text.trimEnd()}\n`,
  'jenkins-deploy.sh': (text: string) => `sh '${text.trimEnd()}'\n`,
  'k8s-cronjob.sh': indent(14),
} as const;
type Fixture = keyof typeof IN_DOCS;

function fixture(name: Fixture): string {
  return readFileSync(join(FIXTURES, name), 'utf8');
}

interface LockJson {
  id: string;
  service: string;
  who: string;
  fencingToken: number;
}

// ---------------------------------------------------------------------------------------
// The server, and direct calls to it
// ---------------------------------------------------------------------------------------

let server: ServerProcess | undefined;
let suiteDir: { path: string; remove: () => void } | undefined;

function api(path: string): string {
  assert.ok(server, 'the server is running');
  return `${server.baseUrl}/api/v1alpha1${path}`;
}

async function listLocks(service?: string): Promise<LockJson[]> {
  const query = service ? `&service=${encodeURIComponent(service)}` : '';
  const response = await fetch(api(`/locks/list?per_page=100${query}`));
  assert.equal(response.status, 200, 'list answers 200');
  return ((await response.json()) as { locks: LockJson[] }).locks;
}

async function acquire(service: string, who: string): Promise<LockJson> {
  const response = await fetch(api('/lock'), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service, who }),
  });
  assert.equal(response.status, 201, `acquire ${service} as ${who}`);
  return (await response.json()) as LockJson;
}

async function release(id: string): Promise<void> {
  const response = await fetch(api(`/lock/${encodeURIComponent(id)}`), { method: 'DELETE' });
  assert.equal(response.status, 200, `release ${id}`);
}

async function waiters(service: string): Promise<number> {
  const response = await fetch(api(`/queue/${encodeURIComponent(service)}`));
  assert.equal(response.status, 200, 'queue answers 200');
  return ((await response.json()) as { waiters: unknown[] }).waiters.length;
}

// ---------------------------------------------------------------------------------------
// Workspaces: a temp working directory with the tracker shim and stubs
// ---------------------------------------------------------------------------------------

let workspaceCount = 0;

function executable(path: string, text: string): void {
  writeFileSync(path, text);
  chmodSync(path, 0o755);
}

interface Workspace {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  /** What the stub saw while it ran, or undefined if it did not run. */
  ran(): { lockId: string; token: string; service: string; locks: LockJson[] } | undefined;
}

/** A fresh working directory; every stub exits with `stubExit`. */
function workspace(stubExit = 0): Workspace {
  assert.ok(suiteDir && server, 'the suite is set up');
  workspaceCount += 1;
  const dir = join(suiteDir.path, `ws-${workspaceCount}`);
  const bin = join(dir, 'bin');
  const localBin = join(dir, 'node_modules/.bin');
  mkdirSync(bin, { recursive: true });
  mkdirSync(localBin, { recursive: true });
  mkdirSync(join(dir, 'home'));
  const shim = `#!/bin/sh\nexec '${process.execPath}' '${CLI}' "$@"\n`;
  executable(join(bin, 'tracker'), shim);
  executable(join(localBin, 'tracker'), shim);
  const stub = [
    '#!/bin/bash',
    '# Stand-in for the critical work: records the lock it runs under and the server.',
    `echo "$TRACKER_LOCK_ID $TRACKER_FENCING_TOKEN $TRACKER_SERVICE" > '${dir}/ran.txt'`,
    `curl -s --max-time 5 "$TRACKER_URL/api/v1alpha1/locks/list?per_page=100" > '${dir}/observed.json'`,
    `exit ${stubExit}`,
    '',
  ].join('\n');
  for (const name of ['deploy-app.sh', 'deploy.sh', 'generate-report.sh', 'db-migrate.sh']) {
    executable(join(dir, name), stub);
  }
  writeFileSync(
    join(dir, 'package.json'),
    `${JSON.stringify({ name: 'recipes-stub', private: true, scripts: { migrate: './db-migrate.sh' } })}\n`,
  );
  return {
    dir,
    env: {
      PATH: `${bin}${delimiter}${process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'}`,
      HOME: join(dir, 'home'),
      TRACKER_URL: server.baseUrl,
      CI_PIPELINE_ID: '42',
      BUILD_NUMBER: '17',
      HOSTNAME: 'report-pod-1',
      npm_config_update_notifier: 'false',
    },
    ran() {
      if (!existsSync(join(dir, 'ran.txt'))) return undefined;
      const [lockId = '', token = '', service = ''] = readFileSync(join(dir, 'ran.txt'), 'utf8')
        .trim()
        .split(' ');
      const locks = (JSON.parse(readFileSync(join(dir, 'observed.json'), 'utf8')) as { locks: LockJson[] })
        .locks;
      return { lockId, token, service, locks };
    },
  };
}

function shown(run: ProcessRun): string {
  return `exit ${run.code ?? run.signal}\n--- stdout ---\n${run.stdout}--- stderr ---\n${run.stderr}`;
}

/** Runs `command args` in the workspace, bounded by the script timeout. */
function runIn(ws: Workspace, command: string, args: string[]): Promise<ProcessRun> {
  return runToExit(command, args, { cwd: ws.dir, env: ws.env, timeoutMs: SCRIPT_TIMEOUT_MS });
}

/** The stub ran under a lock on `service` held by `who`, and that lock is gone now. */
async function assertRanUnderLock(ws: Workspace, service: string, who: string | RegExp): Promise<string> {
  const ran = ws.ran();
  assert.ok(ran, 'the stub ran');
  assert.equal(ran.service, service, 'TRACKER_SERVICE');
  const held = ran.locks.find((lock) => lock.id === ran.lockId);
  assert.ok(held, `the stub's TRACKER_LOCK_ID was held while it ran: ${JSON.stringify(ran.locks)}`);
  assert.equal(held.service, service);
  if (typeof who === 'string') assert.equal(held.who, who);
  else assert.match(held.who, who);
  assert.equal(String(held.fencingToken), ran.token, 'TRACKER_FENCING_TOKEN is the lock fencing token');
  assert.deepEqual(await listLocks(service), [], 'the lock is released afterwards');
  return ran.lockId;
}

// ---------------------------------------------------------------------------------------

describe('recipes: the CLI instead of curl and jq', () => {
  before(async () => {
    assert.ok(existsSync(CLI), `${CLI} exists (run npm run build)`);
    suiteDir = tempDir('tracker-recipes-');
    server = await startServerProcess();
  });

  after(async () => {
    await server?.stop();
    suiteDir?.remove();
  });

  beforeEach(async () => {
    // Every test starts from an empty server (bounded: a few rounds).
    for (let round = 0; round < 5; round += 1) {
      const locks = await listLocks();
      if (locks.length === 0) return;
      for (const lock of locks) await release(lock.id);
    }
    assert.fail('could not empty the server');
  });

  test('every fixture appears verbatim in README.md', () => {
    const docs = readFileSync(DOCS, 'utf8');
    assert.deepEqual(
      readdirSync(FIXTURES).sort(),
      Object.keys(IN_DOCS).sort(),
      'no fixture is left untested',
    );
    for (const name of Object.keys(IN_DOCS) as Fixture[]) {
      const embedded = IN_DOCS[name](fixture(name));
      assert.ok(docs.includes(embedded), `README.md contains ${name}:\n${embedded}`);
    }
  });

  describe('deploy.sh', () => {
    const script = join(FIXTURES, 'deploy.sh');

    test('deploys under the lock and releases it', async () => {
      const ws = workspace();
      const run = await runIn(ws, 'bash', [script]);
      assert.equal(run.code, 0, shown(run));
      await assertRanUnderLock(ws, 'production-deployment', 'ci-42');
    });

    test("a failing deployment: its exit code passes through, and the lock's released", async () => {
      const ws = workspace(7);
      const run = await runIn(ws, 'bash', [script]);
      assert.equal(run.code, 7, shown(run));
      await assertRanUnderLock(ws, 'production-deployment', 'ci-42');
    });

    test('waits for the deployment before it', async () => {
      const other = await acquire('production-deployment', 'ci-41');
      const ws = workspace();
      const running = runIn(ws, 'bash', [script]);
      await waitFor(async () => (await waiters('production-deployment')) === 1, {
        what: 'the script waiting in line',
        timeoutMs: 15_000,
      });
      assert.equal(ws.ran(), undefined, 'and has not deployed yet');
      await release(other.id);
      const run = await running;
      assert.equal(run.code, 0, shown(run));
      const id = await assertRanUnderLock(ws, 'production-deployment', 'ci-42');
      assert.notEqual(id, other.id);
    });
  });

  describe('migrate.sh', () => {
    const script = join(FIXTURES, 'migrate.sh');

    test('migrates under the lock and releases it', async () => {
      const ws = workspace();
      const run = await runIn(ws, 'bash', [script]);
      assert.equal(run.code, 0, shown(run));
      await assertRanUnderLock(ws, 'database-migration', /^migration-job-\d+$/);
    });

    test('a failing migration fails the script, and the lock is released', async () => {
      const ws = workspace(5);
      const run = await runIn(ws, 'bash', [script]);
      assert.notEqual(run.code, 0, shown(run));
      await assertRanUnderLock(ws, 'database-migration', /^migration-job-\d+$/);
    });

    test('skips with exit 0 when a migration is already running', async () => {
      const other = await acquire('database-migration', 'migration-job-1');
      const ws = workspace();
      const run = await runIn(ws, 'bash', [script]);
      assert.equal(run.code, 0, shown(run));
      assert.match(run.stdout, /Migration already running/);
      assert.equal(ws.ran(), undefined, 'npm run migrate did not run');
      assert.deepEqual(
        (await listLocks('database-migration')).map((lock) => lock.id),
        [other.id],
        'the other job keeps its lock',
      );
    });
  });

  test('GitHub Actions: the run block', async () => {
    const ws = workspace();
    // What the runner does before the step: substitute ${{ ... }}; TRACKER_URL comes from env.
    const text = fixture('github-actions-deploy.sh').replace(/\$\{\{ github\.run_id \}\}/g, '777');
    assert.doesNotMatch(text, /\$\{\{/, 'every expression is substituted');
    writeFileSync(join(ws.dir, 'step.sh'), text);
    const run = await runIn(ws, 'bash', ['-e', join(ws.dir, 'step.sh')]);
    assert.equal(run.code, 0, shown(run));
    await assertRanUnderLock(ws, 'production-deployment', 'github-actions-777');
  });

  test('GitLab CI: the script line', async () => {
    const ws = workspace(9);
    const run = await runIn(ws, 'bash', ['-c', fixture('gitlab-ci-deploy.sh')]);
    assert.equal(run.code, 9, shown(run));
    await assertRanUnderLock(ws, 'production-deployment', 'gitlab-42');
  });

  test('Jenkins: the sh step', async () => {
    const ws = workspace();
    // Jenkins runs `sh` steps with /bin/sh -xe.
    const run = await runIn(ws, 'sh', ['-xe', '-c', fixture('jenkins-deploy.sh')]);
    assert.equal(run.code, 0, shown(run));
    await assertRanUnderLock(ws, 'production-deployment', 'jenkins-17');
  });

  describe('Kubernetes CronJob', () => {
    /**
     * The container's `bash -c` script. The only change: the image's /app/generate-report.sh
     * becomes the workspace's stub, by its absolute path.
     */
    const script = (ws: Workspace) =>
      fixture('k8s-cronjob.sh').replaceAll('/app/generate-report.sh', join(ws.dir, 'generate-report.sh'));

    test('generates the report under the lock and releases it', async () => {
      const ws = workspace();
      const run = await runIn(ws, 'bash', ['-c', script(ws)]);
      assert.equal(run.code, 0, shown(run));
      await assertRanUnderLock(ws, 'nightly-report', 'cronjob-report-pod-1');
    });

    test("a failing report: its exit code passes through, and the lock's released", async () => {
      const ws = workspace(6);
      const run = await runIn(ws, 'bash', ['-c', script(ws)]);
      assert.equal(run.code, 6, shown(run));
      await assertRanUnderLock(ws, 'nightly-report', 'cronjob-report-pod-1');
    });

    test('skips with exit 0 when the report is already running', async () => {
      const other = await acquire('nightly-report', 'cronjob-report-pod-0');
      const ws = workspace();
      const run = await runIn(ws, 'bash', ['-c', script(ws)]);
      assert.equal(run.code, 0, shown(run));
      assert.match(run.stdout, /Report generation already running/);
      assert.equal(ws.ran(), undefined, 'the report generator did not run');
      assert.deepEqual(
        (await listLocks('nightly-report')).map((lock) => lock.id),
        [other.id],
        'the other run keeps its lock',
      );
    });
  });
});
