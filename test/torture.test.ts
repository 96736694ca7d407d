import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { type Nemesis, runTorture, type TortureOptions } from './support/torture/run.js';

/**
 * Short fault runs (npm run torture runs long ones): every nemesis at least once over the two
 * stores, every operation checked for linearizability, the fenced register and the store's
 * history checked, and the broken variants found. Leases are 1 s, so pauses of 2 s outlast
 * them.
 */
const SHORT: Pick<TortureOptions, 'clients' | 'leaseSeconds' | 'calmMs'> = {
  clients: 3,
  leaseSeconds: [1, 1],
  calmMs: [300, 600],
};

const seed = () => Math.floor(Math.random() * 2 ** 31);

function expectPassed(report: Awaited<ReturnType<typeof runTorture>>, nemeses: readonly Nemesis[]): void {
  const summary = `seed ${report.seed}: ${report.verdictDetail}; lost ${report.lostWrites}, double grants ${report.doubleGrants}, token regressions ${report.tokenRegressions}, replay mismatches ${report.replayMismatches}`;
  assert.equal(report.verdict, 'ok', summary);
  assert.equal(report.lostWrites, 0, summary);
  assert.equal(report.doubleGrants, 0, summary);
  assert.equal(report.tokenRegressions, 0, summary);
  assert.equal(report.replayMismatches, 0, summary);
  assert.ok(report.passed, summary);
  assert.deepEqual(
    report.faults.map((fault) => fault.kind),
    [...nemeses],
    'every nemesis was injected',
  );
  assert.ok(report.operations >= 100, `${report.operations} operations checked`);
  assert.ok(report.acknowledgedWrites > 0, 'the holders worked through the register');
}

describe('fault run (short)', { concurrency: true }, () => {
  test('SQLite: kill -9, SIGSTOP of the server and of a holder, cut, slow and black-holed clients, a clock jump', async (t) => {
    const nemeses: Nemesis[] = [
      'kill',
      'pause-client',
      'cut',
      'delay',
      'blackhole',
      'pause-node',
      'clock-jump',
    ];
    const report = await runTorture({ ...SHORT, store: 'sqlite', seconds: 8, seed: seed(), nemeses });
    t.diagnostic(
      `${report.operations} operations, ${report.fencingRefusals} writes refused by fencing, seed ${report.seed}`,
    );
    expectPassed(report, nemeses);
  });

  test('PostgreSQL, three replicas: kill -9 and SIGSTOP of a replica, cut, slow and black-holed database, a restart of PostgreSQL, a clock jump', async (t) => {
    const nemeses: Nemesis[] = [
      'db-cut',
      'kill',
      'db-delay',
      'pg-restart',
      'db-blackhole',
      'pause-node',
      'clock-jump',
    ];
    const report = await runTorture({ ...SHORT, store: 'postgres', seconds: 8, seed: seed(), nemeses });
    t.diagnostic(
      `${report.operations} operations, ${report.fencingRefusals} writes refused by fencing, seed ${report.seed}`,
    );
    expectPassed(report, nemeses);
  });

  test('a split brain (two stores that each decide) is found not linearizable, with a history and a timeline', async () => {
    const outDir = mkdtempSync(join(tmpdir(), 'tracker-torture-broken-'));
    try {
      const report = await runTorture({
        ...SHORT,
        store: 'sqlite',
        seconds: 6,
        seed: seed(),
        broken: 'split-brain',
        nemeses: [],
        services: 1,
        outDir,
      });
      assert.equal(report.verdict, 'illegal', report.verdictDetail);
      assert.equal(report.passed, false);
      assert.ok(report.artifacts);
      assert.ok(existsSync(report.artifacts.history));
      const page = readFileSync(report.artifacts.timeline, 'utf8');
      assert.match(page, /<svg/);
      assert.match(page, /acquire/);
    } finally {
      rmSync(outDir, { recursive: true, force: true });
    }
  });

  test('a register that does not fence loses writes of a holder paused past its lease', async () => {
    const report = await runTorture({
      ...SHORT,
      store: 'sqlite',
      seconds: 8,
      seed: seed(),
      broken: 'no-fencing',
      nemeses: ['pause-client', 'pause-client'],
      services: 1,
    });
    assert.ok(report.lostWrites > 0, `lost ${report.lostWrites} of ${report.acknowledgedWrites}`);
    assert.equal(report.passed, false);
    if (report.artifacts) rmSync(join(report.artifacts.history, '..'), { recursive: true, force: true });
  });
});
