/**
 * `npm start` as an operator runs it: SIGTERM (a service manager, `kill`) or SIGINT (Ctrl-C)
 * sent to the npm process must stop the server too. npm runs the script under `sh -c` and
 * forwards the signal to that shell only; unless the shell is replaced by node (exec), node
 * never hears of it and keeps the port, orphaned.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { describe, test } from 'node:test';
import { FREE_ARGS, ROOT, runToExit } from './support/server-process.js';
import { waitFor, within } from './support/wait-for.js';

/** The pids of `pid`'s children (pgrep -P), none when it has none. */
async function childrenOf(pid: number): Promise<number[]> {
  const run = await runToExit('pgrep', ['-P', String(pid)], { timeoutMs: 10_000 });
  assert.ok(run.code === 0 || run.code === 1, `pgrep failed: ${run.stderr}`);
  return run.stdout.split('\n').filter(Boolean).map(Number);
}

/** The process's command line, or undefined once it is gone. */
function commandLine(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
  } catch {
    return undefined;
  }
}

/** Whether a process with this pid still exists (a zombie is gone for this purpose). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Resolves with the error code of a connection attempt to 127.0.0.1:port ('connected' if one is made). */
function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

async function startAndStop(signal: 'SIGTERM' | 'SIGINT'): Promise<void> {
  const npm = spawn('npm', ['start', '--ignore-scripts', '--', ...FREE_ARGS], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const npmPid = npm.pid;
  assert.ok(npmPid, 'npm started');
  let output = '';
  npm.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    npm.once('exit', (code, exitSignal) => resolve({ code, signal: exitSignal })),
  );
  const lines: string[] = [];
  createInterface({ input: npm.stdout }).on('line', (line) => {
    lines.push(line);
    output += `${line}\n`;
  });
  // Every process npm started, found before the signal: killed at the end if any outlived npm.
  const started: number[] = [];
  const commands = new Map<number, string | undefined>();
  try {
    const listening = await waitFor(() => lines.find((line) => line.includes('"tracker listening"')), {
      what: 'the "tracker listening" line of npm start',
      timeoutMs: 30_000,
    });
    const { httpPort } = JSON.parse(listening) as { httpPort: number };
    assert.equal(await tryConnect(httpPort), 'connected', 'the server listens');

    // npm's children, and theirs: sh (unless exec replaced it) and node.
    let generation = [npmPid];
    for (let depth = 0; depth < 4 && generation.length > 0; depth++) {
      generation = (await Promise.all(generation.map(childrenOf))).flat();
      started.push(...generation);
    }
    for (const pid of started) commands.set(pid, commandLine(pid));
    const server = started.find((pid) => commands.get(pid)?.includes('dist/src/main.js'));
    assert.ok(server, `a node process runs dist/src/main.js: ${[...commands.values()].join('; ')}`);

    npm.kill(signal);
    const result = await within(exited, { what: `npm to exit after ${signal}`, timeoutMs: 15_000 });
    assert.deepEqual(result, { code: 0, signal: null }, `npm exits 0 once the server stopped:\n${output}`);
    assert.ok(
      lines.some((line) => line.includes('"shutting down"') && line.includes(`"signal":"${signal}"`)),
      `the server heard ${signal}:\n${output}`,
    );
    await waitFor(() => !alive(server), { what: `node (pid ${server}) gone`, timeoutMs: 5000 });
    const left = started.filter(alive);
    assert.deepEqual(left, [], `nothing npm started outlives it: ${left.map(commandLine).join('; ')}`);
    assert.equal(await tryConnect(httpPort), 'ECONNREFUSED', 'the port is closed');
  } finally {
    if (npm.exitCode === null && npm.signalCode === null) npm.kill('SIGKILL');
    // Only a process still running what npm started (not a new one that reused its pid).
    for (const [pid, command] of commands) {
      if (alive(pid) && commandLine(pid) === command) process.kill(pid, 'SIGKILL');
    }
  }
}

describe('npm start', () => {
  test('SIGTERM to npm stops the server: npm exits, node is gone, the port is closed', async () => {
    await startAndStop('SIGTERM');
  });

  test('SIGINT (Ctrl-C) to npm stops the server the same way', async () => {
    await startAndStop('SIGINT');
  });
});
