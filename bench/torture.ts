// `npm run torture -- --store sqlite|postgres --seconds N`: the fault run (see
// test/support/torture/run.ts). Clients over REST and gRPC against one SQLite server or three
// PostgreSQL replicas on a private cluster, one fault at a time (kill -9, SIGSTOP of a server
// or of a client holding a lock, cut, slow and black-holed connections, a PostgreSQL restart,
// a clock jump); then a linearizability check of every recorded operation, the fenced
// register's lost and refused writes, and the store's own history. Besides plain locks, the
// REST clients take shared locks, a semaphore, a registered pool by label and groups, with
// priorities (--mix plain: plain locks only). Prints the seed, the
// operations checked, the faults and the verdict; a failing run writes its history and an
// HTML timeline of the failing excerpt. Exit code 1 when the run finds a problem.
//
//   node --import tsx bench/torture.ts --store sqlite --seconds 300 [--clients 6] [--seed N]
//                                      [--broken no-fencing|split-brain|overshoot] [--mix many|plain]
//                                      [--out DIR] [--json]
import { parseArgs } from 'node:util';
import { runTorture } from '../test/support/torture/run.js';

const { values } = parseArgs({
  options: {
    store: { type: 'string', default: 'sqlite' },
    seconds: { type: 'string', default: '60' },
    clients: { type: 'string', default: '6' },
    seed: { type: 'string' },
    broken: { type: 'string' },
    mix: { type: 'string', default: 'many' },
    out: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const store = values.store;
if (store !== 'sqlite' && store !== 'postgres') {
  process.stderr.write('torture: --store must be sqlite or postgres\n');
  process.exit(2);
}
const broken = values.broken;
if (broken !== undefined && broken !== 'no-fencing' && broken !== 'split-brain' && broken !== 'overshoot') {
  process.stderr.write('torture: --broken must be no-fencing, split-brain or overshoot\n');
  process.exit(2);
}
const mix = values.mix;
if (mix !== 'many' && mix !== 'plain') {
  process.stderr.write('torture: --mix must be many or plain\n');
  process.exit(2);
}
const seconds = Number(values.seconds);
const clients = Number(values.clients);
if (
  !Number.isInteger(seconds) ||
  seconds < 5 ||
  seconds > 24 * 3600 ||
  !Number.isInteger(clients) ||
  clients < 1 ||
  clients > 64
) {
  process.stderr.write('torture: --seconds must be 5 to 86400, --clients 1 to 64\n');
  process.exit(2);
}
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);

const report = await runTorture({
  store,
  seconds,
  clients,
  seed,
  broken,
  mix,
  outDir: values.out,
  log: (line) => process.stderr.write(`${line}\n`),
});
if (values.json) process.stdout.write(`${JSON.stringify(report)}\n`);
else {
  const kinds = new Map<string, number>();
  for (const fault of report.faults) kinds.set(fault.kind, (kinds.get(fault.kind) ?? 0) + 1);
  process.stdout.write(
    [
      `seed ${report.seed}, store ${report.store}${report.broken ? `, broken: ${report.broken}` : ''}`,
      `operations checked: ${report.operations} (from ${report.calls} calls: a retried call is one operation; outcome unknown: ${report.unknownOutcomes})`,
      `faults injected: ${report.faults.length} (${[...kinds].map(([kind, n]) => `${kind} ${n}`).join(', ')})`,
      `verdict: ${report.verdict}: ${report.verdictDetail} (checked in ${(report.checkMs / 1000).toFixed(1)} s)`,
      `register: ${report.acknowledgedWrites} writes acknowledged, ${report.lostWrites} lost, ${report.fencingRefusals} refused by fencing`,
      `store history: ${report.doubleGrants} double grants, ${report.overCapacity} grants over a limit, ${report.tokenRegressions} token regressions; replays answered another lock: ${report.replayMismatches}`,
      report.passed
        ? 'PASSED'
        : `FAILED${report.artifacts ? ` (history: ${report.artifacts.history}, timeline: ${report.artifacts.timeline})` : ''}`,
      '',
    ].join('\n'),
  );
}
process.exit(report.passed ? 0 : 1);
