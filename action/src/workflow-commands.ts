/**
 * The little of GitHub's runner protocol the action needs, without @actions/core: inputs
 * from `INPUT_<NAME>`, workflow commands (`::error::`) on stdout, and the files the runner
 * reads after the step (GITHUB_OUTPUT, GITHUB_ENV, GITHUB_STATE).
 * See https://docs.github.com/actions/reference/workflow-commands-for-github-actions
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';

/**
 * The input `name` as the runner passes it: `INPUT_` and the name upper-cased, spaces as
 * `_` (hyphens stay). Surrounding white space dropped; '' when not given.
 */
export function input(name: string, env: NodeJS.ProcessEnv = process.env): string {
  return (env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] ?? '').trim();
}

/** Workflow-command data: `%`, CR and LF escaped, so that a message is one command line. */
export function escapeData(text: string): string {
  return text.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

/** An error annotation: one `::error::` line on stdout. */
export function error(message: string): void {
  process.stdout.write(`::error::${escapeData(message)}\n`);
}

/**
 * Runs a step's work and ends with its exit code; an unexpected failure is an annotation
 * and exit code 1. exitCode rather than exit(): stdout may be an asynchronous pipe (Windows),
 * and what is written to it must get out. Nothing is left to keep the process alive.
 */
export function runStep(step: () => Promise<number>): void {
  step().then(
    (code) => {
      process.exitCode = code;
    },
    (failure: unknown) => {
      error(`Tracker: unexpected error: ${(failure as Error).message ?? String(failure)}`);
      process.exitCode = 1;
    },
  );
}

/** A warning annotation: one `::warning::` line on stdout. */
export function warning(message: string): void {
  process.stdout.write(`::warning::${escapeData(message)}\n`);
}

/** A plain log line. */
export function info(message: string): void {
  process.stdout.write(`${message}\n`);
}

/** The file commands: each names the file its environment variable points to. */
export type FileCommand = 'GITHUB_OUTPUT' | 'GITHUB_ENV' | 'GITHUB_STATE';

/**
 * Appends `name` = `value` to the file of `command` in the multi-line form
 * `name<<DELIMITER\nvalue\nDELIMITER\n` (any value, newlines included), with a random
 * delimiter that neither the name nor the value contains. Throws when the runner gave no such
 * file (not run by GitHub Actions).
 */
export function appendFileCommand(
  command: FileCommand,
  name: string,
  value: string,
  env: NodeJS.ProcessEnv = process.env,
): void {
  const file = env[command];
  if (!file) throw new Error(`${command} is not set: this runs as a step of a GitHub Actions job`);
  const delimiter = `ghadelimiter_${randomUUID()}`;
  if (name.includes(delimiter) || value.includes(delimiter) || /[\r\n=]/.test(name) || name === '') {
    throw new Error(`cannot write ${JSON.stringify(name)} to ${command}`);
  }
  appendFileSync(file, `${name}<<${delimiter}\n${value}\n${delimiter}\n`);
}

/**
 * Appends `key=value` lines to GITHUB_STATE: the post step gets each as the environment
 * variable `STATE_<key>`. For the action's own one-line values (ids, a pid, a kind).
 */
export function saveState(key: string, value: string, env: NodeJS.ProcessEnv = process.env): void {
  const file = env.GITHUB_STATE;
  if (!file) throw new Error('GITHUB_STATE is not set: this runs as a step of a GitHub Actions job');
  if (!/^[A-Za-z0-9_]+$/.test(key) || /[\r\n]/.test(value)) {
    throw new Error(`cannot save ${JSON.stringify(key)} as one state line`);
  }
  appendFileSync(file, `${key}=${value}\n`);
}

/** What the main step saved with `saveState(key, ...)`; '' when it saved nothing. */
export function state(key: string, env: NodeJS.ProcessEnv = process.env): string {
  return env[`STATE_${key}`] ?? '';
}
