import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { parse } from 'yaml';
import { addToken } from '../src/auth/token-file.js';
import {
  FREE_ARGS,
  type ProcessRun,
  ROOT,
  runToExit,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from './support/server-process.js';
import { waitFor, within } from './support/wait-for.js';

/*
 * The GitHub Action (action/) run as GitHub's runner runs it: `node action/dist/main.js`,
 * then later `node action/dist/post.js`, as child processes with the inputs in INPUT_<NAME>
 * (every input of action.yml, its default when the job gives none), the GITHUB_OUTPUT,
 * GITHUB_ENV and GITHUB_STATE files in a temporary folder, the post step given the state as
 * STATE_<key>, against a real server on a SQLite file.
 */

const ACTION = join(ROOT, 'action');
const STEP_TIMEOUT_MS = 30_000;

interface ActionYml {
  inputs: Record<string, { required?: boolean; default?: string }>;
  outputs: Record<string, unknown>;
  runs: Record<string, string>;
}
const actionYml = parse(readFileSync(join(ACTION, 'action.yml'), 'utf8')) as ActionYml;

interface LockJson {
  id: string;
  service: string;
  who: string;
  createdAt: string;
  expiresAt: string | null;
  fencingToken: number;
  note: string | null;
  link: string | null;
}

let server: ServerProcess | undefined;
let suiteDir: { path: string; remove: () => void } | undefined;
/** Heartbeats started by the tests' jobs: killed at the end, whatever happened. */
const heartbeats = new Set<number>();
/** Main steps still running in the background. */
const running = new Set<ChildProcess>();

function api(path: string): string {
  assert.ok(server, 'the server is running');
  return `${server.baseUrl}/api/v1alpha1${path}`;
}

async function call<T>(method: string, path: string, body?: unknown): Promise<{ status: number; json: T }> {
  const response = await fetch(api(path), {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, json: (text === '' ? {} : JSON.parse(text)) as T };
}

async function holders(service: string): Promise<LockJson[]> {
  const { status, json } = await call<{ locks: LockJson[] }>(
    'GET',
    `/locks/list?per_page=100&service=${encodeURIComponent(service)}`,
  );
  assert.equal(status, 200);
  return json.locks;
}

async function waiters(service: string): Promise<Array<{ who: string }>> {
  const { status, json } = await call<{ waiters: Array<{ who: string }> }>(
    'GET',
    `/queue/${encodeURIComponent(service)}`,
  );
  assert.equal(status, 200);
  return json.waiters;
}

async function acquire(service: string, who: string): Promise<LockJson> {
  const { status, json } = await call<LockJson>('POST', '/lock', { service, who });
  assert.equal(status, 201, `acquire ${service} as ${who}`);
  return json;
}

/** The file commands' format as the runner reads it: `name<<DELIMITER ... DELIMITER` or `name=value`. */
function parseFileCommands(text: string): Record<string, string> {
  const values: Record<string, string> = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (line === '') continue;
    const heredoc = /^([^=<]+)<<(.+)$/.exec(line);
    if (heredoc) {
      const [, name = '', delimiter] = heredoc;
      const end = lines.indexOf(delimiter ?? '', i + 1);
      assert.ok(end > i, `the value of ${name} ends with its delimiter`);
      values[name] = lines.slice(i + 1, end).join('\n');
      i = end;
      continue;
    }
    const equals = line.indexOf('=');
    assert.ok(equals > 0, `a file command line: ${line}`);
    values[line.slice(0, equals)] = line.slice(equals + 1);
  }
  return values;
}

let runs = 0;

/** One job of a workflow run: its inputs and its runner files. */
class Job {
  readonly dir: string;
  readonly runId = String(1000 + ++runs);
  readonly env: NodeJS.ProcessEnv;

  constructor(inputs: Record<string, string>) {
    assert.ok(suiteDir && server);
    this.dir = join(suiteDir.path, `job-${this.runId}`);
    mkdirSync(this.dir);
    for (const file of ['output', 'env', 'state']) writeFileSync(join(this.dir, file), '');
    // As the runner does: every input of action.yml, with its default unless the job gives one.
    const given = { url: server.baseUrl, ...inputs };
    const inputEnv: NodeJS.ProcessEnv = {};
    for (const [name, spec] of Object.entries(actionYml.inputs)) {
      inputEnv[`INPUT_${name.toUpperCase()}`] = given[name as keyof typeof given] ?? spec.default ?? '';
    }
    for (const name of Object.keys(given))
      assert.ok(name in actionYml.inputs, `action.yml has the input ${name}`);
    this.env = {
      PATH: process.env.PATH,
      GITHUB_ACTIONS: 'true',
      GITHUB_SERVER_URL: 'https://github.example.com',
      GITHUB_REPOSITORY: 'octo/app',
      GITHUB_WORKFLOW: 'Deploy',
      GITHUB_RUN_ID: this.runId,
      GITHUB_RUN_ATTEMPT: '1',
      GITHUB_JOB: 'deploy',
      RUNNER_TEMP: this.dir,
      GITHUB_OUTPUT: join(this.dir, 'output'),
      GITHUB_ENV: join(this.dir, 'env'),
      GITHUB_STATE: join(this.dir, 'state'),
      ...inputEnv,
    };
  }

  /** The default holder's name. */
  get who(): string {
    return `octo/app/Deploy#${this.runId}.1/deploy`;
  }

  file(name: 'output' | 'env' | 'state'): Record<string, string> {
    return parseFileCommands(readFileSync(join(this.dir, name), 'utf8'));
  }

  /** The heartbeat's pid from the state; remembered for the clean-up. */
  heartbeat(): number {
    const pid = Number(this.file('state').heartbeat_pid);
    assert.ok(pid > 0, 'main saved the heartbeat pid');
    heartbeats.add(pid);
    return pid;
  }

  /** `node action/dist/main.js` to its end. */
  async main(): Promise<ProcessRun> {
    const run = await runToExit(process.execPath, [join(ACTION, actionYml.runs.main ?? '')], {
      env: this.env,
      timeoutMs: STEP_TIMEOUT_MS,
    });
    if (this.file('state').heartbeat_pid) this.heartbeat();
    return run;
  }

  /** `node action/dist/main.js` in the background (a job waiting in line). */
  startMain(): { child: ChildProcess; exited: Promise<ProcessRun> } {
    const child = spawn(process.execPath, [join(ACTION, actionYml.runs.main ?? '')], {
      env: this.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<ProcessRun>((resolve) => {
      child.once('close', (code, signal) => {
        running.delete(child);
        resolve({ code, signal, stdout, stderr });
      });
    });
    return { child, exited };
  }

  /** `node action/dist/post.js`, given the state main saved as STATE_<key>. */
  post(): Promise<ProcessRun> {
    const stateEnv = Object.fromEntries(
      Object.entries(this.file('state')).map(([key, value]) => [`STATE_${key}`, value]),
    );
    return runToExit(process.execPath, [join(ACTION, actionYml.runs.post ?? '')], {
      env: { ...this.env, ...stateEnv },
      timeoutMs: STEP_TIMEOUT_MS,
    });
  }
}

const shown = (run: ProcessRun) => `exit ${run.code}\nstdout:\n${run.stdout}\nstderr:\n${run.stderr}`;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('the GitHub Action', () => {
  before(async () => {
    suiteDir = tempDir('tracker-action-');
    server = await startServerProcess({
      args: [
        '--http-port',
        '0',
        '--grpc-port',
        '0',
        '--database-url',
        `sqlite:${join(suiteDir.path, 'tracker.db')}`,
      ],
    });
  });

  after(async () => {
    for (const child of running) child.kill('SIGKILL');
    for (const pid of heartbeats) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone, as it should be.
      }
    }
    await server?.stop();
    suiteDir?.remove();
  });

  test('action.yml runs the committed bundles on node20, post always', () => {
    assert.deepEqual(actionYml.runs, {
      using: 'node20',
      main: 'dist/main.js',
      post: 'dist/post.js',
      'post-if': 'always()',
    });
    assert.equal(actionYml.inputs.url?.required, true);
    assert.deepEqual(Object.keys(actionYml.outputs), ['lock-id', 'fencing-token', 'resources']);
  });

  test("the README's workflow uses the action's inputs", () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const block = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)]
      .map((match) => match[1] ?? '')
      .find((text) => text.includes('/action@'));
    assert.ok(block, 'README.md shows a workflow using the action');
    const workflow = parse(block) as {
      jobs: Record<string, { steps: Array<{ uses?: string; with?: object }> }>;
    };
    const steps = Object.values(workflow.jobs).flatMap((job) => job.steps);
    const step = steps.find((candidate) => candidate.uses?.endsWith('/action@v1'));
    assert.ok(step?.with, 'a step with inputs');
    for (const name of Object.keys(step.with)) assert.ok(name in actionYml.inputs, `action.yml has ${name}`);
  });

  test('the committed bundles are what scripts/build-action.mjs builds from the sources', async () => {
    const script = pathToFileURL(join(ROOT, 'scripts/build-action.mjs')).href;
    const { bundleAction } = (await import(script)) as {
      bundleAction(): Promise<Array<{ path: string; text: string }>>;
    };
    const bundles = await bundleAction();
    assert.deepEqual(bundles.map((bundle) => bundle.path).sort(), [
      'action/dist/heartbeat.js',
      'action/dist/main.js',
      'action/dist/post.js',
    ]);
    for (const { path, text } of bundles) {
      assert.ok(
        readFileSync(join(ROOT, path), 'utf8') === text,
        `${path} is out of date: run npm run build:action and commit it`,
      );
      // Everything bundled: GitHub runs them with no node_modules.
      const imports = [...text.matchAll(/^import .* from "([^"]+)";$/gm)].map((match) => match[1]);
      assert.ok(
        imports.every((name) => name?.startsWith('node:')),
        `${path} imports only node: modules: ${imports.join(', ')}`,
      );
    }
  });

  test('main takes the lock and hands it to the job; post releases it', async () => {
    const job = new Job({ service: 'gha-deploy' });
    const main = await job.main();
    assert.equal(main.code, 0, shown(main));

    const [lock, ...others] = await holders('gha-deploy');
    assert.ok(lock, 'the service is held');
    assert.equal(others.length, 0);
    assert.equal(lock.who, job.who, 'held by owner/repo/Workflow#run.attempt/job');
    assert.ok(lock.expiresAt, 'with a lease (ttl 10m by default)');
    assert.equal(
      lock.link,
      `https://github.example.com/octo/app/actions/runs/${job.runId}/attempts/1`,
      "the run's URL",
    );
    assert.equal(lock.note, null, 'no note unless given');

    assert.deepEqual(job.file('output'), {
      'lock-id': lock.id,
      'fencing-token': String(lock.fencingToken),
      resources: 'gha-deploy',
    });
    assert.deepEqual(job.file('env'), {
      TRACKER_LOCK_ID: lock.id,
      TRACKER_FENCING_TOKEN: String(lock.fencingToken),
      TRACKER_SERVICE: 'gha-deploy',
      TRACKER_RESOURCES: 'gha-deploy',
      TRACKER_FENCING_TOKENS: String(lock.fencingToken),
      TRACKER_RESOURCE_0: 'gha-deploy',
    });
    const state = job.file('state');
    assert.equal(state.lock_id, lock.id);
    assert.equal(state.kind, 'lock');
    const heartbeat = job.heartbeat();
    assert.ok(alive(heartbeat), 'the heartbeat runs after main has ended');

    const post = await job.post();
    assert.equal(post.code, 0, shown(post));
    assert.match(post.stdout, new RegExp(`released lock ${lock.id}`));
    assert.deepEqual(await holders('gha-deploy'), [], 'released');
    await waitFor(() => !alive(heartbeat), { what: 'the heartbeat to stop' });
  });

  test("a second job waits in line and gets the lock after the first job's post", async () => {
    const first = new Job({ service: 'gha-queue' });
    assert.equal((await first.main()).code, 0);
    const second = new Job({ service: 'gha-queue' });
    const waiting = second.startMain();
    await waitFor(async () => (await waiters('gha-queue')).some((waiter) => waiter.who === second.who), {
      what: 'the second job in the queue',
    });

    assert.equal((await first.post()).code, 0);
    const main = await within(waiting.exited, { what: 'the second main to end', timeoutMs: STEP_TIMEOUT_MS });
    assert.equal(main.code, 0, shown(main));
    const [lock] = await holders('gha-queue');
    assert.equal(lock?.who, second.who);
    assert.equal(second.file('output')['lock-id'], lock.id);
    second.heartbeat();

    assert.equal((await second.post()).code, 0);
    assert.deepEqual(await holders('gha-queue'), []);
  });

  test('services: one group of every line, all or nothing', async () => {
    const job = new Job({ services: 'gha-db\n  gha-cache  \n\n' });
    const main = await job.main();
    assert.equal(main.code, 0, shown(main));
    const [db] = await holders('gha-db');
    const [cache] = await holders('gha-cache');
    assert.ok(db && cache, 'both held');
    const output = job.file('output');
    const group = await call<{ id: string; locks: LockJson[] }>('GET', `/locks/${output['lock-id']}`);
    assert.equal(group.status, 200, 'lock-id is the group id');
    assert.deepEqual(
      group.json.locks.map((lock) => lock.id),
      [db.id, cache.id],
    );
    assert.equal(output['fencing-token'], `${db.fencingToken},${cache.fencingToken}`);
    assert.equal(output.resources, 'gha-db,gha-cache');
    assert.deepEqual(job.file('env'), {
      TRACKER_GROUP_ID: output['lock-id'],
      TRACKER_RESOURCES: 'gha-db,gha-cache',
      TRACKER_FENCING_TOKENS: `${db.fencingToken},${cache.fencingToken}`,
      TRACKER_RESOURCE_0: 'gha-db',
      TRACKER_RESOURCE_1: 'gha-cache',
    });
    assert.equal(job.file('state').kind, 'group');
    job.heartbeat();

    const post = await job.post();
    assert.equal(post.code, 0, shown(post));
    assert.deepEqual([...(await holders('gha-db')), ...(await holders('gha-cache'))], []);
  });

  test('label and quantity: registered resources, with their properties in the env', async () => {
    for (const [name, host] of [
      ['gha-gpu-1', 'gpu1.internal'],
      ['gha-gpu-2', 'gpu2.internal'],
    ] as const) {
      const put = await call('PUT', `/resources/${name}`, { labels: ['gha-gpu'], properties: { host } });
      assert.equal(put.status, 201);
    }
    const job = new Job({ label: 'gha-gpu', quantity: '2' });
    const main = await job.main();
    assert.equal(main.code, 0, shown(main));
    const env = job.file('env');
    assert.ok(env.TRACKER_GROUP_ID, 'two resources are a group');
    assert.deepEqual(env.TRACKER_RESOURCES?.split(',').sort(), ['gha-gpu-1', 'gha-gpu-2']);
    // Each resource's properties beside its name: gha-gpu-N has the host gpuN.internal.
    for (const index of [0, 1]) {
      const name = env[`TRACKER_RESOURCE_${index}`] ?? '';
      assert.equal(env[`TRACKER_RESOURCE_${index}_HOST`], `gpu${name.slice(-1)}.internal`);
    }
    assert.equal(job.file('output').resources, env.TRACKER_RESOURCES);
    job.heartbeat();

    assert.equal((await job.post()).code, 0);
    assert.deepEqual([...(await holders('gha-gpu-1')), ...(await holders('gha-gpu-2'))], []);
  });

  test('cancelled while waiting: main leaves the queue and exits 1; post releases nothing', async () => {
    const holder = await acquire('gha-cancel', 'someone-else');
    const job = new Job({ service: 'gha-cancel' });
    const waiting = job.startMain();
    await waitFor(async () => (await waiters('gha-cancel')).length === 1, { what: 'the job in the queue' });

    waiting.child.kill('SIGTERM');
    const main = await within(waiting.exited, { what: 'main to end', timeoutMs: STEP_TIMEOUT_MS });
    assert.notEqual(main.code, 0, shown(main));
    assert.match(main.stdout, /cancelled \(SIGTERM\) while waiting for gha-cancel: left the queue/);
    await waitFor(async () => (await waiters('gha-cancel')).length === 0, { what: 'the queue to be empty' });
    assert.deepEqual(job.file('state'), {}, 'no lock id in the state');
    assert.deepEqual(job.file('output'), {});

    const post = await job.post();
    assert.equal(post.code, 0, shown(post));
    assert.match(post.stdout, /nothing to release/);
    assert.deepEqual(
      (await holders('gha-cancel')).map((lock) => lock.id),
      [holder.id],
      'the other holder still holds',
    );
  });

  test('the heartbeat keeps a 2s lease alive past its TTL; killed, the lock expires', async () => {
    const job = new Job({ service: 'gha-heartbeat', ttl: '2s' });
    const main = await job.main();
    assert.equal(main.code, 0, shown(main));
    const heartbeat = job.heartbeat();
    const [granted] = await holders('gha-heartbeat');
    assert.ok(granted?.expiresAt);
    const firstExpiry = Date.parse(granted.expiresAt);

    // Two seconds past the first expiry the lock is still held, with a later expiry.
    const outcome = await waitFor(
      async () => {
        const [lock] = await holders('gha-heartbeat');
        if (lock?.id !== granted.id) return 'lost';
        return Date.now() > firstExpiry + 2000 && Date.parse(lock.expiresAt ?? '') > firstExpiry && 'held';
      },
      { what: 'two seconds past the first expiry', timeoutMs: 15_000 },
    );
    assert.equal(outcome, 'held');

    // A runner that dies takes its heartbeat with it: the lease runs out.
    process.kill(heartbeat, 'SIGKILL');
    await waitFor(async () => (await holders('gha-heartbeat')).length === 0, {
      what: 'the lock to expire',
      timeoutMs: 15_000,
    });

    // The post step of such a job (if it runs at all) tolerates both being gone.
    const post = await job.post();
    assert.equal(post.code, 0, shown(post));
    assert.match(post.stdout, /::warning::Tracker: lock .* was no longer held/);
  });

  test('the heartbeat ends by itself when its lock is taken away (force release)', async () => {
    const job = new Job({ service: 'gha-taken', ttl: '3s' });
    const main = await job.main();
    assert.equal(main.code, 0, shown(main));
    const heartbeat = job.heartbeat();
    const id = job.file('state').lock_id ?? '';
    const forced = await call('POST', `/lock/${id}/force-release`, { reason: 'test' });
    assert.equal(forced.status, 200);
    await waitFor(() => !alive(heartbeat), { what: 'the heartbeat to end', timeoutMs: 15_000 });
    const log = readFileSync(join(job.dir, 'tracker-action', `heartbeat-${id}.log`), 'utf8');
    assert.match(log, new RegExp(`lock ${id} lost: renewal refused`));

    const post = await job.post();
    assert.equal(post.code, 0, shown(post));
    assert.match(post.stdout, /the heartbeat \(process \d+\) had ended/);
    assert.match(post.stdout, /::warning::Tracker: lock .* was no longer held/);
  });

  test("the note input becomes the lock's note; a job refused behind it sees the note and the link", async () => {
    const first = new Job({ service: 'gha-noted', note: 'db migration 42, ask @ops' });
    assert.equal((await first.main()).code, 0);
    const [lock] = await holders('gha-noted');
    assert.equal(lock?.note, 'db migration 42, ask @ops');
    const second = new Job({ service: 'gha-noted', wait: '0' });
    const refused = await second.main();
    assert.equal(refused.code, 1, shown(refused));
    const errors = refused.stdout.split('\n').filter((line) => line.startsWith('::error::'));
    assert.equal(errors.length, 1, shown(refused));
    assert.ok(
      errors[0]?.endsWith(
        `: db migration 42, ask @ops https://github.example.com/octo/app/actions/runs/${first.runId}/attempts/1 (not waiting: wait is 0)`,
      ),
      errors[0],
    );
    assert.equal((await first.post()).code, 0);
  });

  test('held and wait 0: the step fails with one ::error:: line naming the holder', async () => {
    const holder = await acquire('gha-held', 'nightly 100% migration');
    const job = new Job({ service: 'gha-held', wait: '0' });
    const main = await job.main();
    assert.equal(main.code, 1, shown(main));
    const errors = main.stdout.split('\n').filter((line) => line.startsWith('::error::'));
    assert.deepEqual(errors, [
      `::error::Tracker: gha-held is held by nightly 100%25 migration (gha-held since ${holder.createdAt}, lock ${holder.id}) (not waiting: wait is 0)`,
    ]);
    assert.deepEqual(job.file('state'), {});
    assert.equal((await job.post()).code, 0);
  });

  test('the wait runs out: one ::error:: line with every holder', async () => {
    const call1 = await call<LockJson>('POST', '/lock', { service: 'gha-limit', who: 'a', limit: 2 });
    const call2 = await call<LockJson>('POST', '/lock', { service: 'gha-limit', who: 'b', limit: 2 });
    const job = new Job({ service: 'gha-limit', limit: '2', wait: '1s' });
    const main = await job.main();
    assert.equal(main.code, 1, shown(main));
    const errors = main.stdout.split('\n').filter((line) => line.startsWith('::error::'));
    assert.equal(errors.length, 1, shown(main));
    assert.match(
      errors[0] ?? '',
      /^::error::Tracker: waited 1s for gha-limit; still held by a \(gha-limit since .*\); b \(/,
    );
    assert.ok(errors[0]?.includes(call1.json.id) && errors[0].includes(call2.json.id));
  });

  describe('with a token (a server run with --auth-tokens-file)', () => {
    let authServer: ServerProcess | undefined;
    let token = '';

    before(async () => {
      assert.ok(suiteDir);
      const file = join(suiteDir.path, 'tokens.yaml');
      token = addToken(file, { name: 'ci', scopes: ['lock:write'] });
      authServer = await startServerProcess({
        args: [...FREE_ARGS, '--auth-tokens-file', file],
      });
    });

    after(async () => {
      await authServer?.stop();
    });

    async function held(service: string): Promise<LockJson[]> {
      assert.ok(authServer);
      const response = await fetch(`${authServer.baseUrl}/api/v1alpha1/locks/list?service=${service}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(response.status, 200);
      return ((await response.json()) as { locks: LockJson[] }).locks;
    }

    test('main, the heartbeat and post all send the token input', async () => {
      assert.ok(authServer);
      const job = new Job({ url: authServer.baseUrl, token, service: 'gha-auth', ttl: '2s' });
      const main = await job.main();
      assert.equal(main.code, 0, shown(main));
      job.heartbeat();
      const [granted] = await held('gha-auth');
      assert.ok(granted?.expiresAt);
      const firstExpiry = Date.parse(granted.expiresAt);
      const outcome = await waitFor(
        async () => {
          const [lock] = await held('gha-auth');
          if (lock?.id !== granted.id) return 'lost';
          return Date.now() > firstExpiry + 2000 && 'held';
        },
        { what: 'the heartbeat to renew with the token', timeoutMs: 15_000 },
      );
      assert.equal(outcome, 'held');
      const post = await job.post();
      assert.equal(post.code, 0, shown(post));
      assert.deepEqual(await held('gha-auth'), []);
    });

    test('without the token: one ::error:: line, and nothing to release', async () => {
      assert.ok(authServer);
      const job = new Job({ url: authServer.baseUrl, service: 'gha-auth' });
      const main = await job.main();
      assert.equal(main.code, 1, shown(main));
      assert.deepEqual(
        main.stdout.split('\n').filter((line) => line.startsWith('::error::')),
        ['::error::Tracker: could not lock gha-auth: a valid bearer token is required (UNAUTHENTICATED)'],
      );
      assert.equal((await job.post()).code, 0);
    });
  });

  test('inputs that contradict each other fail the step before asking', async () => {
    const job = new Job({ service: 'gha-x', services: 'gha-y' });
    const main = await job.main();
    assert.equal(main.code, 1, shown(main));
    assert.equal(main.stdout, '::error::Tracker: give service (one lock) or services (a group), not both\n');
  });
});
