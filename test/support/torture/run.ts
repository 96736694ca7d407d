import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { checkLinearizable, UNKNOWN } from '../linearizability/checker.js';
import {
  describeOperation,
  type LockInput,
  type LockOperation,
  type LockOutput,
  lockModel,
  type ModelClaim,
  type ModelResource,
} from '../linearizability/lock-model.js';
import { ROOT } from '../server-process.js';
import { waitFor } from '../wait-for.js';
import { FAKETIME_LIBRARY, PgCluster, TrackerNode, track } from './cluster.js';
import type {
  ClaimCall,
  ClientConfig,
  ClientLine,
  ClientPlan,
  Record as OpRecord,
  Outcome,
} from './protocol.js';
import { FencedRegister } from './register.js';
import { writeTimeline } from './timeline.js';

/**
 * The fault run: clients over REST and gRPC against one SQLite server or three PostgreSQL
 * replicas, while a nemesis breaks one thing at a time; then every recorded operation is
 * checked for linearizability against the lock's model, the fenced register counts lost and
 * refused writes, and the store's own history is checked for double grants, holders over a
 * limit and tokens that went backwards. Besides plain locks, the REST clients take shared
 * locks, a semaphore's places, resources of a registered pool by label, and groups (two
 * services in either order, two of the pool, the semaphore with a shared service), with
 * priorities.
 */

export const NEMESES = [
  'kill',
  'pause-node',
  'pause-client',
  'cut',
  'delay',
  'blackhole',
  'db-cut',
  'db-delay',
  'db-blackhole',
  'pg-restart',
  'clock-jump',
] as const;
export type Nemesis = (typeof NEMESES)[number];

const POSTGRES_ONLY: readonly Nemesis[] = ['db-cut', 'db-delay', 'db-blackhole', 'pg-restart'];

/** The semaphore, and the pool of resources the clients take by label. */
const SEMAPHORE = 'pool';
const LABEL = 'phone';
const POOL: readonly ModelResource[] = ['phone-1', 'phone-2', 'phone-3'].map((name) => ({
  name,
  labels: [LABEL],
  capacity: 1,
}));
const OVERSHOOT_HOOK = join(ROOT, 'test/support/torture/overshoot.mjs');

export interface TortureOptions {
  readonly store: 'sqlite' | 'postgres';
  readonly seconds: number;
  readonly clients: number;
  readonly seed: number;
  /**
   * A deliberately broken variant, which the run must find: `no-fencing` (the register checks
   * no token), `split-brain` (two SQLite servers, each on its own file), `overshoot` (servers
   * whose capacity rule is off by one, see overshoot.mjs: every client takes the semaphore).
   */
  readonly broken?: 'no-fencing' | 'split-brain' | 'overshoot' | undefined;
  /**
   * `many` (default): the REST clients also take shared locks, the semaphore, the pool by
   * label and groups, with priorities; `plain`: plain locks only.
   */
  readonly mix?: 'many' | 'plain' | undefined;
  /** The semaphore's limit (default 3). */
  readonly semaphoreLimit?: number | undefined;
  /**
   * The nemeses to use: each once, in this order (a short run that must see each kind), or,
   * by default, every kind that applies to the store, in a seeded order, over and over.
   */
  readonly nemeses?: readonly Nemesis[] | undefined;
  /** Leases the clients take, in whole seconds (default 2 to 3); pauses last one second more. */
  readonly leaseSeconds?: readonly [number, number] | undefined;
  /** Calm between faults, in ms (default 800 to 2000). */
  readonly calmMs?: readonly [number, number] | undefined;
  /** How many services the clients share (default 3; fewer: more contention). */
  readonly services?: number | undefined;
  /** Where a failing run writes its history and timeline (default: a temporary folder). */
  readonly outDir?: string | undefined;
  readonly log?: (line: string) => void;
}

export interface Fault {
  readonly kind: Nemesis;
  readonly target: string;
  readonly from: number;
  readonly to: number;
}

