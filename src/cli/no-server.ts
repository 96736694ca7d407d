/**
 * `tracker serve` in the single-executable CLI (scripts/build-cli.mjs puts this module in the
 * place of ../server.js): that build carries the client only, no server and no native
 * database driver, so that it runs in any Linux image. The server comes with the npm package
 * and the container image.
 */
export async function runServer(_argv: readonly string[], _program: string): Promise<void> {
  process.stderr.write(
    'tracker: this is the single-executable client; it has no server. Run the server from the npm\n' +
      'package (npm install -g tracker-lock, then tracker serve) or from the container image.\n',
  );
  process.exitCode = 2;
}
