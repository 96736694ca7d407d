import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ROOT, runToExit } from './support/server-process.js';

/**
 * The .proto is the single source of the gRPC wire types: `buf lint` keeps it to the
 * standard style (with the exceptions in proto/buf.yaml), and `buf breaking` refuses any
 * change that would break a client built from the previous commit's .proto (a removed or
 * renumbered field, a changed type, a renamed method).
 */
const BUF = `${ROOT}/node_modules/.bin/buf`;

describe('the .proto', () => {
  test('buf lint passes', async () => {
    const run = await runToExit(BUF, ['lint'], { cwd: `${ROOT}/proto` });
    assert.equal(run.code, 0, `${run.stdout}${run.stderr}`);
  });

  test("buf breaking finds nothing against the previous commit's .proto", async () => {
    const previous = await runToExit('git', ['rev-parse', '--verify', '--quiet', 'HEAD~1'], { cwd: ROOT });
    assert.equal(
      previous.code,
      0,
      'the previous commit is missing (a shallow clone?): buf breaking needs it; clone with history',
    );
    const run = await runToExit(BUF, ['breaking', '--against', '../.git#ref=HEAD~1,subdir=proto'], {
      cwd: `${ROOT}/proto`,
    });
    assert.equal(run.code, 0, `${run.stdout}${run.stderr}`);
  });
});