export interface TortureReport {
  readonly seed: number;
  readonly store: string;
  readonly broken: string | null;
  /** The clients' calls, every attempt of a retried call counted. */
  readonly calls: number;
  /** What the checker checked: a call retried with its key is one operation. */
  readonly operations: number;
  /** Operations whose outcome no answer showed (their client gave up). */
  readonly unknownOutcomes: number;
  /** How long the linearizability check took, in ms. */
  readonly checkMs: number;
  readonly faults: readonly Fault[];
  readonly verdict: 'ok' | 'illegal' | 'unknown';
  readonly verdictDetail: string;
  readonly acknowledgedWrites: number;
  readonly lostWrites: number;
  readonly fencingRefusals: number;
  /** Grants while an incompatible lock held the service (a second exclusive one of limit 1, shared with exclusive). */
  readonly doubleGrants: number;
  /** Grants past a limit above 1 (a semaphore's, a resource's capacity). */
  readonly overCapacity: number;
  readonly tokenRegressions: number;
  /** A retry (same key) that was answered another lock than its first attempt. */
  readonly replayMismatches: number;
  readonly passed: boolean;
  /** A failing run's history and timeline. */
  readonly artifacts: { readonly history: string; readonly timeline: string } | null;
}

/** A small seeded PRNG (mulberry32): the run's choices follow from its seed. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The client, and how node runs it: compiled beside this file (dist/test), or as a source through tsx. */
const COMPILED = import.meta.url.endsWith('.js');
const CLIENT = fileURLToPath(new URL(COMPILED ? './client.js' : './client.ts', import.meta.url));
const CLIENT_NODE_ARGS = COMPILED ? [CLIENT] : ['--import', 'tsx', CLIENT];

interface ClientProcess {
  readonly id: string;
  readonly child: ChildProcess;
  readonly records: OpRecord[];
  holding: boolean;
  /** Called as it says it is between a read and a write under its lock. */
  onWorking: (() => void) | null;
  readonly done: Promise<void>;
}

/** Offsets of a node's wall clock over the run: jumps, with when they surely took effect. */
interface ClockJump {
  readonly node: string;
  readonly requested: number;
  readonly effective: number;
  readonly before: number;
  readonly after: number;
}

