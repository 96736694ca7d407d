/**
 * A linearizability checker for recorded histories, in the manner of Porcupine (Anish
 * Athalye's checker used by etcd's robustness tests): the Wing–Gong search over the
 * history's call and return events, with Lowe's memo of (linearised set, state) so that no
 * configuration is explored twice, and histories split into independent partitions first.
 *
 * A history is a list of operations, each with its client, input, output, and when it was
 * called and returned (on one clock, any unit). An operation whose outcome is unknown (a
 * timeout, a cut connection, a 503 after the commit may have happened) has `output: UNKNOWN`
 * and `return: Infinity`: it may have taken effect at any time after its call, or never
 * (the search may linearise it at the very end, after everything observed).
 *
 * Models are nondeterministic: `step` returns every state the operation may lead to (none:
 * the operation cannot happen there). The search runs on sets of states (the power-set
 * construction Porcupine uses for nondeterministic models), so each memo entry is a
 * linearised set and the set of states it may have reached.
 */

/** The output of an operation whose outcome the client never learned. */
export const UNKNOWN = Symbol('unknown outcome');
export type Unknown = typeof UNKNOWN;

export interface Operation<I, O> {
  /** Who made the call; calls of one client never overlap. */
  readonly client: string;
  readonly input: I;
  readonly output: O | Unknown;
  readonly call: number;
  /** Infinity when the outcome is unknown. */
  readonly return: number;
}

export interface Model<S, I, O> {
  /** The states before anything happened (usually one). */
  init(): S[];
  /**
   * The states `state` may move to when `input` takes effect and answers `output`
   * (UNKNOWN: any answer); [] when that cannot happen in this state.
   */
  step(state: S, input: I, output: O | Unknown): S[];
  /** A canonical key: two states with the same key are equal (Porcupine's `equal`). */
  key(state: S): string;
  /** Independent sub-histories (e.g. per service); default: the whole history. */
  partition?(history: readonly Operation<I, O>[]): Operation<I, O>[][];
  /**
   * The operations the search runs on for one operation of the history (default: itself): an
   * operation that takes effect in steps (a wait: joining the line, then being granted) may
   * be several. Excerpts keep an operation's steps together.
   */
  expand?(operation: Operation<I, O>): Operation<I, O>[];
  /** One line for an operation, for reports. */
  describe?(operation: Operation<I, O>): string;
}

export type Verdict<I, O> =
  | { readonly result: 'ok'; readonly partitions: number; readonly operations: number }
  | {
      readonly result: 'illegal';
      /** The smallest excerpt found that still cannot be linearised (a sub-history of one partition). */
      readonly excerpt: Operation<I, O>[];
      /** The partition it comes from, whole. */
      readonly partition: Operation<I, O>[];
      /** The longest prefix of the partition's calls, in call order, that could be linearised. */
      readonly linearisedPrefix: number;
    }
  | { readonly result: 'unknown'; readonly reason: string };

export interface CheckOptions {
  /** Total time budget for the search, in ms (default 10 s); past it the verdict is `unknown`. */
  readonly timeoutMs?: number;
  /** Time budget for shrinking an illegal partition to an excerpt, in ms (default 5 s). */
  readonly shrinkMs?: number;
}

interface Entry {
  /** Operation index in the partition. */
  readonly id: number;
  readonly isCall: boolean;
  readonly time: number;
  /** For a call: its return entry. */
  match: Entry | null;
  prev: Entry | null;
  next: Entry | null;
}

class Budget {
  readonly #deadline: number;
  constructor(ms: number) {
    this.#deadline = performance.now() + ms;
  }
  get spent(): boolean {
    return performance.now() > this.#deadline;
  }
}

/**
 * The call and return events of `ops`, in time order (a call before a return at the same
 * instant: the two operations overlap), as a doubly linked list with a sentinel head.
 */
function entries<I, O>(ops: readonly Operation<I, O>[]): Entry {
  const events: Entry[] = [];
  ops.forEach((op, id) => {
    const call: Entry = { id, isCall: true, time: op.call, match: null, prev: null, next: null };
    const ret: Entry = { id, isCall: false, time: op.return, match: null, prev: null, next: null };
    call.match = ret;
    events.push(call, ret);
  });
  events.sort((a, b) => a.time - b.time || (a.isCall === b.isCall ? a.id - b.id : a.isCall ? -1 : 1));
  const head: Entry = { id: -1, isCall: false, time: -Infinity, match: null, prev: null, next: null };
  let last = head;
  for (const event of events) {
    last.next = event;
    event.prev = last;
    last = event;
  }
  return head;
}

/** Takes a call and its return out of the list. */
function lift(call: Entry): void {
  const ret = call.match as Entry;
  (call.prev as Entry).next = call.next;
  if (call.next) call.next.prev = call.prev;
  (ret.prev as Entry).next = ret.next;
  if (ret.next) ret.next.prev = ret.prev;
}

/** Puts a lifted call and its return back where they were. */
function unlift(call: Entry): void {
  const ret = call.match as Entry;
  (ret.prev as Entry).next = ret;
  if (ret.next) ret.next.prev = ret;
  (call.prev as Entry).next = call;
  if (call.next) call.next.prev = call;
}

class Bitset {
  readonly words: Uint32Array;
  constructor(size: number) {
    this.words = new Uint32Array(Math.ceil(size / 32) || 1);
  }
  set(index: number): void {
    this.words[index >>> 5] = (this.words[index >>> 5] ?? 0) | (1 << (index & 31));
  }
  clear(index: number): void {
    this.words[index >>> 5] = (this.words[index >>> 5] ?? 0) & ~(1 << (index & 31));
  }
  key(): string {
    return Array.from(this.words, (word) => word.toString(36)).join('.');
  }
}

