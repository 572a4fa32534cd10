import type { Tokenizer } from '../data/tokenizer';

/** The scores of one sequence from position `from` on (`scoreSequences`); with from = 0, every position. */
export interface TokenScores {
  /** [n-1-from]: element j is log p(seq[from+j+1] | seq[..from+j]) */
  logprobs: Float64Array;
  /** [n-1-from]: element j is 1 when seq[from+j+1] is the argmax */
  greedy: Uint8Array;
}

export interface ScoringModel {
  tokenizer: Tokenizer;
  /**
   * Longest token sequence `scoreSequences` accepts. Its last token is only a target, so a forward pass feeds
   * maxSeqLen - 1 positions: a window of N positions (lm-evaluation-harness's max_length) takes maxSeqLen N + 1.
   */
  maxSeqLen: number;
  /** The config key that sets the window, named when a continuation does not fit (default model.max_seq_len). */
  windowKey?: string;
  /** Where the weights come from (a checkpoint folder), named when they give unusable scores. */
  source?: string;
  /**
   * Padded tokens (sequences x the longest of them) one request may carry beyond the caller's batch size, for a
   * scorer that cuts requests into forward passes by tokens itself (the torch engine's process, sized to its
   * memory): requests of a thousand or more short sequences rather than a batch sized for full windows.
   */
  tokenBudget?: number;
  /**
   * Requests `scoreInBatches` keeps in flight (default 1). A scorer in another process takes 2, so it computes the
   * next request while this side encodes, sends and decodes the last one.
   */
  inFlight?: number;
  /**
   * True for a scorer that feeds sequences sharing a prefix (a multiple-choice item's choices after one context)
   * as one packed row: `scoreInBatches` then keeps each such group together in one request.
   */
  packsPrefixes?: boolean;
  /**
   * Resolves once `tokenBudget`, `inFlight` and `packsPrefixes` are final: a scorer in another process learns
   * them when it has loaded its weights. `scoreInBatches` awaits it before planning batches, so a caller
   * tokenizes while such a scorer starts. Rejects with the reason the scorer cannot start.
   */
  ready?(): Promise<unknown>;
  /**
   * Batched scoring of token sequences (each length 2..maxSeqLen), each from position `from[i]` (0..n-2, default
   * 0) on: a continuation needs only its own tokens' scores, and a scorer may skip the output head elsewhere.
   */
  scoreSequences(seqs: number[][], from?: number[]): Promise<TokenScores[]>;
}

/** A checkpoint's scorer, opened by whichever engine scores (evaluation knows no framework); dispose when done. */
export interface CheckpointScorer extends ScoringModel {
  /** Sequences per forward pass, after the engine fitted the requested size to its memory. */
  batchSize: number;
  /**
   * Resolves to when (ms since the epoch) the scorer became ready to score, by its own clock: `openScorer` may
   * return before then, while a scoring process is still loading.
   */
  ready(): Promise<number>;
  /** Ends the scorer, also one still starting. */
  dispose(): void;
}

/**
 * Opens a scorer for the model folder `dir` (refusing a bad folder at once; a scorer that loads elsewhere may
 * still be loading when this resolves: see `CheckpointScorer.ready`), feeding windows of `window` positions (sequences of window + 1 tokens);
 * `windowKey` names the config key that sets the window in messages.
 */
export type OpenScorer = (dir: string, opts: { batchSize: number; window: number; windowKey: string }) => Promise<CheckpointScorer>;

/** One loglikelihood question: how likely is `continuation` right after `context`? */
export interface LoglikelihoodRequest {
  context: string;
  continuation: string;
  /** Names the request in error messages (e.g. `hellaswag item 12 choice 3`); the index is used otherwise. */
  id?: string;
}

export interface LoglikelihoodResult {
  /** Summed log-probability (natural log) of the continuation's tokens. */
  logprob: number;
  /** True when every continuation token is the model's argmax given what precedes it. */
  isGreedy: boolean;
  /** Tokens scored as the continuation (after the context/continuation split). */
  nTokens: number;
}

export interface RollingResult {
  /** Summed log-probability of every token of the text, the first conditioned on eos. */
  logprob: number;
  nTokens: number;
}

/** A multiple-choice item: each choice is scored as `delimiter + choice` after `context`. */
export interface MultipleChoiceItem {
  kind: 'multiple_choice';
  context: string;
  choices: string[];
  gold: number;
}

/**
 * Partial scoring (WinoGrande): the options differ in the context and share one continuation; the prediction is
 * the context under which the shared continuation is most likely.
 */
export interface PartialItem {
  kind: 'partial';
  contexts: string[];
  continuation: string;
  gold: number;
}

/** LAMBADA-style: predict `target` (which carries its own leading space) after `context`. */
export interface TargetItem {
  kind: 'target';
  context: string;
  target: string;
}

export type TaskItem = MultipleChoiceItem | PartialItem | TargetItem;

export type MetricName = 'acc' | 'acc_norm' | 'acc_bytes' | 'perplexity';

/** A task's declarative file (configs/tasks/*.yaml), as read and checked by tasks.ts. */
export interface TaskDefinition {
  name: string;
  /** Bumped whenever the items or their scoring change, so results of different versions are never compared. */
  version: number;
  /** A raw format (formats.ts) or a built-in generator (brown-tasks.ts). */
  format: string;
  kind: TaskItem['kind'];
  /** What the items are made from (informational). */
  source: string;
  /** Raw fields read (informational). */
  fields: string[];
  /** How the context is written (informational; the code is the format's parser). */
  prompt: string;
  /** Put between context and each choice (or target): the continuation scored is `delimiter + choice`. */
  delimiter: string;
  metrics: MetricName[];
  /** Generator parameters of built-in tasks (e.g. items, choices). */
  params: Record<string, number>;
  /** The YAML it was read from. */
  file: string;
}