export async function runTorture(options: TortureOptions): Promise<TortureReport> {
  const log = options.log ?? (() => {});
  if (!existsSync(FAKETIME_LIBRARY)) {
    throw new Error(`libfaketime is missing (${FAKETIME_LIBRARY}): apt-get install faketime`);
  }
  const rand = random(options.seed);
  const [leaseMin, leaseMax] = options.leaseSeconds ?? [2, 3];
  const [calmMin, calmMax] = options.calmMs ?? [800, 2000];
  // Pauses outlast the longest lease, so that it runs out while its holder sleeps.
  const pauseMs = leaseMax * 1000 + 1000;
  const dir = mkdtempSync(join(tmpdir(), 'tracker-torture-'));
  const register = new FencedRegister({ fenced: options.broken !== 'no-fencing' });
  await register.listen();
  const nodes: TrackerNode[] = [];
  const dbProxies: import('../fault-proxy.js').FaultProxy[] = [];
  let pg: PgCluster | null = null;
  const clients: ClientProcess[] = [];
  const faults: Fault[] = [];
  const jumps: ClockJump[] = [];
  const nodeArgs = options.broken === 'overshoot' ? ['--import', OVERSHOOT_HOOK] : [];
  const mix = options.mix ?? 'many';
  const plan: ClientPlan =
    options.broken === 'overshoot'
      ? {
          plain: false,
          shared: false,
          semaphore: { service: SEMAPHORE, limit: options.semaphoreLimit ?? 2 },
          label: null,
          groups: false,
          priorities: false,
        }
      : {
          plain: true,
          shared: mix === 'many',
          semaphore: mix === 'many' ? { service: SEMAPHORE, limit: options.semaphoreLimit ?? 3 } : null,
          label: mix === 'many' ? { label: LABEL, resources: POOL.map((resource) => resource.name) } : null,
          groups: mix === 'many',
          priorities: mix === 'many',
        };
  const resources = plan.label ? POOL : [];
  try {
    if (options.store === 'sqlite') {
      const count = options.broken === 'split-brain' ? 2 : 1;
      for (let i = 0; i < count; i++) {
        // Split brain: two servers, each on a file of its own, that each believe they decide.
        nodes.push(
          await TrackerNode.start({
            name: `sqlite-${i + 1}`,
            dir,
            databaseUrl: `sqlite:${join(dir, `tracker-${i + 1}.db`)}`,
            faketime: true,
            nodeArgs,
          }),
        );
      }
    } else {
      pg = await PgCluster.start(join(dir, 'pg'));
      const { FaultProxy } = await import('../fault-proxy.js');
      for (let i = 0; i < 3; i++) {
        const proxy = await FaultProxy.start(pg.url);
        dbProxies.push(proxy);
        nodes.push(
          await TrackerNode.start({
            name: `replica-${i + 1}`,
            dir,
            databaseUrl: proxy.url(pg.url),
            faketime: true,
            args: ['--database-pool-size', '8'],
            nodeArgs,
          }),
        );
      }
    }
    log(
      `torture: seed ${options.seed}, ${options.store}${options.broken ? ` (broken: ${options.broken})` : ''}, ${options.clients} clients, ${options.seconds} s`,
    );

    // The pool, registered (each SQLite server of a split brain has its own).
    for (const node of options.store === 'sqlite' ? nodes : nodes.slice(0, 1)) {
      for (const resource of resources) await putResource(node, resource);
    }
    const services = ['deploy', 'migrate', 'report', 'backup', 'release'].slice(0, options.services ?? 3);
    for (let i = 0; i < options.clients; i++) clients.push(startClient(i));
    function startClient(index: number): ClientProcess {
      const config: ClientConfig = {
        id: `c${index + 1}`,
        // The semaphore is REST's only (the overshoot variant's clients take nothing else).
        transport: index % 2 === 0 || !plan.plain ? 'rest' : 'grpc',
        targets: nodes.map((node) => ({ baseUrl: node.baseUrl, grpcAddress: node.grpcAddress })),
        services,
        plan,
        registerUrl: register.url,
        // A bound only: the run closes its stdin when it is over.
        seconds: options.seconds + 120,
        maxOps: 50_000,
        leaseSeconds: [leaseMin, leaseMax],
      };
      const child = spawn(process.execPath, CLIENT_NODE_ARGS, {
        cwd: ROOT,
        env: { ...process.env, TORTURE_CLIENT: JSON.stringify(config) },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      track(child);
      let stderr = '';
      child.stderr?.on('data', (chunk: Buffer) => {
        stderr = `${stderr}${chunk.toString()}`.slice(-4000);
      });
      child.once('exit', (code, signal) => {
        if (code !== 0)
          log(`  client ${config.id} exited with ${code ?? signal}: ${stderr.trim().slice(-600)}`);
      });
      const client: ClientProcess = {
        id: config.id,
        child,
        records: [],
        holding: false,
        onWorking: null,
        done: new Promise((resolve) => child.once('exit', () => resolve())),
      };
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
        const message = JSON.parse(line) as ClientLine;
        if (message.type === 'op') client.records.push(message.record);
        else if (message.type === 'holding') client.holding = true;
        else if (message.type === 'free') client.holding = false;
        else if (message.type === 'working') client.onWorking?.();
      });
      return client;
    }

    // The nemesis: one fault at a time, each kind in turn (seeded order), with calm between.
    const kinds = (options.nemeses ?? NEMESES).filter(
      (kind) => options.store === 'postgres' || !POSTGRES_ONLY.includes(kind),
    );
    // Given nemeses: each once, in order, however long that takes; else every kind, in a
    // seeded order, again and again until the time is up.
    const order = options.nemeses ? kinds : [...kinds].sort(() => rand() - 0.5);
    const turns = options.nemeses ? order.length : 1000;
    const end = Date.now() + options.seconds * 1000;
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    for (let turn = 0; turn < turns && (options.nemeses !== undefined || Date.now() < end - 1000); turn++) {
      // Calm first, so that clients get going (and recover between faults).
      await sleep(calmMin + rand() * (calmMax - calmMin));
      const kind = order[turn % order.length] as Nemesis;
      const node = nodes[Math.floor(rand() * nodes.length)] as TrackerNode;
      const from = Date.now();
      const target = await inject(kind, node, Math.floor(rand() * 3));
      faults.push({ kind, target, from, to: Date.now() });
      log(`  fault ${faults.length}: ${kind} on ${target}`);
    }

    /** Applies one fault, waits it out, heals; returns what it hit. */
    async function inject(kind: Nemesis, node: TrackerNode, which: number): Promise<string> {
      switch (kind) {
        case 'kill':
          await node.kill9();
          await sleep(300);
          await node.start();
          return node.name;
        case 'pause-node':
          node.pause();
          await sleep(pauseMs);
          node.resume();
          return node.name;
        case 'pause-client': {
          // A client holding a lock, stopped as it says it has read under its lock and is
          // about to write: its lease runs out while it sleeps, and it writes when it wakes.
          const live = clients.filter((client) => client.child.exitCode === null);
          const stopped = await new Promise<ClientProcess | null>((resolve) => {
            const done = (client: ClientProcess | null) => {
              clearTimeout(timer);
              for (const each of live) each.onWorking = null;
              resolve(client);
            };
            const timer = setTimeout(() => done(null), 5000);
            for (const client of live) {
              client.onWorking = () => {
                client.child.kill('SIGSTOP');
                done(client);
              };
            }
          });
          // Nobody worked for 5 s: stop a holder (or anyone) as it is.
          const client =
            stopped ?? live.find((each) => each.holding) ?? live[which % Math.max(1, live.length)];
          if (!client) return 'no client';
          if (!stopped) client.child.kill('SIGSTOP');
          await sleep(pauseMs);
          client.child.kill('SIGCONT');
          return `${client.id}${stopped ? ' (between its read and its write)' : client.holding ? ' (holding a lock)' : ''}`;
        }
        case 'cut':
          await Promise.all([node.restProxy.down(), node.grpcProxy.down()]);
          await sleep(1500);
          await Promise.all([node.restProxy.restore(), node.grpcProxy.restore()]);
          return `${node.name}'s clients`;
        case 'delay':
          node.restProxy.delay(250);
          node.grpcProxy.delay(250);
          await sleep(2500);
          await Promise.all([node.restProxy.restore(), node.grpcProxy.restore()]);
          return `${node.name}'s clients`;
        case 'blackhole':
          node.restProxy.blackhole();
          node.grpcProxy.blackhole();
          await sleep(2000);
          await Promise.all([node.restProxy.restore(), node.grpcProxy.restore()]);
          return `${node.name}'s clients`;
        case 'db-cut':
        case 'db-delay':
        case 'db-blackhole': {
          const proxy = dbProxies[nodes.indexOf(node)];
          if (!proxy) return 'none';
          if (kind === 'db-cut') await proxy.down();
          else if (kind === 'db-delay') proxy.delay(200);
          else proxy.blackhole();
          await sleep(kind === 'db-delay' ? 2500 : 2000);
          await proxy.restore();
          return `${node.name} → PostgreSQL`;
        }
        case 'pg-restart':
          pg?.restart();
          return 'PostgreSQL';
        case 'clock-jump': {
          const before = node.offsetSeconds;
          const requested = Date.now();
          const effective = await node.jumpClock(3 * leaseMax);
          jumps.push({ node: node.name, requested, effective, before, after: node.offsetSeconds });
          await sleep(1500);
          return `${node.name} (+${node.offsetSeconds - before} s)`;
        }
      }
    }

    log('  healing; waiting for the clients to finish');
    // Heal everything (after the time left, and a calm after the last fault), then tell the
    // clients to stop and let them finish their last calls.
    await sleep(Math.max(calmMax, end - Date.now()));
    for (const node of nodes) {
      node.resume();
      await Promise.all([node.restProxy.restore(), node.grpcProxy.restore()]);
    }
    for (const proxy of dbProxies) await proxy.restore();
    for (const client of clients) {
      client.child.kill('SIGCONT');
      client.child.stdin?.end();
    }
    await waitFor(() => clients.every((client) => client.child.exitCode !== null), {
      what: 'every client to finish',
      timeoutMs: 30_000,
      intervalMs: 50,
    });

    // What the clients saw, as the checker's history.
    const records = clients.flatMap((client) => client.records);
    if (options.outDir) {
      mkdirSync(options.outDir, { recursive: true });
      writeFileSync(
        join(options.outDir, 'records.json'),
        JSON.stringify({ jumps, faults, records, resources, store: options.store }),
      );
    }
    const storeTime = (node: string | null) =>
      options.store === 'postgres' ? () => ({ min: 0, max: 0 }) : offsetsOf(jumps, node);
    const history = toHistory(records, storeTime(nodes.length === 1 ? (nodes[0]?.name ?? null) : null));
    log(`  checking ${history.length} operations`);
    const checkStarted = performance.now();
    const verdict = checkLinearizable(lockModel(history, { resources }), history, {
      timeoutMs: 60_000,
      shrinkMs: 20_000,
    });
    const checkMs = Math.round(performance.now() - checkStarted);
    const replayMismatches = countReplayMismatches(records);
    // The store's own record.
    const storeCheck =
      options.broken === 'split-brain'
        ? { doubleGrants: 0, overCapacity: 0, tokenRegressions: 0 }
        : await checkStoreHistory(nodes[0] as TrackerNode);
    const passed =
      verdict.result === 'ok' &&
      register.lost === 0 &&
      storeCheck.doubleGrants === 0 &&
      storeCheck.overCapacity === 0 &&
      storeCheck.tokenRegressions === 0 &&
      replayMismatches === 0;
    let artifacts: TortureReport['artifacts'] = null;
    if (!passed) {
      const out = options.outDir ?? join(tmpdir(), `tracker-torture-${options.seed}`);
      mkdirSync(out, { recursive: true });
      const historyFile = join(out, 'history.json');
      const timelineFile = join(out, 'timeline.html');
      writeFileSync(
        historyFile,
        JSON.stringify(
          { seed: options.seed, store: options.store, faults, jumps, records, resources },
          null,
          1,
        ),
      );
      const excerpt = verdict.result === 'illegal' ? verdict.excerpt : history;
      writeTimeline(
        timelineFile,
        excerpt,
        faults,
        `Tracker fault run, seed ${options.seed}: ${verdict.result}`,
      );
      artifacts = { history: historyFile, timeline: timelineFile };
    }
    const detail =
      verdict.result === 'illegal'
        ? `not linearizable; smallest failing excerpt:\n${verdict.excerpt.map((op) => `    ${describeOperation(op)}`).join('\n')}`
        : verdict.result === 'unknown'
          ? verdict.reason
          : `linearizable (${verdict.partitions} partitions of linked services)`;
    return {
      seed: options.seed,
      store: options.store,
      broken: options.broken ?? null,
      calls: records.length,
      operations: history.length,
      unknownOutcomes: history.filter((op) => op.output === UNKNOWN).length,
      checkMs,
      faults,
      verdict: verdict.result,
      verdictDetail: detail,
      acknowledgedWrites: register.acknowledged,
      lostWrites: register.lost,
      fencingRefusals: register.refused,
      doubleGrants: storeCheck.doubleGrants,
      overCapacity: storeCheck.overCapacity,
      tokenRegressions: storeCheck.tokenRegressions,
      replayMismatches,
      passed,
      artifacts,
    };
  } finally {
    for (const client of clients) {
      client.child.kill('SIGCONT');
      if (client.child.exitCode === null) client.child.kill('SIGKILL');
    }
    for (const node of nodes) await node.stop().catch(() => {});
    for (const proxy of dbProxies) await proxy.close();
    pg?.stop();
    await register.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The store's clock for an operation on `node`: its offset from the run's clock, as an
 * interval around each clock jump (from when it was asked for to when the server showed it).
 */
export function offsetsOf(jumps: readonly ClockJump[], node: string | null) {
  if (jumps.some((jump) => jump.after < jump.before || jump.before < 0)) {
    throw new Error('the run moves clocks forward only (the history relies on it)');
  }
  return (at: number) => {
    let min = 0;
    let max = 0;
    for (const jump of jumps) {
      if (node !== null && jump.node !== node) continue;
      if (at >= jump.effective) {
        min = jump.after * 1000;
        max = jump.after * 1000;
      } else if (at >= jump.requested) {
        min = Math.min(jump.before, jump.after) * 1000;
        max = Math.max(jump.before, jump.after) * 1000;
      }
    }
    return { min, max };
  };
}

/** Registers a resource of the pool (PUT /resources/{name}), on the server itself. */
async function putResource(node: TrackerNode, resource: ModelResource): Promise<void> {
  const response = await fetch(
    `${node.directUrl}/api/v1alpha1/resources/${encodeURIComponent(resource.name)}`,
    {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ labels: resource.labels, capacity: resource.capacity }),
      signal: AbortSignal.timeout(10_000),
    },
  );
  if (response.status !== 201 && response.status !== 200) {
    throw new Error(`PUT resource ${resource.name}: ${response.status} ${await response.text()}`);
  }
}

