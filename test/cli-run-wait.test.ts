/**
 * `tracker run --wait`, as a real CLI process against a real server: it says it is waiting
 * (naming the holder) only when someone else holds the service, never for a free one, and
 * the first such line comes at once, not after the 30 s between lines off a terminal.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { API, call } from './support/rest.js';
import { ROOT, runToExit, type ServerProcess, startServerProcess } from './support/server-process.js';
import { waitFor, within } from './support/wait-for.js';

const CLI = join(ROOT, 'dist/src/cli/main.js');
const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;

/** A CLI process whose output can be read while it runs. */
interface Running {
  readonly child: ChildProcess;
  readonly out: { stdout: string; stderr: string };
  readonly exited: Promise<number | null>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function start(args: string[], url: string): Running {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, TRACKER_URL: url },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  const out = { stdout: '', stderr: '' };
  child.stdout?.on('data', (chunk: Buffer) => {
    out.stdout += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    out.stderr += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      running.delete(child);
      resolve(code);
    }),
  );
  return { child, out, exited };
}

/** The first whole line on stderr, once there is one. */
const firstLine = (cli: Running) => cli.out.stderr.includes('\n') && cli.out.stderr.split('\n')[0];

/** `tracker run --wait 10m` on `service`, running `echo ran`. */
const runArgs = (service: string, who?: string) => [
  'run',
  '--service',
  service,
  ...(who === undefined ? [] : ['--who', who]),
  '--wait',
  '10m',
  '--',
  'sh',
  '-c',
  'echo ran',
];

/**
 * An HTTP proxy in front of the server that holds back lock requests (POST .../lock) until
 * `open()`, so that a test can act between the CLI's first look at the queue and its acquire.
 */
async function gatedProxy(target: string) {
  const held: Array<() => void> = [];
  let gateOpen = false;
  const forward = (incoming: IncomingMessage, outgoing: ServerResponse) => {
    const upstream = request(
      new URL(incoming.url ?? '/', target),
      { method: incoming.method, headers: incoming.headers },
      (answer) => {
        outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(outgoing);
      },
    );
    upstream.on('error', () => outgoing.destroy());
    incoming.pipe(upstream);
  };
  const server: Server = createServer((incoming, outgoing) => {
    if (!gateOpen && incoming.method === 'POST' && incoming.url === `${API}/lock`) {
      held.push(() => forward(incoming, outgoing));
    } else {
      forward(incoming, outgoing);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    /** How many lock requests are held back. */
    get held() {
      return held.length;
    },
    open() {
      gateOpen = true;
      for (const release of held.splice(0)) release();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('tracker run --wait', () => {
  let server: ServerProcess;

  const acquire = async (service: string, who: string) => {
    const reply = await call(server.baseUrl, 'POST', `${API}/lock`, { service, who });
    assert.equal(reply.status, 201, JSON.stringify(reply.json));
    return reply.json.id as string;
  };
  const release = async (id: string) => {
    assert.equal((await call(server.baseUrl, 'DELETE', `${API}/lock/${id}`)).status, 200);
  };
  const waitingOf = async (service: string) => {
    const reply = await call(server.baseUrl, 'GET', `${API}/queue/${service}`);
    return (reply.json as { waiters: Array<{ who: string }> }).waiters;
  };

  before(async () => {
    server = await startServerProcess();
  });
  after(async () => {
    for (const child of running) child.kill('SIGKILL');
    await server?.stop();
  });

  test('on a free service it runs the command and says nothing about waiting', async () => {
    // A few runs: the old progress line raced the acquire and showed up most of the time.
    for (let run = 0; run < 5; run++) {
      const service = unique('free');
      const result = await runToExit(process.execPath, [CLI, ...runArgs(service, 'me')], {
        env: { ...process.env, TRACKER_URL: server.baseUrl },
      });
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, 'ran\n');
      assert.equal(result.stderr, '', 'nothing on stderr for a free service');
    }
  });

  test('on a held service the first line names the holder at once; it runs once released', async () => {
    const service = unique('held');
    const holder = await acquire(service, 'deployer-7');
    const cli = start(runArgs(service, 'ci-runner'), server.baseUrl);
    // Off a terminal a line comes every 30 s; the first must not wait for that.
    const first = await waitFor(() => firstLine(cli), {
      what: 'the first waiting line',
      timeoutMs: 10_000,
    });
    // At once: a single-digit wait (a loaded machine may take a second to start the CLI),
    // not the 30 s of the next line.
    assert.match(first ?? '', new RegExp(`^tracker: waiting [0-9]s for ${service}: held by deployer-7$`));
    await waitFor(async () => (await waitingOf(service)).some((waiter) => waiter.who === 'ci-runner'), {
      what: 'the CLI in the queue',
    });
    assert.equal(cli.out.stdout, '', 'the command waits for the lock');
    await release(holder);
    assert.equal(await within(cli.exited, { what: 'tracker run to finish' }), 0, cli.out.stderr);
    assert.equal(cli.out.stdout, 'ran\n');
    assert.doesNotMatch(cli.out.stderr, /being handed over/);
    for (const line of cli.out.stderr.trimEnd().split('\n')) {
      assert.match(line, new RegExp(`^tracker: waiting \\d+s for ${service}: held by deployer-7`));
    }
  });

  test('a holder with the same name (another run of the same user) is named too', async () => {
    const service = unique('same-who');
    const holder = await acquire(service, 'alice@build-host');
    const cli = start(runArgs(service, 'alice@build-host'), server.baseUrl);
    await waitFor(() => cli.out.stderr.includes('\n'), { what: 'the first waiting line' });
    assert.match(
      cli.out.stderr,
      new RegExp(`^tracker: waiting [0-9]s for ${service}: held by alice@build-host\n$`),
    );
    await release(holder);
    assert.equal(await within(cli.exited, { what: 'tracker run to finish' }), 0, cli.out.stderr);
    assert.equal(cli.out.stdout, 'ran\n');
  });

  test('taken by someone else between the first look and the acquire: the line comes once in line', async () => {
    const service = unique('race');
    const proxy = await gatedProxy(server.baseUrl);
    try {
      const cli = start(runArgs(service, 'ci-runner'), proxy.url);
      // The CLI looked at the queue (free) and sent its acquire, which the proxy holds back.
      await waitFor(() => proxy.held === 1, { what: 'the acquire held back by the proxy' });
      assert.equal(cli.out.stderr, '', 'free at the first look: nothing said');
      const holder = await acquire(service, 'sneaky');
      proxy.open();
      const line = await waitFor(() => firstLine(cli), {
        what: 'the waiting line',
        timeoutMs: 10_000,
      });
      assert.match(
        line,
        new RegExp(`^tracker: waiting \\d+s for ${service}: held by sneaky, you are 1 of 1 in line$`),
      );
      await release(holder);
      assert.equal(await within(cli.exited, { what: 'tracker run to finish' }), 0, cli.out.stderr);
      assert.equal(cli.out.stdout, 'ran\n');
    } finally {
      await proxy.close();
    }
  });
});
