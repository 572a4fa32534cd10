import { printable, UserError } from '../errors';
import type { Tokenizer } from '../data/tokenizer';
import type { LoglikelihoodRequest, LoglikelihoodResult, RollingResult, ScoringModel, TokenScores } from './types';

export const DEFAULT_EVAL_BATCH_SIZE = 16;

/**
 * Trailing whitespace of the context belongs to the continuation: BPE tokenizers attach a space to the word after
 * it (" yes" is one token), so leaving the space at the end of the context would score an unnatural lone-space
 * token there and a space-less word in the continuation.
 */
export function moveTrailingWhitespace(context: string, continuation: string): { context: string; continuation: string } {
  const trailing = /\s+$/.exec(context);
  if (!trailing) return { context, continuation };
  return { context: context.slice(0, trailing.index), continuation: trailing[0] + continuation };
}

export interface ContextContinuationTokens {
  contextTokens: number[];
  continuationTokens: number[];
  /**
   * True when the context's own tokens are not a prefix of the tokens of context+continuation (a merge spans
   * the join). The split is then made where the two token lists first differ, so the spanning token, and any
   * context token re-tokenised with it, is scored as part of the continuation: every token of the whole is
   * scored either as context or as continuation, never dropped, and the continuation's score includes the
   * probability of producing its first characters.
   */
  diverged: boolean;
}

/** Encode context+continuation together and split them at the context's token count (see `diverged`). */
export function splitContextContinuation(tokenizer: Tokenizer, context: string, continuation: string): ContextContinuationTokens {
  const whole = tokenizer.encode(context + continuation);
  const contextAlone = context === '' ? [] : tokenizer.encode(context);
  let shared = 0;
  const limit = Math.min(whole.length, contextAlone.length);
  while (shared < limit && whole[shared] === contextAlone[shared]) shared += 1;
  return {
    contextTokens: whole.slice(0, shared),
    continuationTokens: whole.slice(shared),
    diverged: shared < contextAlone.length,
  };
}

function checkBatchSize(batchSize: number): void {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new UserError(`eval.batch_size must be a positive integer, got ${printable(String(batchSize))}`);
}

function checkMaxSeqLen(model: ScoringModel): void {
  if (!Number.isInteger(model.maxSeqLen) || model.maxSeqLen < 2) {
    throw new Error(`ScoringModel.maxSeqLen must be an integer >= 2, got ${model.maxSeqLen}`);
  }
}

/**
 * A NaN or infinite log-probability comes from NaN or Inf weights (a corrupt or diverged checkpoint), never from
 * a usable model: argmax over NaN picks choice 0 for every item, so scoring on would report chance-like numbers.
 */
function checkFinite(model: ScoringModel, scores: TokenScores, name: string): void {
  const bad = scores.logprobs.find((lp) => !Number.isFinite(lp));
  if (bad === undefined) return;
  const source = model.source === undefined ? 'the model' : printable(model.source);
  throw new UserError(`${name}: ${source} gives log-probability ${bad}; its weights hold NaN or Inf (a corrupt or diverged checkpoint?)`);
}

/**
 * Batches of sequence indices, longest first so padding is small and an out-of-memory failure shows up in the
 * first batch: each holds `batchSize` sequences, or more while the padded tokens (count x its longest, the first)
 * stay within `tokenBudget`. With `groupOf`, sequences of one group (a key per sequence) stay next to each other in
 * one batch, groups ordered by their longest member: what a scorer that packs shared prefixes needs.
 */
export function planBatches(lengths: number[], batchSize: number, tokenBudget = 0, groupOf?: (index: number) => string): number[][] {
  checkBatchSize(batchSize);
  const longestOf = (unit: number[]) => unit.reduce((most, index) => Math.max(most, lengths[index]), 0);
  let units: number[][] = [];
  if (groupOf) {
    const byKey = new Map<string, number[]>();
    lengths.forEach((_, index) => {
      const key = groupOf(index);
      const unit = byKey.get(key);
      if (unit) unit.push(index);
      else {
        const fresh = [index];
        byKey.set(key, fresh);
        units.push(fresh);
      }
    });
    // A group larger than one batch holds (many items with one context) is cut, longest first, into batch-sized pieces.
    units = units.flatMap((unit) => {
      const capacity = Math.max(batchSize, Math.floor(tokenBudget / longestOf(unit)));
      if (unit.length <= capacity) return [unit];
      const sorted = [...unit].sort((a, b) => lengths[b] - lengths[a] || a - b);
      return Array.from({ length: Math.ceil(sorted.length / capacity) }, (_, k) => sorted.slice(k * capacity, (k + 1) * capacity));
    });
  } else units = lengths.map((_, index) => [index]);
  const longest = units.map(longestOf);
  const order = units.map((_, u) => u).sort((a, b) => longest[b] - longest[a] || units[a][0] - units[b][0]);
  const batches: number[][] = [];
  let first = 0; // the longest sequence of the last batch
  for (const u of order) {
    const last = batches[batches.length - 1];
    const count = (last?.length ?? 0) + units[u].length;
    if (last && (count <= batchSize || count * first <= tokenBudget)) for (const index of units[u]) last.push(index);
    else {
      batches.push([...units[u]]);
      first = longest[u];
    }
  }
  return batches;
}