/** A claim as the model reads it. */
function claimOf(call: ClaimCall): ModelClaim {
  return {
    service: call.service ?? null,
    label: call.service === undefined ? (call.label ?? null) : null,
    mode: call.mode ?? 'exclusive',
    limit: call.limit ?? null,
    quantity: call.quantity ?? 1,
  };
}

/** The clients' records as the checker's operations, with the store's time of each. */
export function toHistory(
  all: readonly OpRecord[],
  offset: (at: number) => { min: number; max: number },
): LockOperation[] {
  const records = mergeRetries(all);
  // Which service a lock id belongs to, and which services a group holds, from every answer.
  const serviceOf = new Map<string, string>();
  const groupServices = new Map<string, string[]>();
  const groupIds = new Map<string, string[]>();
  for (const record of records) {
    const { call, outcome } = record;
    if ((call.kind !== 'acquire' && call.kind !== 'acquire-group') || outcome === 'unknown') continue;
    const fallback = call.kind === 'acquire' ? (call.service ?? '') : '';
    if (outcome.ok && outcome.lock) serviceOf.set(outcome.lock.id, outcome.lock.service ?? fallback);
    if (outcome.ok && outcome.locks) {
      for (const lock of outcome.locks) serviceOf.set(lock.id, lock.service ?? fallback);
      if (outcome.group !== undefined) {
        groupServices.set(
          outcome.group,
          outcome.locks.map((lock) => lock.service ?? fallback),
        );
        groupIds.set(
          outcome.group,
          outcome.locks.map((lock) => lock.id),
        );
      }
    }
    // A refusal names a holder of one of the services it asked for (or of what keeps it out).
    if (!outcome.ok && outcome.holderId && fallback !== '') serviceOf.set(outcome.holderId, fallback);
  }
  const lastMoments = lastMomentsOf(records);
  const operations: LockOperation[] = [];
  for (const record of records) {
    const { call } = record;
    const ids = 'id' in call ? [call.id] : 'group' in call ? (groupIds.get(call.group) ?? []) : [];
    // A group's call matters until its last member is surely gone.
    const moments = ids.map((id) => lastMoments.get(id) ?? Number.POSITIVE_INFINITY);
    const lastMoment = Math.min(
      moments.length > 0 ? Math.max(...moments) : Number.POSITIVE_INFINITY,
      record.settledBy ?? Number.POSITIVE_INFINITY,
    );
    const ended = record.ended ?? Math.max(record.started, lastMoment);
    const at = {
      from: record.started + offset(record.started).min,
      to: ended === Number.POSITIVE_INFINITY ? ended : ended + offset(ended).max,
    };
    const output = record.outcome === 'unknown' ? UNKNOWN : toOutput(record.outcome);
    let input: LockInput;
    if (call.kind === 'acquire' || call.kind === 'acquire-group') {
      const claims =
        call.kind === 'acquire-group'
          ? call.claims.map(claimOf)
          : call.label !== undefined || call.mode !== undefined || call.limit !== undefined
            ? [claimOf(call)]
            : undefined;
      const first = claims?.[0];
      input = {
        kind: 'acquire',
        service:
          call.kind === 'acquire'
            ? (call.service ?? call.label ?? '')
            : (first?.service ?? first?.label ?? ''),
        at,
        // A retry answered LOCK_ENDED only looks: nothing of its request is left by then.
        phase: call.waitSeconds > 0 && !(record.retried && isLockEnded(record.outcome)) ? 'complete' : 'now',
        request: call.who,
        ttlMs: call.ttlSeconds * 1000,
        retried: record.retried === true,
        ...(claims ? { claims } : {}),
        ...(call.priority !== undefined ? { priority: call.priority } : {}),
        ...(call.kind === 'acquire-group' ? { group: true } : {}),
      };
    } else if (call.kind === 'queue') {
      input = { kind: 'queue', service: call.service, at };
    } else if (call.kind === 'release-group' || call.kind === 'renew-group') {
      const services = groupServices.get(call.group);
      if (services === undefined) continue;
      input = {
        kind: call.kind,
        service: services[0] ?? '',
        services,
        group: call.group,
        at,
        ttlMs: call.kind === 'renew-group' ? call.ttlSeconds * 1000 : null,
      };
    } else {
      const service = serviceOf.get(call.id);
      if (service === undefined) continue;
      input =
        call.kind === 'renew'
          ? { kind: 'renew', service, at, id: call.id, ttlMs: call.ttlSeconds * 1000 }
          : { kind: call.kind, service, at, id: call.id };
    }
    operations.push({ client: record.client, input, output, call: record.started, return: ended });
  }
  return operations;
}

