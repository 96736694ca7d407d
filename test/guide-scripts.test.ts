import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { delimiter, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import {
  MAIN,
  type ProcessRun,
  ROOT,
  runToExit,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from './support/server-process.js';

/*
 * The shell examples of the Locks Guide, run verbatim against the real server.
 *
 * test/fixtures/guide/*.sh are byte-for-byte copies of the guide's scripts (the YAML-embedded
 * ones with their YAML indentation removed); the first test fails when they drift from the
 * guide. The scripts hardcode http://localhost:8080, so the server listens on port 8080.
 * What the scripts call (./deploy-app.sh, ./deploy.sh, `npm run migrate`, the CronJob's report
 * generator) is a stub that records the server's lock list while it runs, which proves the
 * lock is held during the critical work. Every test then checks the server's state itself.
 */

const GUIDE_PORT = 8080;
/** What the guide's scripts are configured with. */
const GUIDE_URL = `http://localhost:${GUIDE_PORT}`;
/** What this test and its stubs use: the address the server is bound to. */
const API = `http://127.0.0.1:${GUIDE_PORT}/api/v1alpha1`;
const FIXTURES = join(ROOT, 'test/fixtures/guide');
/** The Locks Guide, kept in the repository byte for byte (the API contract). */
const GUIDE = join(ROOT, 'docs/locks-guide.txt');
/** SHA-256 of the guide as published (the shared spec 000_8f36b4156da07615.txt). */
const GUIDE_SHA256 = '3048380c67141001708bdd9a07030e17b129a9da20bfa8f6c66128c93e47411d';
/** Where the published guide sits beside a development checkout, when it does. */
const PUBLISHED_GUIDE = join(ROOT, '../shared/spec/000_8f36b4156da07615.txt');
const SCRIPT_TIMEOUT_MS = 30_000;

/** Fixtures cut out of a YAML block: how far the guide indents them. */
const YAML_INDENT: Readonly<Record<string, number>> = {
  'github-actions-acquire.sh': 10,
  'github-actions-release.sh': 10,
  'k8s-cronjob.sh': 14,
};

/** Every fixture this file runs; the drift guard also checks none is missing. */
const FIXTURE_NAMES = [
  'batch-job.sh',
  'cleanup-stale-locks.sh',
  'config-update.sh',
  'deploy.sh',
  'github-actions-acquire.sh',
  'github-actions-release.sh',
  'k8s-cronjob.sh',
  'migrate.sh',
  'monitoring-list-active.sh',
  'monitoring-older-than-1h.sh',
  'retry-acquire.sh',
  'timeout.sh',
  'trap-release.sh',
] as const;
type FixtureName = (typeof FIXTURE_NAMES)[number];

interface LockJson {
  id: string;
  service: string;
  who: string;
  createdAt: string;
}
interface LockList {
  locks: LockJson[];
  total: number;
  page: number;
  perPage: number;
}

// ---------------------------------------------------------------------------------------
// Running bash
// ---------------------------------------------------------------------------------------

type BashRun = ProcessRun;

/** Runs bash in its own process group, killed whole if it outlives the timeout. */
function runBash(
  args: string[],
  options: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs?: number },
): Promise<BashRun> {
  return runToExit('bash', args, { ...options, timeoutMs: options.timeoutMs ?? SCRIPT_TIMEOUT_MS });
}

/** For assertion messages: everything the script printed. */
function shown(run: BashRun): string {
  return `exit ${run.code ?? run.signal}\n--- stdout ---\n${run.stdout}--- stderr ---\n${run.stderr}`;
}

function readFixture(name: FixtureName): string {
  return readFileSync(join(FIXTURES, name), 'utf8');
}

/**
 * Replaces `${{ expr }}` the way the Actions runner does before it runs a step; an
 * expression with no value given fails the test rather than running a half-rendered script.
 */
function renderActions(script: string, values: Readonly<Record<string, string>>): string {
  return script.replace(/\$\{\{\s*([^}]*?)\s*\}\}/g, (_match, expression: string) => {
    const value = values[expression];
    if (value === undefined) throw new Error(`no value for the Actions expression ${expression}`);
    return value;
  });
}

/** jq prints a stream of pretty-printed top-level values; this reads objects back. */
function parseJqObjects(text: string): LockJson[] {
  const trimmed = text.trim();
  if (trimmed === '') return [];
  return JSON.parse(`[${trimmed.replace(/\n\}\n\{/g, '\n},\n{')}]`) as LockJson[];
}

// ---------------------------------------------------------------------------------------
// Workspaces: a temp working directory with stubs for what the scripts call
// ---------------------------------------------------------------------------------------

