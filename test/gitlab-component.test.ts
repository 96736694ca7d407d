import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
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

/*
 * The GitLab CI/CD component (templates/tracker-lock.yml) rendered as GitLab renders it: the
 * `spec: inputs:` header checked and its defaults applied, every `$[[ inputs.X ]]` of the
 * rest replaced in the text before it is read as YAML (GitLab's text interpolation), then
 * the job's `script` run by a shell with GitLab's predefined variables, against a real
 * server, with `tracker` a shim for this repository's built CLI.
 */

const TEMPLATE = join(ROOT, 'templates/tracker-lock.yml');
const CLI = join(ROOT, 'dist/src/cli/main.js');
const JOB_TIMEOUT_MS = 30_000;

interface InputSpec {
  default?: string;
  regex?: string;
  options?: string[];
}

interface LockJson {
  id: string;
  service: string;
  who: string;
  note: string | null;
  link: string | null;
}

/** The header's inputs and the template after it, as text. */
function readTemplate(): { inputs: Record<string, InputSpec>; body: string } {
  const text = readFileSync(TEMPLATE, 'utf8');
  const [header, ...rest] = parseAllDocuments(text);
  assert.ok(header && rest.length === 1, 'a spec header, ---, and the template');
  const spec = header.toJS() as { spec: { inputs: Record<string, InputSpec | null> } };
  const inputs = Object.fromEntries(Object.entries(spec.spec.inputs).map(([name, s]) => [name, s ?? {}]));
  const separator = text.indexOf('\n---\n');
  assert.ok(separator > 0);
  return { inputs, body: text.slice(separator + 5) };
}

/**
 * The job GitLab makes of the component with `given` inputs: each input checked against its
 * regex and options, missing ones from their defaults (an input without default is
 * required), then substituted in the template's text.
 */
function render(given: Record<string, string>): {
  name: string;
  job: { stage: string; image: string; script: string[] };
} {
  const { inputs, body } = readTemplate();
  const values: Record<string, string> = {};
  for (const name of Object.keys(given)) assert.ok(name in inputs, `the component has the input ${name}`);
  for (const [name, spec] of Object.entries(inputs)) {
    const value = given[name] ?? spec.default;
    assert.ok(value !== undefined, `the input ${name} is required`);
    if (spec.regex !== undefined) {
      assert.match(value, new RegExp(spec.regex), `the input ${name} matches its regex`);
    }
    if (spec.options !== undefined) assert.ok(spec.options.includes(value), `${name} is one of its options`);
    values[name] = value;
  }
  const text = body.replace(/\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*\]\]/g, (_, name: string) => {
    const value = values[name];
    assert.ok(value !== undefined, `the template uses the declared input ${name}`);
    return value;
  });
  const jobs = parse(text) as Record<string, { stage: string; image: string; script: string[] }>;
  const [[name, job] = []] = Object.entries(jobs);
  assert.ok(name && job, 'one job');
  return { name, job };
}

let server: ServerProcess | undefined;
let suiteDir: { path: string; remove: () => void } | undefined;
let jobs = 0;

async function holders(service: string): Promise<LockJson[]> {
  assert.ok(server);
  const response = await fetch(
    `${server.baseUrl}/api/v1alpha1/locks/list?per_page=100&service=${encodeURIComponent(service)}`,
  );
  assert.equal(response.status, 200);
  return ((await response.json()) as { locks: LockJson[] }).locks;
}

interface JobRun extends ProcessRun {
  /** The folder the job's files went to ($OUT). */
  out: string;
  /** What ./deploy.sh saw while it ran, if it ran. */
  seen?: { lockId: string; env: Record<string, string>; locks: LockJson[] };
}

/**
 * Runs the rendered job as a GitLab runner would: its script items in one `shell` (bash:
 * `set -eo pipefail`, as the runner does; sh: `set -e`), in a fresh project folder that holds
 * ./deploy.sh, with the predefined CI_* variables.
 */