/**
 * For each lock, a moment (run's clock) after which it surely no longer exists, when the
 * history shows one: an answer said it was released or gone, or its lease (as the last answer
 * showing it said, no renewal of it being in doubt) surely ended. An operation on a lock whose
 * answer was lost did nothing if it took effect after that (the lock's id never comes back),
 * so it is checked as having taken effect by then: otherwise the search would try it at every
 * later point of the history, each try doubling what it explores.
 */
function lastMomentsOf(records: readonly OpRecord[]): Map<string, number> {
  const gone = new Map<string, number>();
  const leaseEnd = new Map<string, number>();
  const renewalInDoubt = new Set<string>();
  const earliest = (map: Map<string, number>, id: string, at: number) =>
    map.set(id, Math.min(map.get(id) ?? Number.POSITIVE_INFINITY, at));
  // A group's calls act on its members.
  const members = new Map<string, string[]>();
  for (const { outcome } of records) {
    if (outcome !== 'unknown' && outcome.ok && outcome.group !== undefined && outcome.locks) {
      members.set(outcome.group, [
        ...new Set([...(members.get(outcome.group) ?? []), ...outcome.locks.map((lock) => lock.id)]),
      ]);
    }
  }
  const idsOf = (call: OpRecord['call']) =>
    'id' in call ? [call.id] : 'group' in call ? (members.get(call.group) ?? []) : [];
  for (const record of records) {
    const { call, outcome } = record;
    if (outcome === 'unknown') {
      if (call.kind === 'renew' || call.kind === 'renew-group')
        for (const id of idsOf(call)) renewalInDoubt.add(id);
      continue;
    }
    const ended = record.ended as number;
    const shown = outcome.ok ? (outcome.locks ?? (outcome.lock ? [outcome.lock] : [])) : [];
    for (const lock of shown) {
      // The store's clock never runs behind the run's (its clock only jumps forward), so the
      // lease surely ended by the run's clock at its latest end by the store's.
      const end = lock.expiresAt === null ? Number.POSITIVE_INFINITY : lock.expiresAt + 1000;
      leaseEnd.set(lock.id, Math.max(leaseEnd.get(lock.id) ?? 0, end));
    }
    if ('id' in call || 'group' in call) {
      const released =
        outcome.ok &&
        (call.kind === 'release' || call.kind === 'force-release' || call.kind === 'release-group');
      const notThere = !outcome.ok && (outcome.code === 'LOCK_NOT_FOUND' || outcome.code === 'LOCK_NOT_HELD');
      if (released || notThere) for (const id of idsOf(call)) earliest(gone, id, ended);
    }
  }
  for (const [id, end] of leaseEnd) if (!renewalInDoubt.has(id)) earliest(gone, id, end);
  return gone;
}

