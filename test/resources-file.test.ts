/**
 * The resources file (--resources-file): parsed strictly, loaded at start (a bad file stops
 * the start with one line), applied again when it changes and on SIGHUP (a bad edit is
 * logged and the registry stays), and a held resource that leaves the file is kept until a
 * later reload finds it free. Against a real server process and a real file.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseResourcesFile, ResourcesFileError } from '../src/config/resources-file.js';
import { API, call } from './support/rest.js';
import {
  FREE_ARGS,
  runServerToExit,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

/** The file replaced atomically (a temporary file renamed over it), as editors and tools do. */
function replaceFile(path: string, text: string): void {
  const temporary = `${path}.${randomUUID()}.tmp`;
  writeFileSync(temporary, text);
  renameSync(temporary, path);
}

interface ResourceJson {
  name: string;
  labels: string[];
  properties: Record<string, string>;
  capacity: number;
  description: string | null;
  holders: { id: string; who: string }[];
  waiters: unknown[];
  free: number;
}

const STAGING = `# Staging databases, one job each.
resources:
  - name: staging-db-1
    labels: [staging-db]
    properties: {host: db1.internal, port: "5432"}
    capacity: 1
    description: first staging database
  - name: staging-db-2
    labels: [staging-db]
    properties:
      host: db2.internal
      port: "5432"
`;

describe('parseResourcesFile', () => {
  const parse = (text: string) => parseResourcesFile(text, '/etc/tracker/resources.yaml');
  /** The one-line message a bad file gives. */
  const problem = (text: string): string => {
    try {
      parse(text);
    } catch (error) {
      assert.ok(error instanceof ResourcesFileError, String(error));
      assert.doesNotMatch(error.message, /\n/, 'one line');
      return error.message;
    }
    assert.fail(`accepted: ${text}`);
  };

  test('the README example, with the defaults filled in', () => {
    assert.deepEqual(parse(STAGING), [
      {
        name: 'staging-db-1',
        labels: ['staging-db'],
        properties: { host: 'db1.internal', port: '5432' },
        capacity: 1,
        description: 'first staging database',
      },
      {
        name: 'staging-db-2',
        labels: ['staging-db'],
        properties: { host: 'db2.internal', port: '5432' },
        capacity: 1,
        description: null,
      },
    ]);
    assert.deepEqual(parse('resources: []'), []);
    assert.deepEqual(parse('{"resources": [{"name": "phone-1", "capacity": 2}]}'), [
      { name: 'phone-1', labels: [], properties: {}, capacity: 2, description: null },
    ]);
    // Names are kept as the API keeps them (NFC): `café` typed two ways is one resource.
    assert.equal(parse('resources: [{name: "cafe\u0301"}]')[0]?.name, 'caf\u00e9');
    assert.equal(
      parse('resources:\n  - name: a\n    description: >\n      folded\n')[0]?.description,
      'folded',
    );
  });

  test('every problem names the file and line, the entry and the field', () => {
    const cases: Array<[string, RegExp]> = [
      [
        'resources:\n  - name: db-1\n    capacity: 0\n',
        /^\/etc\/tracker\/resources\.yaml:3: resources\[0\] \("db-1"\): capacity must be an integer from 1 to 1000, not 0$/,
      ],
      [
        'resources:\n  - name: db-1\n    capcity: 2\n',
        /:3: resources\[0\] \("db-1"\): capcity is not a field of a resource/,
      ],
      [
        'resources:\n  - name: db-1\n  - name: db-2\n  - name: db-1\n',
        /:4: resources\[2\] \("db-1"\): name "db-1" is declared twice/,
      ],
      ['resources:\n  - labels: [x]\n', /:2: resources\[0\] has no name/],
      ['resources:\n  - name: ""\n', /resources\[0\] \(""\): name must be a non-empty string/],
      ['resources:\n  - name: "a\\u0007b"\n', /name must not contain control characters/],
      ['resources:\n  - name: "a\\u200Bb"\n', /name must not contain invisible .*U\+200B/],
      [`resources:\n  - name: ${'x'.repeat(257)}\n`, /name must be at most 256 characters/],
      ['resources:\n  - name: 5432\n', /resources\[0\]: name must be a string, not the number 5432/],
      ['resources:\n  - name: db\n    labels: pool\n', /labels must be a list of label names/],
      ['resources:\n  - name: db\n    labels: [a, a]\n', /labels\[1\] "a" is listed twice/],
      ['resources:\n  - name: db\n    labels: [a, 7]\n', /labels\[1\] must be a string, not the number 7/],
      [
        'resources:\n  - name: db\n    properties:\n      port: 5432\n',
        /:4: resources\[0\] \("db"\): properties\.port must be a string, not the number 5432 \(quote it: "5432"\)/,
      ],
      [
        'resources:\n  - name: db\n    properties: [a]\n',
        /properties must be a mapping of names to string values/,
      ],
      [
        'resources:\n  - name: db\n    capacity: "2"\n',
        /capacity must be an integer from 1 to 1000, not "2"/,
      ],
      ['resources:\n  - name: db\n    capacity: 1.5\n', /capacity must be an integer/],
      ['resources:\n  - name: db\n    description: [a]\n', /description must be a string, not a list/],
      ['resources:\n  - db-1\n', /:2: resources\[0\] is not an object with a name/],
      ['resources:\n  name: db\n', /"resources" must be a list/],
      ['resource:\n  - name: db\n', /:1: unknown key "resource" \(only "resources"\)/],
      ['', /expected an object with a "resources" list/],
      ['resources:\n  - name: db\n    name: db2\n', /:3: not valid YAML or JSON \(Map keys must be unique\)/],
      ['resources: [\n', /not valid YAML or JSON/],
    ];
    for (const [text, expected] of cases) {
      const message = problem(text);
      assert.match(message, /^\/etc\/tracker\/resources\.yaml(:\d+)?: /, `names the file: ${message}`);
      assert.match(message, expected, JSON.stringify(text));
    }
    const labels = Array.from({ length: 33 }, (_, i) => `l${i}`).join(', ');
    assert.match(problem(`resources: [{name: db, labels: [${labels}]}]`), /labels must list at most 32/);
    assert.match(
      problem(`resources: [{name: db, properties: {v: "${'x'.repeat(1025)}"}}]`),
      /properties\.v must be at most 1024 characters/,
    );
  });
});

