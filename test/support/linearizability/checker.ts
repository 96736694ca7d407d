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
 * (the search may linearise it at the very end, after everything observed); or a finite
 * `return` when the history shows a moment after which it can have had no effect.
 *
 * Models are nondeterministic: `step` returns every state the operation may lead to (none:
 * the operation cannot happen there). Each is a branch of the search, and each memo entry a
 * linearised set and one state: a configuration reached by two paths is explored once (a
 * search on sets of states, as Porcupine's power-set construction, explores a set again
 * whenever one of its states differs, which grows exponentially with a model's choices).
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
  /** Infinity when the outcome is unknown (or the latest moment it could matter). */
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
   * be several, taking effect in their order. Excerpts keep an operation's steps together.
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

/**
 * The set of linearised operations. Operations are numbered in call order, so the set is
 * mostly a prefix of them plus a few more: its key names the prefix's length and the words
 * after it, short however long the history.
 */
class Bitset {
  readonly words: Uint32Array;
  /** Every word before this one is full. */
  #full = 0;
  constructor(size: number) {
    this.words = new Uint32Array(Math.ceil(size / 32) || 1);
  }
  set(index: number): void {
    this.words[index >>> 5] = (this.words[index >>> 5] ?? 0) | (1 << (index & 31));
    while (this.words[this.#full] === 0xffffffff) this.#full++;
  }
  has(index: number): boolean {
    return ((this.words[index >>> 5] ?? 0) & (1 << (index & 31))) !== 0;
  }
  clear(index: number): void {
    this.words[index >>> 5] = (this.words[index >>> 5] ?? 0) & ~(1 << (index & 31));
    if (index >>> 5 < this.#full) this.#full = index >>> 5;
  }
  key(): string {
    let last = this.words.length - 1;
    while (last > this.#full && this.words[last] === 0) last--;
    let key = `${this.#full}`;
    for (let i = this.#full; i <= last; i++) key += `.${(this.words[i] as number).toString(36)}`;
    return key;
  }
}

/**
 * ok, or not with how far it got: the most operations linearised at once, and the operations
 * (of the history, not expanded) that could not come next at that point.
 */
type Search =
  | { readonly ok: boolean; readonly prefix: number; readonly stuck: readonly number[] }
  | 'timeout';

/** A linearised operation on the search's stack: the state before it, and what else it may lead to. */
interface Frame<S> {
  readonly call: Entry;
  readonly before: S;
  /** States the operation may also have led to, not tried yet. */
  readonly untried: S[];
}

/**
 * The Wing–Gong search with Lowe's memo over one partition, one state at a time: each
 * (linearised set, state) configuration is explored once, and an operation with several
 * possible outcomes (a nondeterministic model) is a branch point of the search.
 */
function search<S, I, O>(model: Model<S, I, O>, history: readonly Operation<I, O>[], budget: Budget): Search {
  // Each expanded operation remembers which operation of the history it comes from; they are
  // numbered in call order (the steps of one operation in their order).
  const expanded = history.flatMap((op, index) =>
    (model.expand?.(op) ?? [op]).map((step, order) => ({ step, index, order })),
  );
  expanded.sort((a, b) => a.step.call - b.step.call || a.index - b.index || a.order - b.order);
  const ops = expanded.map((e) => e.step);
  const origin = expanded.map((e) => e.index);
  // The steps of one operation take effect in their order: each waits for the one before.
  const previous = new Map<number, number>();
  const lastStep = new Map<number, number>();
  expanded.forEach((e, id) => {
    const before = lastStep.get(e.index);
    if (before !== undefined) previous.set(id, before);
    lastStep.set(e.index, id);
  });
  const head = entries(ops);
  /** The calls that wait in the list before its first return: what may come next. */
  const candidates = () => {
    const ids = new Set<number>();
    for (let e = head.next; e?.isCall; e = e.next) ids.add(origin[e.id] as number);
    return [...ids];
  };
  let stuck: number[] = candidates();
  const linearised = new Bitset(ops.length);
  const seen = new Set<string>();
  /** Marks a configuration explored; false if it already was. */
  const visit = (state: S) => {
    const memo = `${linearised.key()}|${model.key(state)}`;
    if (seen.has(memo)) return false;
    seen.add(memo);
    return true;
  };
  const stack: Frame<S>[] = [];
  let best = 0;
  let steps = 0;
  for (const initial of dedupe(model, model.init())) {
    if (!visit(initial)) continue;
    let state = initial;
    let entry = head.next;
    while (head.next !== null) {
      if ((++steps & 1023) === 0 && budget.spent) {
        if (process.env.DBG) {
          console.error('seen', seen.size, 'best', best, 'of', ops.length, 'stack', stack.length);
          for (const i of stuck) console.error(model.describe?.(history[i] as Operation<I, O>));
          const ls = new Map<string, number>();
          for (const k of seen) {
            const l = k.split('|')[0] as string;
            ls.set(l, (ls.get(l) ?? 0) + 1);
          }
          console.error('distinct linearised', ls.size, 'max', Math.max(...ls.values()));
          const topk = [...ls].sort((a, b) => b[1] - a[1])[0]?.[0];
          let i = 0;
          for (const k of seen)
            if (k.startsWith(`${topk}|`) && i++ < 30) console.error(k.slice(String(topk).length));
        }
        return 'timeout';
      }
      if (entry?.isCall) {
        const before = previous.get(entry.id);
        if (before !== undefined && !linearised.has(before)) {
          entry = entry.next;
          continue;
        }
        const op = ops[entry.id] as Operation<I, O>;
        linearised.set(entry.id);
        const next = dedupe(model, model.step(state, op.input, op.output)).filter(visit);
        const first = next.pop();
        if (first === undefined) {
          linearised.clear(entry.id);
          entry = entry.next;
          continue;
        }
        stack.push({ call: entry, before: state, untried: next });
        state = first;
        lift(entry);
        if (stack.length > best) {
          best = stack.length;
          stuck = candidates();
        }
        entry = head.next;
        continue;
      }
      // A return whose call is not linearised yet (or the end): this order cannot work. Try
      // the last operation's other outcomes, then undo it.
      const top = stack.at(-1);
      if (!top) break;
      const other = top.untried.pop();
      if (other !== undefined) {
        state = other;
        entry = head.next;
        continue;
      }
      stack.pop();
      state = top.before;
      linearised.clear(top.call.id);
      unlift(top.call);
      entry = top.call.next;
    }
    if (head.next === null) return { ok: true, prefix: ops.length, stuck: [] };
  }
  return { ok: false, prefix: best, stuck };
}

function dedupe<S, I, O>(model: Model<S, I, O>, states: S[]): S[] {
  if (states.length < 2) return states;
  const byKey = new Map<string, S>();
  for (const state of states) byKey.set(model.key(state), state);
  return [...byKey.values()];
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