/**
 * A call whose answer was lost, then retried by its client, is one operation: it took effect
 * once, somewhere between the first call and the retry's answer, and the retry's answer says
 * how (an acquire retried with its key is answered the first attempt's lock, or its place in
 * line; a release retried and answered 200 released it then). Kept apart: a retry answered
 * LOCK_ENDED (the lock was granted and ended in between), or 404 for a release (it may have
 * been released by the first attempt).
 */
function mergeRetries(records: readonly OpRecord[]): OpRecord[] {
  const merged: OpRecord[] = [];
  const pending = new Map<string, OpRecord>();
  const retryKey = (record: OpRecord) => {
    const { call } = record;
    if (call.kind === 'acquire' || call.kind === 'acquire-group')
      return `${record.client}/${call.kind}/${call.key}`;
    if (call.kind === 'release' || call.kind === 'force-release' || call.kind === 'renew') {
      return `${record.client}/${call.kind}/${call.id}`;
    }
    if (call.kind === 'release-group' || call.kind === 'renew-group')
      return `${record.client}/${call.kind}/${call.group}`;
    return null;
  };
  for (const record of records) {
    const key = retryKey(record);
    const earlier = key === null ? undefined : pending.get(key);
    if (key !== null && earlier) {
      pending.delete(key);
      const outcome = record.outcome;
      // A retry refused because the first attempt may have done it (released, or the lock
      // ended meanwhile): the two stay apart, the first with its outcome unknown.
      const keepsApart =
        outcome !== 'unknown' &&
        !outcome.ok &&
        (outcome.code === 'LOCK_ENDED' ||
          outcome.code === 'LOCK_NOT_FOUND' ||
          outcome.code === 'LOCK_NOT_HELD');
      if (keepsApart) {
        // A retried acquire answered LOCK_ENDED: the request was granted, and its lock ended,
        // by that answer; the retry itself changed nothing.
        const ended =
          (record.call.kind === 'acquire' || record.call.kind === 'acquire-group') && record.ended !== null;
        merged.push(ended ? { ...earlier, settledBy: record.ended as number } : earlier, {
          ...record,
          retried: true,
        });
      } else if (outcome === 'unknown')
        pending.set(key, { ...record, started: earlier.started, retried: true });
      else merged.push({ ...record, started: earlier.started, retried: true });
      continue;
    }
    if (key !== null && record.outcome === 'unknown') pending.set(key, record);
    // A read whose answer was lost changed nothing and says nothing.
    else if (record.outcome === 'unknown' && (record.call.kind === 'get' || record.call.kind === 'queue'))
      continue;
    else merged.push(record);
  }
  merged.push(...pending.values());
  return merged;
}