/**
 * ok, or not with how far it got: the most operations linearised at once, and the operations
 * (of the history, not expanded) that could not come next at that point.
 */
type Search =
  | { readonly ok: boolean; readonly prefix: number; readonly stuck: readonly number[] }
  | 'timeout';

/** The Wing–Gong search with Lowe's memo over one partition. */
function search<S, I, O>(model: Model<S, I, O>, history: readonly Operation<I, O>[], budget: Budget): Search {
  // Each expanded operation remembers which operation of the history it comes from.
  const origin: number[] = [];
  const ops = history.flatMap((op, index) => {
    const steps = model.expand?.(op) ?? [op];
    for (const _ of steps) origin.push(index);
    return steps;
  });
  const head = entries(ops);
  /** The calls that wait in the list before its first return: what may come next. */
  const candidates = () => {
    const ids = new Set<number>();
    for (let e = head.next; e?.isCall; e = e.next) ids.add(origin[e.id] as number);
    return [...ids];
  };
  let stuck: number[] = candidates();
  const stateKey = (states: S[]) => states.map((state) => model.key(state)).join('\u0000');
  let states = dedupe(model, model.init());
  const linearised = new Bitset(ops.length);
  const seen = new Set<string>();
  const stack: Array<{ call: Entry; states: S[] }> = [];
  let best = 0;
  let entry = head.next;
  let steps = 0;
  while (head.next !== null) {
    if ((++steps & 1023) === 0 && budget.spent) return 'timeout';
    if (entry === null) return { ok: false, prefix: best, stuck };
    if (entry.isCall) {
      const op = ops[entry.id] as Operation<I, O>;
      const next = dedupe(
        model,
        states.flatMap((state) => model.step(state, op.input, op.output)),
      );
      let moved = false;
      if (next.length > 0) {
        linearised.set(entry.id);
        const memo = `${linearised.key()}|${stateKey(next)}`;
        if (!seen.has(memo)) {
          seen.add(memo);
          stack.push({ call: entry, states });
          states = next;
          lift(entry);
          if (stack.length > best) {
            best = stack.length;
            stuck = candidates();
          }
          entry = head.next;
          moved = true;
        } else {
          linearised.clear(entry.id);
        }
      }
      if (!moved) entry = entry.next;
    } else {
      // A return whose call is not linearised yet: this order cannot work; backtrack.
      const top = stack.pop();
      if (!top) return { ok: false, prefix: best, stuck };
      states = top.states;
      linearised.clear(top.call.id);
      unlift(top.call);
      entry = top.call.next;
    }
  }
  return { ok: true, prefix: ops.length, stuck: [] };
}

function dedupe<S, I, O>(model: Model<S, I, O>, states: S[]): S[] {
  const byKey = new Map<string, S>();
  for (const state of states) byKey.set(model.key(state), state);
  return [...byKey.keys()].sort().map((key) => byKey.get(key) as S);
}

/**
 * Shrinks an illegal history to a smaller one that is still illegal: drops chunks, then
 * single operations, while the rest stays illegal (a locally minimal excerpt), within the
 * time budget, never dropping `keep` (the operations the search could not place: the
 * culprits, whom the excerpt must show with what makes them wrong). Operations are kept in
 * their original order.
 */
function shrink<S, I, O>(
  model: Model<S, I, O>,
  ops: Operation<I, O>[],
  keep: ReadonlySet<Operation<I, O>>,
  ms: number,
): Operation<I, O>[] {
  const budget = new Budget(ms);
  // Each candidate shares the one budget: a candidate whose search runs out counts as legal.
  const illegal = (candidate: Operation<I, O>[]) => {
    const verdict = search(model, candidate, budget);
    return verdict !== 'timeout' && !verdict.ok;
  };
  let current = ops;
  for (let chunk = Math.max(1, Math.floor(current.length / 2)); chunk >= 1; chunk = Math.floor(chunk / 2)) {
    for (let start = 0; start < current.length && !budget.spent; ) {
      const dropped = current.slice(start, start + chunk);
      const candidate = [...current.slice(0, start), ...current.slice(start + chunk)];
      if (candidate.length > 0 && !dropped.some((op) => keep.has(op)) && illegal(candidate))
        current = candidate;
      else start += chunk;
    }
    if (budget.spent) break;
  }
  return current;
}

/** Checks a history against a model: ok, illegal (with a small failing excerpt) or unknown. */
export function checkLinearizable<S, I, O>(
  model: Model<S, I, O>,
  history: readonly Operation<I, O>[],
  options: CheckOptions = {},
): Verdict<I, O> {
  const budget = new Budget(options.timeoutMs ?? 10_000);
  const partitions = model.partition ? model.partition(history) : [[...history]];
  for (const partition of partitions) {
    const verdict = search(model, partition, budget);
    if (verdict === 'timeout') {
      return {
        result: 'unknown',
        reason: `the search ran out of its time budget on a partition of ${partition.length} operations`,
      };
    }
    if (!verdict.ok) {
      return {
        result: 'illegal',
        excerpt: shrink(
          model,
          partition,
          new Set(verdict.stuck.map((index) => partition[index] as Operation<I, O>)),
          options.shrinkMs ?? 5000,
        ),
        partition,
        linearisedPrefix: verdict.prefix,
      };
    }
  }
  return { result: 'ok', partitions: partitions.length, operations: history.length };
}