describe('a server with --resources-file', () => {
  const dir = tempDir();
  const file = join(dir.path, 'resources.yaml');
  let server: ServerProcess;
  const rest = (method: string, path: string, body?: unknown) =>
    call(server.baseUrl, method, `${API}${path}`, body);
  const listed = async (): Promise<ResourceJson[]> => {
    const reply = await rest('GET', '/resources');
    assert.equal(reply.status, 200, JSON.stringify(reply.json));
    return reply.json.resources as ResourceJson[];
  };
  const names = async () => (await listed()).map((resource) => resource.name);
  /** The server's log lines (pino JSON) with this message. */
  const logged = (message: string) =>
    server.lines
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line.msg === message);

  before(async () => {
    writeFileSync(file, STAGING);
    server = await startServerProcess({ args: [...FREE_ARGS, '--resources-file', file] });
  });
  after(async () => {
    await server?.stop();
    dir.remove();
  });

  test('the file is loaded before the server listens', async () => {
    const resources = await listed();
    assert.deepEqual(
      resources.map(({ name, labels, properties, capacity, description }) => ({
        name,
        labels,
        properties,
        capacity,
        description,
      })),
      [
        {
          name: 'staging-db-1',
          labels: ['staging-db'],
          properties: { host: 'db1.internal', port: '5432' },
          capacity: 1,
          description: 'first staging database',
        },
        {
          name: 'staging-db-2',
          labels: ['staging-db'],
          properties: { host: 'db2.internal', port: '5432' },
          capacity: 1,
          description: null,
        },
      ],
    );
    assert.equal(logged('resources file loaded')[0]?.resources, 2);
    const byLabel = await rest('GET', '/resources?label=staging-db');
    assert.equal((byLabel.json.resources as ResourceJson[]).length, 2);
  });

  test('an edit is applied: added, changed and removed resources; API-created ones stay', async () => {
    const viaApi = await rest('PUT', '/resources/api-made', { labels: ['other'] });
    assert.equal(viaApi.status, 201, JSON.stringify(viaApi.json));
    // Edited in place first (some editors write the file itself), then replaced.
    writeFileSync(
      file,
      `${STAGING}  - name: staging-db-3\n    labels: [staging-db, slow]\n    capacity: 2\n`,
    );
    await waitFor(async () => (await names()).includes('staging-db-3'), { what: 'staging-db-3 added' });
    replaceFile(
      file,
      'resources:\n  - name: staging-db-1\n    labels: [staging-db]\n    capacity: 3\n' +
        '  - name: staging-db-3\n    labels: [staging-db, slow]\n    capacity: 2\n',
    );
    await waitFor(async () => !(await names()).includes('staging-db-2'), { what: 'staging-db-2 removed' });
    const resources = await listed();
    assert.deepEqual(
      resources.map((resource) => resource.name),
      ['api-made', 'staging-db-1', 'staging-db-3'],
    );
    const first = resources.find((resource) => resource.name === 'staging-db-1');
    assert.equal(first?.capacity, 3);
    assert.deepEqual(
      first?.properties,
      {},
      'replaced whole: the properties the file no longer gives are gone',
    );
    assert.equal(first?.description, null);
  });

  test('SIGHUP reloads the file', async () => {
    const before = logged('resources reloaded').filter((line) => line.why === 'SIGHUP').length;
    server.child.kill('SIGHUP');
    await waitFor(
      () => logged('resources reloaded').filter((line) => line.why === 'SIGHUP').length > before,
      {
        what: 'a reload on SIGHUP',
      },
    );
  });

  test('a bad edit is logged, naming the entry and field, and the registry stays as it was', async () => {
    const previous = await names();
    const failures = logged('resources file not reloaded; the previous resources stay in force').length;
    replaceFile(file, 'resources:\n  - name: staging-db-1\n    capacity: many\n  - name: fresh\n');
    const failure = await waitFor(
      () => logged('resources file not reloaded; the previous resources stay in force')[failures],
      { what: 'the failed reload logged' },
    );
    assert.match(
      String((failure.err as { message?: unknown }).message),
      /resources\.yaml:3: resources\[0\] \("staging-db-1"\): capacity must be an integer from 1 to 1000, not "many"/,
    );
    assert.equal(failure.level, 50, 'at error level');
    assert.deepEqual(await names(), previous);
    // Mended, it is applied again.
    replaceFile(file, 'resources:\n  - name: staging-db-1\n    capacity: 3\n  - name: fresh\n');
    await waitFor(async () => (await names()).includes('fresh'), { what: 'the mended file applied' });
  });

  test('a held resource that leaves the file is kept (a warning) until it is released', async () => {
    replaceFile(file, 'resources:\n  - name: held-one\n    labels: [pool]\n  - name: fresh\n');
    await waitFor(async () => (await names()).includes('held-one'), { what: 'held-one registered' });
    const lock = await rest('POST', '/lock', { service: 'held-one', who: 'job-1' });
    assert.equal(lock.status, 201, JSON.stringify(lock.json));
    const warnings = logged(
      'resources removed from the file are held: they stay registered until released',
    ).length;
    replaceFile(file, 'resources:\n  - name: fresh\n');
    const warning = await waitFor(
      () => logged('resources removed from the file are held: they stay registered until released')[warnings],
      { what: 'the warning about held-one' },
    );
    assert.deepEqual(warning.kept, ['held-one']);
    assert.equal(warning.level, 40, 'at warn level');
    const kept = await rest('GET', '/resources/held-one');
    assert.equal(kept.status, 200, 'still registered');
    assert.deepEqual(
      (kept.json.holders as ResourceJson['holders']).map((holder) => holder.who),
      ['job-1'],
    );
    // Released: the file is applied again, without an edit or a SIGHUP.
    assert.equal((await rest('DELETE', `/lock/${lock.json.id}`)).status, 200);
    await waitFor(async () => (await rest('GET', '/resources/held-one')).status === 404, {
      what: 'held-one removed once released',
    });
    await waitFor(() => logged('resources reloaded').some((line) => line.why === 'a kept resource changed'), {
      what: 'the reload logged',
    });
  });

  test('holders and waiters per label in /metrics', async () => {
    replaceFile(
      file,
      'resources:\n  - name: phone-1\n    labels: [phone]\n  - name: phone-2\n    labels: [phone]\n' +
        '  - name: rack\n    labels: [phone, rack]\n    capacity: 3\n',
    );
    await waitFor(async () => (await names()).includes('rack'), { what: 'the phones registered' });
    const first = await rest('POST', '/lock', { label: 'phone', who: 'tester-1' });
    assert.equal(first.status, 201, JSON.stringify(first.json));
    const metric = async (name: string, label: string) => {
      const text = await (await fetch(`${server.baseUrl}/metrics`)).text();
      const match = new RegExp(`^${name}\\{label="${label}"\\} (\\d+)$`, 'm').exec(text);
      return match ? Number(match[1]) : undefined;
    };
    assert.equal(await metric('tracker_label_resources', 'phone'), 3);
    assert.equal(await metric('tracker_label_capacity', 'phone'), 5);
    assert.equal(await metric('tracker_label_holders', 'phone'), 1);
    assert.equal(await metric('tracker_label_free', 'phone'), 4);
    assert.equal(await metric('tracker_label_waiters', 'phone'), 0);
    assert.equal(
      await metric('tracker_label_holders', 'rack'),
      0,
      'the least recently used first, then by name',
    );
    // One request waits for the phone taken; a label waiter counts once, however many phones it waits for.
    const hangUp = new AbortController();
    const waiting = call(
      server.baseUrl,
      'POST',
      `${API}/lock`,
      { service: String(first.json.service), who: 'tester-2', waitSeconds: 60 },
      { signal: hangUp.signal },
    ).catch(() => undefined);
    await waitFor(async () => (await metric('tracker_label_waiters', 'phone')) === 1, {
      what: 'one waiter for a phone',
    });
    assert.equal(await metric('tracker_label_waiters', 'rack'), 0);
    hangUp.abort();
    await waiting;
    await waitFor(async () => (await metric('tracker_label_waiters', 'phone')) === 0, {
      what: 'the waiter gone',
    });
    assert.equal((await rest('DELETE', `/lock/${first.json.id}`)).status, 200);
    assert.equal(await metric('tracker_label_holders', 'phone'), 0);
  });
});

describe('a server started with a bad resources file', () => {
  test('exits 2 with one line naming the file, the entry and the field (flag or environment)', async () => {
    const dir = tempDir();
    try {
      const file = join(dir.path, 'resources.yaml');
      writeFileSync(file, 'resources:\n  - name: db-1\n  - name: db-2\n    labels: [pool, pool]\n');
      for (const [args, env] of [
        [[...FREE_ARGS, '--resources-file', file], {}],
        [FREE_ARGS, { TRACKER_RESOURCES_FILE: file }],
      ] as const) {
        const run = await runServerToExit([...args], env);
        assert.equal(run.code, 2, run.stderr);
        assert.equal(
          run.stderr,
          `tracker: ${file}:4: resources[1] ("db-2"): labels[1] "pool" is listed twice\n`,
        );
      }
      const missing = await runServerToExit([
        ...FREE_ARGS,
        '--resources-file',
        join(dir.path, 'absent.yaml'),
      ]);
      assert.equal(missing.code, 2);
      assert.equal(missing.stderr, `tracker: ${join(dir.path, 'absent.yaml')}: cannot be read (ENOENT)\n`);
    } finally {
      dir.remove();
    }
  });
});