function isLockEnded(outcome: Outcome): boolean {
  return outcome !== 'unknown' && !outcome.ok && outcome.code === 'LOCK_ENDED';
}

function toOutput(outcome: Exclude<Outcome, 'unknown'>): LockOutput {
  if (!outcome.ok) return outcome;
  if (outcome.locks)
    return { ok: true, locks: outcome.locks, ...(outcome.group ? { group: outcome.group } : {}) };
  if (outcome.lock) return { ok: true, lock: outcome.lock };
  if (outcome.queue) return { ok: true, queue: outcome.queue };
  return { ok: true };
}

/** Attempts of one request (one key) answered with different locks: a second grant under a key. */
function countReplayMismatches(records: readonly OpRecord[]): number {
  const granted = new Map<string, string>();
  let mismatches = 0;
  for (const record of records) {
    const { call, outcome } = record;
    if ((call.kind !== 'acquire' && call.kind !== 'acquire-group') || outcome === 'unknown' || !outcome.ok)
      continue;
    const locks = outcome.locks ?? (outcome.lock ? [outcome.lock] : []);
    if (locks.length === 0) continue;
    const seen = `${outcome.group ?? ''}:${locks.map((lock) => `${lock.id}/${lock.token}`).join(',')}`;
    const before = granted.get(call.key);
    if (before !== undefined && before !== seen) mismatches++;
    granted.set(call.key, seen);
  }
  return mismatches;
}