let suiteDir: { path: string; remove: () => void } | undefined;
let workspaceCount = 0;

/** The stubs the guide's scripts call, by the name the workspace gives them. */
type StubName = 'deploy-app.sh' | 'deploy.sh' | 'generate-report.sh' | 'db-migrate.sh';
const STUBS: readonly StubName[] = ['deploy-app.sh', 'deploy.sh', 'generate-report.sh', 'db-migrate.sh'];

interface Workspace {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  /** The lock list a stub saw while it ran, or undefined if it did not run. */
  observed(stub: StubName): LockJson[] | undefined;
  /** The stubs that ran, in order. */
  workLog(): string[];
  /** The arguments of every `sleep` call, in order. */
  sleepLog(): string[];
  /** Writes a bash file into the workspace and returns its path. */
  writeScript(name: string, text: string): string;
}

function executable(path: string, text: string): void {
  writeFileSync(path, text);
  chmodSync(path, 0o755);
}

/**
 * A fresh working directory. Each stub appends its name to work.log, saves the server's
 * lock list to <stub>.observed.json and exits with `stubExit`. `bin/sleep` is first in PATH:
 * it logs its arguments, runs the workspace's sleep-hook.sh if there is one, and returns at
 * once, so the retry loop's `sleep 30` stays verbatim.
 */
function makeWorkspace(options: { stubExit?: number; env?: NodeJS.ProcessEnv } = {}): Workspace {
  assert.ok(suiteDir, 'the suite directory exists');
  workspaceCount += 1;
  const dir = join(suiteDir.path, `ws-${workspaceCount}`);
  const bin = join(dir, 'bin');
  const home = join(dir, 'home');
  mkdirSync(bin, { recursive: true });
  mkdirSync(home);
  for (const stub of STUBS) {
    executable(
      join(dir, stub),
      [
        '#!/bin/bash',
        `# Stand-in for ${stub}: records the locks the server holds while the critical work runs.`,
        `echo '${stub}' >> '${dir}/work.log'`,
        `curl -s '${API}/locks/list?per_page=100' > '${dir}/${stub}.observed.json'`,
        `echo '${stub}: working'`,
        `exit ${options.stubExit ?? 0}`,
        '',
      ].join('\n'),
    );
  }
  writeFileSync(
    join(dir, 'package.json'),
    `${JSON.stringify({ name: 'guide-migrate-stub', private: true, scripts: { migrate: './db-migrate.sh' } })}\n`,
  );
  executable(
    join(bin, 'sleep'),
    [
      '#!/bin/bash',
      `echo "$*" >> '${dir}/sleep.log'`,
      `n=$(wc -l < '${dir}/sleep.log')`,
      `if [ -x '${dir}/sleep-hook.sh' ]; then '${dir}/sleep-hook.sh' "$n"; fi`,
      'exit 0',
      '',
    ].join('\n'),
  );
  const lines = (file: string) =>
    existsSync(join(dir, file)) ? readFileSync(join(dir, file), 'utf8').split('\n').filter(Boolean) : [];
  return {
    dir,
    // A small, explicit environment: no proxy variables, no ~/.curlrc, no npm_* of the test run.
    env: {
      PATH: `${bin}${delimiter}${process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'}`,
      HOME: home,
      USER: 'tester',
      npm_config_update_notifier: 'false',
      ...options.env,
    },
    observed(stub) {
      const file = join(dir, `${stub}.observed.json`);
      if (!existsSync(file)) return undefined;
      return (JSON.parse(readFileSync(file, 'utf8')) as LockList).locks;
    },
    workLog: () => lines('work.log'),
    sleepLog: () => lines('sleep.log'),
    writeScript(name, text) {
      const path = join(dir, name);
      executable(path, text);
      return path;
    },
  };
}

/** Runs a fixture file with bash in the workspace. */
function runFixture(ws: Workspace, name: FixtureName): Promise<BashRun> {
  return runBash([join(FIXTURES, name)], { cwd: ws.dir, env: ws.env });
}

// ---------------------------------------------------------------------------------------
// The server on port 8080, and direct calls to it
// ---------------------------------------------------------------------------------------