export interface ScoreInBatchesOptions {
  batchSize: number;
  /** Per sequence, the first position whose score is wanted (`ScoringModel.scoreSequences`); default all 0. */
  from?: number[];
  /** Per sequence, a key shared by sequences with one prefix: kept together for a scorer that packs them. */
  groupOf?: (index: number) => string;
  onProgress?: (scored: number, total: number) => void;
  /** Names a sequence in errors (default `sequence N`). */
  nameOf?: (index: number) => string;
}

/**
 * Score sequences in batches (`planBatches`, with the model's token budget), `model.inFlight` requests at a time,
 * then put the scores back in request order.
 */
export async function scoreInBatches(model: ScoringModel, seqs: number[][], opts: ScoreInBatchesOptions): Promise<TokenScores[]> {
  const { from, onProgress, nameOf = (index: number) => `sequence ${index}` } = opts;
  await model.ready?.();
  const groupOf = model.packsPrefixes ? opts.groupOf : undefined;
  const batches = planBatches(seqs.map((s) => s.length), opts.batchSize, model.tokenBudget ?? 0, groupOf);
  const scores: TokenScores[] = new Array(seqs.length);
  const pending: Promise<TokenScores[]>[] = [];
  let sent = 0;
  const send = () => {
    const batch = batches[sent++];
    const request = model.scoreSequences(
      batch.map((index) => seqs[index]),
      from && batch.map((index) => from[index]),
    );
    request.catch(() => undefined); // awaited below in order; a later request failing after an earlier one throws is not unhandled
    pending.push(request);
  };
  while (sent < batches.length && pending.length < Math.max(1, model.inFlight ?? 1)) send();
  let done = 0;
  for (const batchIndices of batches) {
    const batchScores = await pending.shift()!;
    if (sent < batches.length) send();
    if (batchScores.length !== batchIndices.length) {
      throw new Error(`scoreSequences returned ${batchScores.length} results for ${batchIndices.length} sequences`);
    }
    batchIndices.forEach((index, position) => {
      const result = batchScores[position];
      const expected = seqs[index].length - 1 - (from?.[index] ?? 0);
      if (result.logprobs.length !== expected || result.greedy.length !== expected) {
        throw new Error(`scoreSequences returned ${result.logprobs.length} scores for ${expected} positions of a sequence of ${seqs[index].length} tokens`);
      }
      checkFinite(model, result, nameOf(index));
      scores[index] = result;
    });
    done += batchIndices.length;
    onProgress?.(done, seqs.length);
  }
  return scores;
}

interface PreparedRequest {
  /** Names the request in errors, escaped for the terminal. */
  name: string;
  sequence: number[];
  /** The first continuation token's position among the sequence's n - 1 predictions (the `from` asked for). */
  scoreFrom: number;
  nTokens: number;
}

function prepareRequest(model: ScoringModel, request: LoglikelihoodRequest, index: number): PreparedRequest {
  const name = printable(request.id ?? `request ${index}`);
  if (request.continuation === '') throw new UserError(`${name}: empty continuation (nothing to score)`);
  const moved = moveTrailingWhitespace(request.context, request.continuation);
  const split = splitContextContinuation(model.tokenizer, moved.context, moved.continuation);
  if (split.continuationTokens.length === 0) {
    throw new UserError(`${name}: continuation ${printable(JSON.stringify(moved.continuation))} encodes to no tokens`);
  }
  // With nothing to condition on, the first continuation token is predicted after eos, as at a document start.
  let contextTokens = split.contextTokens.length > 0 ? split.contextTokens : [model.tokenizer.eos];
  // The whole sequence may hold maxSeqLen tokens: the last one is only a target, so the model sees maxSeqLen - 1.
  const room = model.maxSeqLen - split.continuationTokens.length;
  if (room < 1) {
    throw new UserError(
      `${name}: continuation of ${split.continuationTokens.length} tokens does not fit in the scoring window of ${model.maxSeqLen - 1} positions (${model.windowKey ?? 'model.max_seq_len'}) with at least one token of context`,
    );
  }
  // Left-truncate: the context tokens nearest the continuation matter most, and the continuation is kept whole.
  if (contextTokens.length > room) contextTokens = contextTokens.slice(contextTokens.length - room);
  return {
    name,
    sequence: contextTokens.concat(split.continuationTokens),
    scoreFrom: contextTokens.length - 1,
    nTokens: split.continuationTokens.length,
  };
}