interface EventJson {
  readonly id: number;
  readonly type: string;
  readonly service: string;
  readonly lock: {
    readonly id: string;
    readonly fencingToken: number | null;
    readonly mode?: 'exclusive' | 'shared';
    readonly limit?: number | null;
  };
}

/**
 * The store's history, in event-id order per service (the order its changes committed in):
 * every `acquired` must come when the service's live locks admit it (no exclusive lock with a
 * shared one, no more exclusive ones than the least limit among them), and with a fencing
 * token above every earlier one.
 */
async function checkStoreHistory(
  node: TrackerNode,
): Promise<{ doubleGrants: number; overCapacity: number; tokenRegressions: number }> {
  const events: EventJson[] = [];
  let before: number | null = null;
  for (let page = 0; page < 10_000; page++) {
    const query: string = before === null ? '' : `&before=${before}`;
    const response = await fetch(`${node.directUrl}/api/v1alpha1/history?limit=1000${query}`, {
      signal: AbortSignal.timeout(10_000),
    });
    const body = (await response.json()) as { events: EventJson[]; nextBefore: number | null };
    events.push(...body.events);
    if (body.nextBefore === null) break;
    before = body.nextBefore;
  }
  return storeAnomalies(events);
}

/** Double grants, grants over a limit and token regressions in a store's history. */
export function storeAnomalies(events: readonly EventJson[]): {
  doubleGrants: number;
  overCapacity: number;
  tokenRegressions: number;
} {
  const sorted = [...events].sort((a, b) => a.id - b.id);
  const live = new Map<string, Map<string, { mode: string; limit: number }>>();
  const lastToken = new Map<string, number>();
  let doubleGrants = 0;
  let overCapacity = 0;
  let tokenRegressions = 0;
  for (const event of sorted) {
    const holders = live.get(event.service) ?? new Map<string, { mode: string; limit: number }>();
    live.set(event.service, holders);
    if (event.type === 'acquired') {
      const mode = event.lock.mode ?? 'exclusive';
      const limit = event.lock.limit ?? 1;
      const others = [...holders.values()];
      if (
        mode === 'shared'
          ? others.some((h) => h.mode === 'exclusive')
          : others.some((h) => h.mode === 'shared')
      ) {
        doubleGrants++;
      } else if (mode === 'exclusive') {
        const least = Math.min(limit, ...others.map((h) => h.limit));
        if (others.length + 1 > least) {
          if (least === 1) doubleGrants++;
          else overCapacity++;
        }
      }
      holders.set(event.lock.id, { mode, limit });
      const token = event.lock.fencingToken ?? 0;
      if (token <= (lastToken.get(event.service) ?? 0)) tokenRegressions++;
      lastToken.set(event.service, token);
    } else if (event.type === 'released' || event.type === 'expired' || event.type === 'force-released') {
      holders.delete(event.lock.id);
    }
  }
  return { doubleGrants, overCapacity, tokenRegressions };
}
