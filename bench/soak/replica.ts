// One Tracker replica for the soak: `node dist/src/main.js` on ephemeral ports with
// `--log-level warn`, its output in a log file. At that level the "tracker listening" line
// (info) is not written, so the REST port is read from /proc: the process's listening TCP
// sockets, the one that answers GET /healthz being REST (the other is gRPC). Linux only, as
// is the memory reading (/proc/<pid>/status).
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { REPO_ROOT } from '../targets.js';

const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 12_000;
const PROBE_TIMEOUT_MS = 1_000;

export interface Replica {
  readonly name: string;
  readonly pid: number;
  readonly baseUrl: string;
  readonly logFile: string;
  /** Exit code or signal once exited, else null. */
  exitStatus(): number | string | null;
  /** SIGTERM, then SIGKILL after 12 s; resolves with the exit code or signal and how long it took. */
  stop(): Promise<{ status: number | string; ms: number }>;
}

export async function startReplica(name: string, databaseUrl: string, logFile: string): Promise<Replica> {
  const main = path.join(REPO_ROOT, 'dist', 'src', 'main.js');
  if (!existsSync(main)) throw new Error(`${main} does not exist: run \`npm run build\` (npm run soak does)`);
  const fd = openSync(logFile, 'a');
  const args = [
    main,
    '--host',
    '127.0.0.1',
    '--database-url',
    databaseUrl,
    '--http-port',
    '0',
    '--grpc-port',
    '0',
    '--log-level',
    'warn',
  ];
  // stderr goes to the same file: a crash's stack trace ends up next to the last log lines.
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  let exit: number | string | null = null;
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = code ?? signal ?? 'unknown';
      resolve(exit);
    });
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${name}: spawn gave no pid`);
  const stop = () => stopChild(child, exited);
  const started = Date.now();
  for (let attempt = 0; attempt < 1000 && Date.now() - started < START_TIMEOUT_MS; attempt++) {
    if (exit !== null) {
      throw new Error(`${name} exited (${exit}) before it listened: ${tail(logFile)}`);
    }
    for (const port of listeningPorts(pid)) {
      if (await answersHealthz(port)) {
        return {
          name,
          pid,
          baseUrl: `http://127.0.0.1:${port}`,
          logFile,
          exitStatus: () => exit,
          stop,
        };
      }
    }
    await delay(100);
  }
  await stop();
  throw new Error(`${name} did not serve REST within ${START_TIMEOUT_MS / 1000} s: ${tail(logFile)}`);
}

async function stopChild(
  child: ChildProcess,
  exited: Promise<number | string>,
): Promise<{ status: number | string; ms: number }> {
  const started = Date.now();
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    const status = await exited;
    clearTimeout(killer);
    return { status, ms: Date.now() - started };
  }
  return { status: await exited, ms: 0 };
}

/** TCP ports the process listens on, from its socket inodes and its network namespace's tables. */
function listeningPorts(pid: number): number[] {
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (match?.[1] !== undefined) inodes.add(match[1]);
      } catch {
        // The descriptor closed meanwhile.
      }
    }
  } catch {
    return [];
  }
  const ports: number[] = [];
  for (const table of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      // sl local_address rem_address st ... inode (the 10th field); 0A is LISTEN.
      if (fields.length < 10 || fields[3] !== '0A' || !inodes.has(fields[9] ?? '')) continue;
      const port = Number.parseInt(fields[1]?.split(':')[1] ?? '', 16);
      if (Number.isInteger(port) && port > 0 && !ports.includes(port)) ports.push(port);
    }
  }
  return ports;
}

function answersHealthz(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ hostname: '127.0.0.1', port, path: '/healthz', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
      res.on('error', () => resolve(false));
    });
    req.setTimeout(PROBE_TIMEOUT_MS, () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
  });
}

/** Resident set size in bytes (VmRSS), or null once the process is gone. */
export function rssBytes(pid: number): number | null {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match?.[1] === undefined ? null : Number(match[1]) * 1024;
  } catch {
    return null;
  }
}

/** The values of unlabelled series of a Prometheus text exposition, by name. */
export function parseMetrics(text: string, names: readonly string[]): Record<string, number | null> {
  const values: Record<string, number | null> = {};
  for (const name of names) {
    const match = new RegExp(`^${name} ([0-9.eE+-]+)`, 'm').exec(text);
    values[name] = match?.[1] === undefined ? null : Number(match[1]);
  }
  return values;
}

/** Counts of the log file's lines by pino level, and the most frequent messages at warn and above. */
export function scanLog(logFile: string): {
  warn: number;
  error: number;
  other: number;
  top: { level: string; msg: string; count: number }[];
} {
  let text = '';
  try {
    text = readFileSync(logFile, 'utf8');
  } catch {
    return { warn: 0, error: 0, other: 0, top: [] };
  }
  let warn = 0;
  let error = 0;
  let other = 0;
  const messages = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let level = 0;
    let msg = line.slice(0, 120);
    try {
      const parsed = JSON.parse(line) as { level?: unknown; msg?: unknown; code?: unknown };
      level = typeof parsed.level === 'number' ? parsed.level : 0;
      msg = `${String(parsed.msg ?? '')}${parsed.code === undefined ? '' : ` ${String(parsed.code)}`}`;
    } catch {
      // Not JSON (a stack trace on stderr): counted as other.
    }
    if (level >= 50) error++;
    else if (level >= 40) warn++;
    else other++;
    const label = level >= 50 ? 'error' : level >= 40 ? 'warn' : 'other';
    const key = `${label}\t${msg}`;
    messages.set(key, (messages.get(key) ?? 0) + 1);
  }
  const top = [...messages.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 6)
    .map(([key, count]) => {
      const [level = '', msg = ''] = key.split('\t');
      return { level, msg, count };
    });
  return { warn, error, other, top };
}

function tail(logFile: string): string {
  try {
    return readFileSync(logFile, 'utf8').slice(-2000).trim();
  } catch {
    return '(no log)';
  }
}
