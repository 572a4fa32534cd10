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
 * stay within `tokenBudget`.
 */
export function planBatches(lengths: number[], batchSize: number, tokenBudget = 0): number[][] {
  checkBatchSize(batchSize);
  const order = lengths.map((_, index) => index).sort((a, b) => lengths[b] - lengths[a] || a - b);
  const batches: number[][] = [];
  for (const index of order) {
    const last = batches[batches.length - 1];
    if (last && (last.length < batchSize || (last.length + 1) * lengths[last[0]] <= tokenBudget)) last.push(index);
    else batches.push([index]);
  }
  return batches;
}

/**
 * Score sequences in batches (`planBatches`, with the model's token budget), `model.inFlight` requests at a time,
 * then put the scores back in request order. `nameOf` names a sequence in errors (default `sequence N`).
 */
export async function scoreInBatches(
  model: ScoringModel,
  seqs: number[][],
  batchSize: number,
  onProgress?: (scored: number, total: number) => void,
  nameOf: (index: number) => string = (index) => `sequence ${index}`,
): Promise<TokenScores[]> {
  const batches = planBatches(seqs.map((s) => s.length), batchSize, model.tokenBudget ?? 0);
  const scores: TokenScores[] = new Array(seqs.length);
  const pending: Promise<TokenScores[]>[] = [];
  let sent = 0;
  const send = () => {
    const request = model.scoreSequences(batches[sent++].map((index) => seqs[index]));
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
      const expected = seqs[index].length - 1;
      if (result.logprobs.length !== expected || result.greedy.length !== expected) {
        throw new Error(`scoreSequences returned ${result.logprobs.length} scores for a sequence of ${seqs[index].length} tokens`);
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
  /** Index into the sequence's logprobs of the first continuation token. */
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
  const scores = await scoreInBatches(model, prepared.map((p) => p.sequence), opts.batchSize ?? DEFAULT_EVAL_BATCH_SIZE, opts.onProgress, (index) => prepared[index].name);
  return prepared.map((p, index) => {
    const { logprobs, greedy } = scores[index];
    let logprob = 0;
    let isGreedy = true;
    for (let i = p.scoreFrom; i < p.scoreFrom + p.nTokens; i++) {
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
  const scores = await scoreInBatches(model, windows.map((w) => tokens.slice(w.start, w.end)), opts.batchSize ?? DEFAULT_EVAL_BATCH_SIZE, undefined, (index) => `window ${index}`);
  let logprob = 0;
  windows.forEach((window, index) => {
    // Position t of the token list sits at t - start in the window; its score is at t - start - 1.
    for (let t = window.scoreFrom; t < window.end; t++) logprob += scores[index].logprobs[t - window.start - 1];
  });
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