/**
 * Log-likelihood of each request's continuation given its context, following lm-evaluation-harness (design note
 * mla-math.md section 8). Results come back in request order.
 */
export async function loglikelihood(
  model: ScoringModel,
  requests: LoglikelihoodRequest[],
  opts: { batchSize?: number; onProgress?: (scored: number, total: number) => void } = {},
): Promise<LoglikelihoodResult[]> {
  checkMaxSeqLen(model);
  const prepared = requests.map((request, index) => prepareRequest(model, request, index));
  const scores = await scoreInBatches(
    model,
    prepared.map((p) => p.sequence),
    {
      batchSize: opts.batchSize ?? DEFAULT_EVAL_BATCH_SIZE,
      from: prepared.map((p) => p.scoreFrom),
      // A multiple-choice item's choices share their context tokens: one group, one packed row for such a scorer.
      groupOf: (index) => prepared[index].sequence.slice(0, prepared[index].scoreFrom + 1).join(','),
      onProgress: opts.onProgress,
      nameOf: (index) => prepared[index].name,
    },
  );
  return prepared.map((p, index) => {
    const { logprobs, greedy } = scores[index]; // the continuation's positions only
    let logprob = 0;
    let isGreedy = true;
    for (let i = 0; i < p.nTokens; i++) {
      logprob += logprobs[i];
      if (greedy[i] !== 1) isGreedy = false;
    }
    return { logprob, isGreedy, nTokens: p.nTokens };
  });
}

/** One window of a rolling evaluation: tokens [start, end) are fed, the last `end - scoreFrom` of them scored. */
export interface RollingWindow {
  start: number;
  end: number;
  /** First token position (in the eos-prefixed token list) this window scores. */
  scoreFrom: number;
}

/**
 * Windows over `nTokens` text tokens preceded by eos (positions 0..nTokens, position 0 the eos). The first
 * window scores as many tokens as fit; each later one scores the next `stride` tokens with the window ending
 * on the last of them, so the first of them sees maxSeqLen - stride tokens of context. Every position
 * 1..nTokens is scored exactly once; stride = maxSeqLen - 1 gives disjoint windows.
 */
export function rollingWindows(nTokens: number, maxSeqLen: number, stride: number): RollingWindow[] {
  if (!Number.isInteger(stride) || stride < 1 || stride > maxSeqLen - 1) {
    throw new UserError(`stride must be an integer in 1..${maxSeqLen - 1} (max_seq_len - 1), got ${stride}`);
  }
  const windows: RollingWindow[] = [];
  if (nTokens === 0) return windows;
  const firstEnd = Math.min(maxSeqLen, nTokens + 1);
  windows.push({ start: 0, end: firstEnd, scoreFrom: 1 });
  for (let next = firstEnd; next <= nTokens; ) {
    const end = Math.min(next + stride, nTokens + 1);
    windows.push({ start: Math.max(0, end - maxSeqLen), end, scoreFrom: next });
    next = end;
  }
  return windows;
}

/**
 * The first score a window needs: token-list position t sits at t - start in the window and its score at
 * t - start - 1, so the window's first new token, scoreFrom, is its score scoreFrom - start - 1.
 */
export function windowFrom(window: RollingWindow): number {
  return window.scoreFrom - window.start - 1;
}

/** Log-likelihood of a whole text, scored in sliding windows (see `rollingWindows`). */
export async function loglikelihoodRolling(
  model: ScoringModel,
  text: string,
  opts: { stride: number; batchSize?: number },
): Promise<RollingResult> {
  checkMaxSeqLen(model);
  const tokens = [model.tokenizer.eos, ...model.tokenizer.encode(text)];
  const nTokens = tokens.length - 1;
  const windows = rollingWindows(nTokens, model.maxSeqLen, opts.stride);
  const scores = await scoreInBatches(
    model,
    windows.map((w) => tokens.slice(w.start, w.end)),
    { batchSize: opts.batchSize ?? DEFAULT_EVAL_BATCH_SIZE, from: windows.map(windowFrom), nameOf: (index) => `window ${index}` },
  );
  let logprob = 0;
  for (const s of scores) for (const lp of s.logprobs) logprob += lp; // each window's new tokens only
  return { logprob, nTokens };
}

/** Token-level perplexity exp(-logprob / nTokens). */
export function perplexity(logprob: number, nTokens: number): number {
  return Math.exp(-logprob / nTokens);
}

/** Bits per UTF-8 byte: comparable across tokenizers, unlike token perplexity. */
export function bitsPerByte(logprob: number, nBytes: number): number {
  return -logprob / (nBytes * Math.LN2);
}

/** Word-level perplexity exp(-logprob / nWords), comparable across tokenizers on the same text. */
export function wordPerplexity(logprob: number, nWords: number): number {
  return Math.exp(-logprob / nWords);
}