let server: ServerProcess | undefined;
let dbFile = '';

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (accepted: boolean) => {
      socket.destroy();
      resolve(accepted);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

async function startGuideServer(): Promise<void> {
  // curl may try ::1 before 127.0.0.1 for "localhost", so a listener on either would answer
  // the guide's scripts instead of ours.
  for (const host of ['127.0.0.1', '::1']) {
    if (await accepts(host, GUIDE_PORT)) {
      throw new Error(
        `port ${GUIDE_PORT} is already in use (something accepts connections on [${host}]:${GUIDE_PORT}). ` +
          `The guide's scripts hardcode ${GUIDE_URL}, so this test needs that port: stop the other process.`,
      );
    }
  }
  try {
    server = await startServerProcess({
      args: [
        '--http-port',
        String(GUIDE_PORT),
        '--grpc-port',
        '0',
        '--host',
        '127.0.0.1',
        '--database-url',
        `sqlite:${dbFile}`,
      ],
    });
  } catch (error) {
    throw new Error(`could not start the server on port ${GUIDE_PORT}: ${(error as Error).message}`);
  }
}

async function stopGuideServer(): Promise<void> {
  const running = server;
  server = undefined;
  if (running) assert.equal(await running.stop(), 0, 'the server stops cleanly');
}

async function listLocks(): Promise<LockList> {
  const response = await fetch(`${API}/locks/list?per_page=100`);
  assert.equal(response.status, 200, 'list answers 200');
  return (await response.json()) as LockList;
}

async function acquire(service: string, who: string): Promise<LockJson> {
  const response = await fetch(`${API}/lock`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service, who }),
  });
  assert.equal(response.status, 201, `acquire ${service} as ${who}`);
  return (await response.json()) as LockJson;
}

async function release(id: string): Promise<void> {
  const response = await fetch(`${API}/unlock/${encodeURIComponent(id)}`);
  assert.equal(response.status, 200, `release ${id}`);
}

/** Every test starts from an empty server. */
async function clearLocks(): Promise<void> {
  for (let round = 0; round < 10; round += 1) {
    const { locks } = await listLocks();
    if (locks.length === 0) return;
    for (const lock of locks) await release(lock.id);
  }
  assert.fail('could not empty the server in 10 rounds');
}

/** A clean server and a fresh workspace. */
async function fresh(options: Parameters<typeof makeWorkspace>[0] = {}): Promise<Workspace> {
  await clearLocks();
  return makeWorkspace(options);
}

/** Asserts the server holds exactly these locks (by id, service and who). */
async function assertHeld(
  expected: Array<Pick<LockJson, 'service' | 'who'> & { id?: string }>,
  message: string,
) {
  const { locks, total } = await listLocks();
  assert.equal(total, expected.length, `${message}: ${JSON.stringify(locks)}`);
  assert.deepEqual(
    locks.map((lock) => ({ service: lock.service, who: lock.who })),
    expected.map((lock) => ({ service: lock.service, who: lock.who })),
    message,
  );
  expected.forEach((lock, index) => {
    if (lock.id !== undefined) assert.equal(locks[index]?.id, lock.id, `${message}: same lock id`);
  });
}

/** Asserts the stub ran exactly once and saw exactly one lock, returned for more checks. */
function assertHeldDuringWork(
  ws: Workspace,
  stub: StubName,
  service: string,
  who: string | RegExp,
): LockJson {
  assert.deepEqual(ws.workLog(), [stub], `only ${stub} ran`);
  const seen = ws.observed(stub);
  assert.ok(seen, `${stub} recorded the lock list`);
  assert.equal(seen.length, 1, `${stub} saw exactly one lock: ${JSON.stringify(seen)}`);
  const lock = seen[0];
  assert.ok(lock);
  assert.equal(lock.service, service, `${stub} ran while ${service} was locked`);
  if (typeof who === 'string') assert.equal(lock.who, who);
  else assert.match(lock.who, who);
  return lock;
}

const RELEASED = '{"success":true,"message":"Lock released successfully"}';
const GUIDE_TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