async function runJob(
  inputs: Record<string, string>,
  options: { shell?: 'bash' | 'sh'; env?: Record<string, string> } = {},
): Promise<JobRun> {
  assert.ok(server && suiteDir);
  const id = ++jobs;
  const dir = join(suiteDir.path, `job-${id}`);
  const out = join(dir, 'out');
  mkdirSync(out, { recursive: true });
  // The deploy script: records the lock's variables and the server's locks while it runs.
  writeFileSync(
    join(dir, 'deploy.sh'),
    [
      '#!/bin/sh',
      'printf "%s" "$TRACKER_LOCK_ID" > "$OUT/lock-id"',
      'env | grep "^TRACKER_" | grep -v "^TRACKER_TOKEN=" | sort > "$OUT/env"',
      'tracker lock list --json > "$OUT/locks.json"',
      'exit $((DEPLOY_EXIT + 0))',
      '',
    ].join('\n'),
  );
  chmodSync(join(dir, 'deploy.sh'), 0o755);

  const { name, job } = render({ url: server.baseUrl, script: './deploy.sh', ...inputs });
  const shell = options.shell ?? 'bash';
  const prologue = shell === 'bash' ? 'set -eo pipefail' : 'set -e';
  writeFileSync(join(dir, 'job.sh'), [prologue, ...job.script, ''].join('\n'));
  const run = await runToExit(shell, [join(dir, 'job.sh')], {
    cwd: dir,
    timeoutMs: JOB_TIMEOUT_MS,
    env: {
      PATH: `${join(suiteDir.path, 'bin')}:${process.env.PATH ?? ''}`,
      HOME: dir,
      CI: 'true',
      GITLAB_CI: 'true',
      CI_PROJECT_PATH: 'group/app',
      CI_PROJECT_DIR: dir,
      CI_PIPELINE_ID: String(4200 + id),
      CI_JOB_ID: String(9900 + id),
      CI_JOB_NAME: name,
      CI_JOB_STAGE: job.stage,
      CI_JOB_URL: `https://gitlab.example.com/group/app/-/jobs/${9900 + id}`,
      OUT: out,
      ...options.env,
    },
  });
  if (!existsSync(join(out, 'locks.json'))) return { ...run, out };
  const locks = JSON.parse(readFileSync(join(out, 'locks.json'), 'utf8')) as
    | LockJson[]
    | { locks: LockJson[] };
  const env = Object.fromEntries(
    readFileSync(join(out, 'env'), 'utf8')
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
  return {
    ...run,
    out,
    seen: {
      lockId: readFileSync(join(out, 'lock-id'), 'utf8'),
      env,
      locks: Array.isArray(locks) ? locks : locks.locks,
    },
  };
}

const shown = (run: ProcessRun) => `exit ${run.code}\nstdout:\n${run.stdout}\nstderr:\n${run.stderr}`;

describe('the GitLab CI/CD component', () => {
  before(async () => {
    suiteDir = tempDir('tracker-gitlab-');
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
    // `tracker` as the image would have it: this repository's built CLI.
    mkdirSync(join(suiteDir.path, 'bin'));
    writeFileSync(
      join(suiteDir.path, 'bin/tracker'),
      `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`,
    );
    chmodSync(join(suiteDir.path, 'bin/tracker'), 0o755);
  });

  after(async () => {
    await server?.stop();
    suiteDir?.remove();
  });

  test('the job: its stage, image and one script item', () => {
    const { name, job } = render({ url: 'https://tracker.example.com', service: 'x', script: './deploy.sh' });
    assert.equal(name, 'tracker-lock');
    assert.equal(job.stage, 'deploy');
    assert.equal(job.image, 'node:20');
    assert.equal(job.script.length, 1);
    assert.throws(() => render({ service: 'x', script: './deploy.sh' }), /the input url is required/);
    assert.throws(() => render({ url: 'u', service: 'x' }), /the input script is required/);
  });

  test("the README's include renders with the component's inputs", () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const block = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)]
      .map((match) => match[1] ?? '')
      .find((text) => text.includes('component: $CI_SERVER_FQDN/'));
    assert.ok(block, 'README.md shows the component included');
    const config = parse(block) as { include: Array<{ component: string; inputs: Record<string, string> }> };
    const [include] = config.include;
    assert.match(include?.component ?? '', /\/tracker-lock@/, 'the component is named after its file');
    const { name, job } = render(include?.inputs ?? {});
    assert.equal(name, include?.inputs['job-name']);
    assert.match(job.script[0] ?? '', /--service "production-deployment"/);
  });

  test('service: the script runs under the lock, held by project/pipeline/job, released after', async () => {
    const run = await runJob({
      service: 'gl-deploy',
      'job-name': 'deploy-production',
      note: 'release $CI_PIPELINE_ID',
    });
    assert.equal(run.code, 0, shown(run));
    assert.ok(run.seen, 'deploy.sh ran');
    const lock = run.seen.locks.find((held) => held.id === run.seen?.lockId);
    assert.ok(lock, `the server listed TRACKER_LOCK_ID ${run.seen.lockId} while the script ran`);
    assert.equal(lock.service, 'gl-deploy');
    assert.match(lock.who, /^group\/app\/\d+\/deploy-production$/);
    assert.match(lock.note ?? '', /^release \d+$/, 'the note input, its variables expanded');
    assert.match(
      lock.link ?? '',
      /^https:\/\/gitlab\.example\.com\/group\/app\/-\/jobs\/\d+$/,
      "the job's URL",
    );
    assert.equal(run.seen.env.TRACKER_SERVICE, 'gl-deploy');
    assert.equal(run.seen.env.TRACKER_RESOURCES, 'gl-deploy');
    assert.deepEqual(await holders('gl-deploy'), [], 'released when the script ended');
  });

  test("the script's exit code is the job's; the script runs with -e; the lock is released", async () => {
    const run = await runJob(
      { service: 'gl-fail', script: './deploy.sh; echo after > "$OUT/after"' },
      { env: { DEPLOY_EXIT: '7' } },
    );
    assert.equal(run.code, 7, shown(run));
    assert.ok(run.seen?.lockId, 'deploy.sh ran under the lock');
    assert.equal(existsSync(join(run.out, 'after')), false, 'the script stopped at the failure');
    assert.deepEqual(await holders('gl-fail'), []);
  });

  test('services (comma-separated) as a group, in sh without bash features', async () => {
    const run = await runJob(
      { services: 'gl-db, gl-cache', shell: 'sh', mode: 'exclusive' },
      { shell: 'sh' },
    );
    assert.equal(run.code, 0, shown(run));
    assert.ok(run.seen);
    assert.ok(run.seen.env.TRACKER_GROUP_ID, 'a group');
    assert.equal(run.seen.env.TRACKER_RESOURCES, 'gl-db,gl-cache');
    assert.deepEqual(run.seen.locks.map((lock) => lock.service).sort(), ['gl-cache', 'gl-db']);
    assert.deepEqual([...(await holders('gl-db')), ...(await holders('gl-cache'))], []);
  });

  test('token-variable: the token comes from the CI/CD variable it names', async () => {
    assert.ok(suiteDir);
    const file = join(suiteDir.path, 'tokens.yaml');
    const token = addToken(file, { name: 'ci', scopes: ['lock:write'] });
    const authServer = await startServerProcess({
      args: [...FREE_ARGS, '--auth-tokens-file', file],
    });
    try {
      const inputs = {
        url: authServer.baseUrl,
        service: 'gl-auth',
        'token-variable': 'DEPLOY_TRACKER_TOKEN',
      };
      const run = await runJob(inputs, { env: { DEPLOY_TRACKER_TOKEN: token } });
      assert.equal(run.code, 0, shown(run));
      assert.ok(run.seen?.lockId, 'deploy.sh ran under the lock');
      assert.ok(run.seen.locks.some((lock) => lock.id === run.seen?.lockId));
      // Without it, the server refuses (exit 1) and the script does not run.
      const refused = await runJob(inputs);
      assert.equal(refused.code, 1, shown(refused));
      assert.match(refused.stderr, /unauthenticated/);
      assert.equal(refused.seen, undefined);
    } finally {
      await authServer.stop();
    }
  });

  test('held and wait 0: the job fails with exit 3 and the script does not run', async () => {
    assert.ok(server);
    const response = await fetch(`${server.baseUrl}/api/v1alpha1/lock`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ service: 'gl-held', who: 'release-manager' }),
    });
    assert.equal(response.status, 201);
    const run = await runJob({ service: 'gl-held', wait: '0' });
    assert.equal(run.code, 3, shown(run));
    assert.equal(run.seen, undefined, 'deploy.sh did not run');
    assert.match(run.stderr, /gl-held is held by release-manager/);
    assert.deepEqual(
      (await holders('gl-held')).map((lock) => lock.who),
      ['release-manager'],
    );
  });
});
