import { runServer } from './server.js';

// The entry point of `npm start`: the server, configured by flags and the environment.
runServer(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(`tracker: unexpected error at start: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