describe('Locks Guide shell scripts, run verbatim against the server', { timeout: 300_000 }, () => {
  before(async () => {
    for (const tool of ['bash', 'curl', 'jq']) {
      const probe = spawnSync(tool, ['--version'], { encoding: 'utf8', timeout: 10_000 });
      if (probe.error || probe.status !== 0) {
        throw new Error(`${tool} is required to run the guide's scripts but \`${tool} --version\` failed`);
      }
    }
    if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` first`);
    suiteDir = tempDir('tracker-guide-');
    dbFile = join(suiteDir.path, 'tracker.db');
    await startGuideServer();

    // The scripts say "localhost"; make sure curl gets from there to this server.
    const probe = await acquire('guide-localhost-probe', 'guide-scripts.test');
    const run = await runBash(['-c', `curl -s "${GUIDE_URL}/api/v1alpha1/lock/$1"`, 'probe', probe.id], {
      cwd: suiteDir.path,
      env: { PATH: process.env.PATH },
    });
    assert.equal(
      run.stdout.includes(probe.id),
      true,
      `curl ${GUIDE_URL} did not reach the server on 127.0.0.1:${GUIDE_PORT}\n${shown(run)}`,
    );
    await release(probe.id);
  });

  after(async () => {
    await stopGuideServer();
    suiteDir?.remove();
  });

  test('the guide in docs/ is the published one, byte for byte', () => {
    const guide = readFileSync(GUIDE);
    assert.equal(createHash('sha256').update(guide).digest('hex'), GUIDE_SHA256);
    // Beside a development checkout the published file is there too: the same bytes.
    if (existsSync(PUBLISHED_GUIDE)) assert.deepEqual(readFileSync(PUBLISHED_GUIDE), guide);
  });

  test('drift guard: every fixture is a verbatim copy of a script in the guide', () => {
    const guide = readFileSync(GUIDE, 'utf8');
    const files = readdirSync(FIXTURES).filter((file) => file.endsWith('.sh'));
    assert.deepEqual(
      files.sort(),
      [...FIXTURE_NAMES].sort(),
      'the fixture folder holds exactly the scripts run here',
    );
    for (const name of FIXTURE_NAMES) {
      const text = readFixture(name);
      const indent = ' '.repeat(YAML_INDENT[name] ?? 0);
      // Put back the YAML indentation on every line (blank lines in the guide's YAML blocks
      // carry it too); the final '' after the last newline stays as it is.
      const lines = text.split('\n');
      const inGuide = lines
        .map((line, index) => (index === lines.length - 1 ? line : indent + line))
        .join('\n');
      assert.ok(text.endsWith('\n'), `${name} ends with a newline`);
      assert.ok(guide.includes(inGuide), `${name} no longer matches the guide word for word`);
    }
  });

  describe('Use Case 1: deploy.sh', () => {
    test('free lock: acquires it, deploys while holding it, then releases it', async () => {
      const ws = await fresh({ env: { CI_PIPELINE_ID: 'ci-pipeline-123' } });
      const run = await runFixture(ws, 'deploy.sh');
      assert.equal(run.code, 0, shown(run));
      assert.ok(run.stdout.startsWith('Deploying application...\n'), shown(run));
      assertHeldDuringWork(ws, 'deploy-app.sh', 'production-deployment', 'ci-pipeline-123');
      assert.ok(run.stdout.endsWith(RELEASED), shown(run));
      await assertHeld([], 'the deployment lock is released afterwards');
    });

    test('held lock: prints "Deployment already in progress", exits 1, leaves the holder alone', async () => {
      const ws = await fresh({ env: { CI_PIPELINE_ID: 'ci-pipeline-124' } });
      const holder = await acquire('production-deployment', 'ci-pipeline-123');
      const run = await runFixture(ws, 'deploy.sh');
      assert.equal(run.code, 1, shown(run));
      assert.equal(run.stdout, 'Deployment already in progress\n', shown(run));
      assert.deepEqual(ws.workLog(), [], 'nothing was deployed');
      await assertHeld([holder], 'the holder keeps its lock');
    });

    test('without CI_PIPELINE_ID: the empty "who" is refused, nothing is deployed or locked', async () => {
      const ws = await fresh();
      const run = await runFixture(ws, 'deploy.sh');
      assert.equal(run.code, 1, shown(run));
      assert.equal(run.stdout, 'Deployment already in progress\n', shown(run));
      assert.deepEqual(ws.workLog(), []);
      await assertHeld([], 'no lock was created for an empty owner');
    });
  });

  describe('Use Case 2: migrate.sh', () => {
    test('free lock: runs `npm run migrate` while holding the lock, then releases it', async () => {
      const ws = await fresh();
      const run = await runFixture(ws, 'migrate.sh');
      assert.equal(run.code, 0, shown(run));
      assert.ok(run.stdout.startsWith('Running database migrations...\n'), shown(run));
      assertHeldDuringWork(ws, 'db-migrate.sh', 'database-migration', /^migration-job-\d+$/);
      assert.ok(run.stdout.endsWith(RELEASED), shown(run));
      await assertHeld([], 'the migration lock is released afterwards');
    });

    test('held lock: prints "Migration already running" and exits 0 without migrating', async () => {
      const ws = await fresh();
      const holder = await acquire('database-migration', 'migration-job-1700000000');
      const run = await runFixture(ws, 'migrate.sh');
      assert.equal(run.code, 0, shown(run));
      assert.equal(run.stdout, 'Migration already running\n', shown(run));
      assert.deepEqual(ws.workLog(), [], 'no migration ran');
      await assertHeld([holder], 'the holder keeps its lock');
    });
  });

  describe('Use Cases 3 and 4: acquire-only one-liners', () => {
    const hostname = (): string => {
      const result = spawnSync('hostname', [], { encoding: 'utf8', timeout: 10_000 });
      assert.equal(result.status, 0, 'hostname runs');
      return result.stdout.trim();
    };

    test('batch job: acquires nightly-report-generation as cron-job-$(hostname)', async () => {
      const ws = await fresh();
      const run = await runFixture(ws, 'batch-job.sh');
      assert.equal(run.code, 0, shown(run));
      const body = JSON.parse(run.stdout) as LockJson;
      assert.equal(body.service, 'nightly-report-generation');
      assert.equal(body.who, `cron-job-${hostname()}`);
      assert.match(body.createdAt, GUIDE_TIMESTAMP);
      await assertHeld([body], 'the batch lock stays held (the guide releases it later)');
    });

    test('batch job: a second run prints the 409 body naming the holder', async () => {
      const ws = await fresh();
      const holder = await acquire('nightly-report-generation', 'cron-job-other-host');
      const run = await runFixture(ws, 'batch-job.sh');
      assert.equal(run.code, 0, shown(run));
      const body = JSON.parse(run.stdout) as { error: string; code: string; existingLock: LockJson };
      assert.equal(body.error, 'lock already exists');
      assert.equal(body.code, 'LOCK_HELD');
      assert.deepEqual(body.existingLock, holder);
      assert.equal((body as { id?: unknown }).id, undefined, 'no top-level id, so `jq -r .id` prints null');
      await assertHeld([holder], 'the holder keeps its lock');
    });

    test('config update: acquires config-update-production as admin-$USER', async () => {
      const ws = await fresh();
      const run = await runFixture(ws, 'config-update.sh');
      assert.equal(run.code, 0, shown(run));
      const body = JSON.parse(run.stdout) as LockJson;
      assert.equal(body.service, 'config-update-production');
      assert.equal(body.who, 'admin-tester');
      await assertHeld([body], 'the configuration lock stays held');
    });

    test('config update: a concurrent admin gets the 409 body and changes nothing', async () => {
      const ws = await fresh();
      const holder = await acquire('config-update-production', 'admin-alice');
      const run = await runFixture(ws, 'config-update.sh');
      assert.equal(run.code, 0, shown(run));
      const body = JSON.parse(run.stdout) as { code: string; existingLock: LockJson };
      assert.equal(body.code, 'LOCK_HELD');
      assert.deepEqual(body.existingLock, holder);
      await assertHeld([holder], 'the holder keeps its lock');
    });
  });

  describe('Best Practice 3: release with trap', () => {
    test('releases the lock after ./deploy.sh succeeds', async () => {
      const ws = await fresh();
      const run = await runFixture(ws, 'trap-release.sh');
      assert.equal(run.code, 0, shown(run));
      assertHeldDuringWork(ws, 'deploy.sh', 'deployment', 'pipeline');
      assert.ok(run.stdout.endsWith(RELEASED), shown(run));
      await assertHeld([], 'the trap released the lock');
    });

    test('releases the lock even when ./deploy.sh fails (exit 3)', async () => {
      const ws = await fresh({ stubExit: 3 });
      const run = await runFixture(ws, 'trap-release.sh');
      assert.equal(run.code, 3, `the script keeps deploy.sh's exit status\n${shown(run)}`);
      assertHeldDuringWork(ws, 'deploy.sh', 'deployment', 'pipeline');
      assert.ok(run.stdout.endsWith(RELEASED), shown(run));
      await assertHeld([], 'the trap released the lock after the failure');
    });

    test('held lock: the trap unlocks "null", which is a 404 and leaves the holder alone', async () => {
      const ws = await fresh();
      const holder = await acquire('deployment', 'pipeline');
      const run = await runFixture(ws, 'trap-release.sh');
      // The guide's script does not check LOCK_ID, so deploy.sh runs anyway; the server's
      // part is to refuse "null" as an id and keep the real holder's lock.
      assert.equal(run.code, 0, shown(run));
      assert.deepEqual(ws.workLog(), ['deploy.sh']);
      const answer = JSON.parse(run.stdout.slice(run.stdout.indexOf('{'))) as {
        success: boolean;
        code: string;
      };
      assert.equal(answer.success, false);
      assert.equal(answer.code, 'LOCK_NOT_FOUND');
      await assertHeld([holder], 'the holder keeps its lock');
    });
  });

  describe('Best Practice 4: retry loop', () => {
    test('free lock: acquired on the first attempt, work runs under it, then released', async () => {
      const ws = await fresh();
      const run = await runFixture(ws, 'retry-acquire.sh');
      assert.equal(run.code, 0, shown(run));
      const lock = assertHeldDuringWork(ws, 'deploy.sh', 'deployment', 'pipeline');
      assert.ok(run.stdout.startsWith(`Lock acquired: ${lock.id}\n`), shown(run));
      assert.ok(run.stdout.endsWith(RELEASED), shown(run));
      assert.deepEqual(ws.sleepLog(), [], 'no waiting when the lock is free');
      await assertHeld([], 'the lock is released afterwards');
    });

    test('held lock: 5 attempts with `sleep 30` between them, then exit 1', async () => {
      const ws = await fresh();
      const holder = await acquire('deployment', 'other-pipeline');
      const run = await runFixture(ws, 'retry-acquire.sh');
      assert.equal(run.code, 1, shown(run));
      const attempts = [1, 2, 3, 4, 5].map((n) => `Lock unavailable, attempt ${n}/5\n`).join('');
      assert.equal(run.stdout, `${attempts}Failed to acquire lock after 5 attempts\n`, shown(run));
      assert.deepEqual(ws.sleepLog(), ['30', '30', '30', '30', '30']);
      assert.deepEqual(ws.workLog(), [], 'no work without the lock');
      await assertHeld([holder], 'the holder keeps its lock');
    });

    test('lock released during the retries: acquired on attempt 3', async () => {
      const ws = await fresh();
      const holder = await acquire('deployment', 'other-pipeline');
      // The sleep shim runs this after each `sleep`: the holder finishes after the 2nd wait.
      ws.writeScript(
        'sleep-hook.sh',
        `#!/bin/bash\nif [ "$1" -eq 2 ]; then curl -s -o /dev/null '${API}/unlock/${holder.id}'; fi\n`,
      );
      const run = await runFixture(ws, 'retry-acquire.sh');
      assert.equal(run.code, 0, shown(run));
      const lock = assertHeldDuringWork(ws, 'deploy.sh', 'deployment', 'pipeline');
      assert.notEqual(lock.id, holder.id);
      assert.ok(
        run.stdout.startsWith(
          `Lock unavailable, attempt 1/5\nLock unavailable, attempt 2/5\nLock acquired: ${lock.id}\n`,
        ),
        shown(run),
      );
      assert.deepEqual(ws.sleepLog(), ['30', '30']);
      await assertHeld([], 'the lock is released afterwards');
    });
  });

  describe('Best Practice 5: timeout', () => {
    test('free lock: runs ./deploy.sh under `timeout` while holding the lock, then releases it', async () => {
      const ws = await fresh();
      const run = await runFixture(ws, 'timeout.sh');
      assert.equal(run.code, 0, shown(run));
      assertHeldDuringWork(ws, 'deploy.sh', 'deployment', 'pipeline');
      assert.ok(run.stdout.endsWith(RELEASED), shown(run));
      await assertHeld([], 'the lock is released afterwards');
    });

    test('free lock and a failing ./deploy.sh: the lock is still released', async () => {
      const ws = await fresh({ stubExit: 3 });
      const run = await runFixture(ws, 'timeout.sh');
      assert.equal(run.code, 0, shown(run));
      assertHeldDuringWork(ws, 'deploy.sh', 'deployment', 'pipeline');
      await assertHeld([], 'the lock is released afterwards');
    });

    test('held lock: the release of "null" is a 404 and leaves the holder alone', async () => {
      const ws = await fresh();
      const holder = await acquire('deployment', 'pipeline-1');
      const run = await runFixture(ws, 'timeout.sh');
      assert.equal(run.code, 0, shown(run));
      assert.ok(run.stdout.endsWith('"code":"LOCK_NOT_FOUND"}'), shown(run));
      await assertHeld([holder], 'the holder keeps its lock');
    });
  });

  describe('GitHub Actions workflow', () => {
    const RUN_ID = '9876543210';
    /** The "Deploy Application" step's `run:` line. */
    const DEPLOY_STEP = './deploy.sh\n';

    /** Runs one step the way the runner's default bash shell does: `bash -e {0}`. */
    const runStep = (ws: Workspace, name: string, script: string, githubOutput: string) =>
      runBash(['-e', ws.writeScript(name, script)], {
        cwd: ws.dir,
        env: { ...ws.env, GITHUB_OUTPUT: githubOutput },
      });

    const outputs = (file: string): Record<string, string> =>
      Object.fromEntries(
        readFileSync(file, 'utf8')
          .split('\n')
          .filter((line) => line.includes('='))
          .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
      );

    test('free lock: acquire writes lock_id, the deploy step runs under it, release frees it', async () => {
      const ws = await fresh();
      const githubOutput = join(ws.dir, 'github-output');
      writeFileSync(githubOutput, '');
      const acquireStep = renderActions(readFixture('github-actions-acquire.sh'), {
        'secrets.TRACKER_URL': GUIDE_URL,
        'github.run_id': RUN_ID,
      });
      const acquired = await runStep(ws, 'step-acquire.sh', acquireStep, githubOutput);
      assert.equal(acquired.code, 0, shown(acquired));
      const lockId = outputs(githubOutput).lock_id;
      assert.ok(lockId, `lock_id was written to $GITHUB_OUTPUT\n${shown(acquired)}`);
      await assertHeld(
        [{ id: lockId, service: 'production-deployment', who: `github-actions-${RUN_ID}` }],
        'held',
      );

      const deployed = await runStep(ws, 'step-deploy.sh', DEPLOY_STEP, githubOutput);
      assert.equal(deployed.code, 0, shown(deployed));
      const seen = assertHeldDuringWork(ws, 'deploy.sh', 'production-deployment', `github-actions-${RUN_ID}`);
      assert.equal(seen.id, lockId);

      const releaseStep = renderActions(readFixture('github-actions-release.sh'), {
        'secrets.TRACKER_URL': GUIDE_URL,
        'steps.lock.outputs.lock_id': lockId,
      });
      const released = await runStep(ws, 'step-release.sh', releaseStep, githubOutput);
      assert.equal(released.code, 0, shown(released));
      assert.equal(released.stdout, RELEASED, shown(released));
      await assertHeld([], 'the release step freed the lock');
    });

    test('held lock: acquire exits 1, and the always() release with no lock_id frees nothing', async () => {
      const ws = await fresh();
      const holder = await acquire('production-deployment', 'github-actions-1234567890');
      const githubOutput = join(ws.dir, 'github-output');
      writeFileSync(githubOutput, '');
      const acquireStep = renderActions(readFixture('github-actions-acquire.sh'), {
        'secrets.TRACKER_URL': GUIDE_URL,
        'github.run_id': RUN_ID,
      });
      const acquired = await runStep(ws, 'step-acquire.sh', acquireStep, githubOutput);
      assert.equal(acquired.code, 1, shown(acquired));
      assert.equal(acquired.stdout, 'Deployment already in progress\n', shown(acquired));
      assert.deepEqual(outputs(githubOutput), {}, 'no lock_id output');

      // The deploy step is skipped after a failure; the release step runs (if: always()),
      // and an output that was never set renders as an empty string.
      const releaseStep = renderActions(readFixture('github-actions-release.sh'), {
        'secrets.TRACKER_URL': GUIDE_URL,
        'steps.lock.outputs.lock_id': outputs(githubOutput).lock_id ?? '',
      });
      const released = await runStep(ws, 'step-release.sh', releaseStep, githubOutput);
      assert.equal(released.code, 0, shown(released));
      const answer = JSON.parse(released.stdout) as { success: boolean };
      assert.equal(answer.success, false, shown(released));
      assert.deepEqual(ws.workLog(), []);
      await assertHeld([holder], 'the other run keeps its lock');
    });
  });

  describe('Kubernetes CronJob', () => {
    const POD = 'nightly-report-28391040-x7k2p';
    /**
     * The container's `bash -c` script. /app/generate-report.sh cannot be created here, so
     * that one path, and nothing else, is pointed at the workspace's stub.
     */
    const cronScript = (ws: Workspace) =>
      readFixture('k8s-cronjob.sh').replace('/app/generate-report.sh', join(ws.dir, 'generate-report.sh'));
    const runCron = (ws: Workspace) =>
      runBash(['-c', cronScript(ws)], {
        cwd: ws.dir,
        env: { ...ws.env, TRACKER_URL: GUIDE_URL, HOSTNAME: POD },
      });

    test('free lock: generates the report while holding nightly-report, then releases it', async () => {
      const ws = await fresh();
      assert.ok(cronScript(ws) !== readFixture('k8s-cronjob.sh'), 'the report path was substituted');
      const run = await runCron(ws);
      assert.equal(run.code, 0, shown(run));
      assertHeldDuringWork(ws, 'generate-report.sh', 'nightly-report', `cronjob-${POD}`);
      assert.ok(run.stdout.endsWith(RELEASED), shown(run));
      await assertHeld([], 'the report lock is released afterwards');
    });

    test('held lock: prints "Report generation already running" and exits 0', async () => {
      const ws = await fresh();
      const holder = await acquire('nightly-report', 'cronjob-nightly-report-28391039-abcde');
      const run = await runCron(ws);
      assert.equal(run.code, 0, shown(run));
      assert.equal(run.stdout, 'Report generation already running\n', shown(run));
      assert.deepEqual(ws.workLog(), [], 'no second report');
      await assertHeld([holder], 'the running job keeps its lock');
    });
  });

  describe('Monitoring and cleanup', () => {
    test("list active locks: `jq .locks` prints the server's locks, oldest first", async () => {
      const ws = await fresh();
      const first = await acquire('production-deployment', 'ci-pipeline-1');
      const second = await acquire('database-migration', 'migration-job-2');
      const third = await acquire('nightly-report', 'cronjob-3');
      const run = await runFixture(ws, 'monitoring-list-active.sh');
      assert.equal(run.code, 0, shown(run));
      const printed = JSON.parse(run.stdout) as LockJson[];
      assert.deepEqual(
        printed.map((lock) => lock.service).sort(),
        [first, second, third].map((lock) => lock.service).sort(),
      );
      assert.deepEqual(printed, (await listLocks()).locks, 'the same list, in the server order');
      for (const lock of printed) assert.match(lock.createdAt, GUIDE_TIMESTAMP);
      await assertHeld([first, second, third], 'listing changed nothing');
    });

    test('locks older than 1 hour: only the lock created two hours ago is printed', async () => {
      const ws = await fresh();
      const stale = await acquire('nightly-report-generation', 'cron-job-crashed-host');
      const recent = await acquire('production-deployment', 'ci-pipeline-77');
      // Age the stale lock in the store itself: the server's SQLite file is in WAL mode, so a
      // second connection may write it while the server runs (no restart needed).
      const db = new Database(dbFile);
      try {
        const changed = db
          .prepare('UPDATE locks SET created_at = created_at - ? WHERE id = ?')
          .run(2 * 3600 * 1000, stale.id);
        assert.equal(changed.changes, 1, 'the stale lock row was aged');
      } finally {
        db.close();
      }

      const { locks } = await listLocks();
      assert.deepEqual(
        locks.map((lock) => lock.id),
        [stale.id, recent.id],
        'the server lists both locks, the aged one first',
      );
      assert.equal(
        Date.parse(stale.createdAt) - Date.parse(locks[0]?.createdAt ?? ''),
        2 * 3600 * 1000,
        'the server reads the aged createdAt',
      );
      const run = await runFixture(ws, 'monitoring-older-than-1h.sh');
      assert.equal(run.code, 0, shown(run));
      const printed = parseJqObjects(run.stdout);
      assert.deepEqual(
        printed.map((lock) => lock.id),
        [stale.id],
        `jq's string comparison with \`now - 3600 | todate\` needs createdAt as YYYY-MM-DDTHH:MM:SSZ\n${shown(run)}`,
      );
      assert.equal(printed[0]?.who, 'cron-job-crashed-host');
      assert.match(printed[0]?.createdAt ?? '', GUIDE_TIMESTAMP);
      assert.equal(Date.parse(stale.createdAt) - Date.parse(printed[0]?.createdAt ?? ''), 2 * 3600 * 1000);
      await assertHeld(
        [stale, recent].map(({ id, service, who }) => ({ id, service, who })),
        'listing changed nothing',
      );
    });

    test('cleanup stale locks, verbatim: the placeholder id is no lock, so 404 and nothing released', async () => {
      const ws = await fresh();
      const holder = await acquire('nightly-report-generation', 'cron-job-crashed-host');
      const run = await runFixture(ws, 'cleanup-stale-locks.sh');
      assert.equal(run.code, 0, shown(run));
      const answer = JSON.parse(run.stdout) as { success: boolean; code: string };
      assert.equal(answer.success, false);
      assert.equal(answer.code, 'LOCK_NOT_FOUND');
      await assertHeld([holder], 'the lock is still held');
    });

    test("cleanup stale locks, with the stale lock's id filled in: force-releases it", async () => {
      const ws = await fresh();
      const stale = await acquire('nightly-report-generation', 'cron-job-crashed-host');
      const other = await acquire('production-deployment', 'ci-pipeline-5');
      const text = readFixture('cleanup-stale-locks.sh');
      assert.ok(text.includes('"507f1f77bcf86cd799439011"'), 'the guide placeholder is there');
      const script = ws.writeScript('cleanup.sh', text.replace('507f1f77bcf86cd799439011', stale.id));
      const run = await runBash([script], { cwd: ws.dir, env: ws.env });
      assert.equal(run.code, 0, shown(run));
      assert.equal(run.stdout, RELEASED, shown(run));
      await assertHeld([other], 'only the stale lock was released');
    });
  });
});
