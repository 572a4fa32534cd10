// Fakes for the eval tests: a tokenizer whose merges can span a context/continuation join, and models whose
// log-probabilities are given by a table, so every expected score is computable by hand.

import type { Tokenizer } from '../../src/data/tokenizer';
import type { ScoringModel, TokenScores } from '../../src/eval/types';

/**
 * Greedy longest-match tokenizer over an explicit vocabulary (ids = positions; eos = vocabulary size). With
 * multi-character pieces such as "o w" it behaves like BPE at word joins: "hello" ends in "o", but
 * "hello world" is cut "he" "ll" "o w" "or" "ld".
 */
export function pieceTokenizer(pieces: string[]): Tokenizer {
  const byLength = [...pieces].sort((a, b) => b.length - a.length);
  const eos = pieces.length;
  return {
    name: 'byte',
    vocabSize: pieces.length + 1,
    eos,
    encode(text: string): number[] {
      const ids: number[] = [];
      for (let at = 0; at < text.length; ) {
        const piece = byLength.find((p) => text.startsWith(p, at));
        if (!piece) throw new Error(`pieceTokenizer: no piece for ${JSON.stringify(text.slice(at))}`);
        ids.push(pieces.indexOf(piece));
        at += piece.length;
      }
      return ids;
    },
    decode: (ids) => ids.filter((id) => id !== eos).map((id) => pieces[id]).join(''),
    hash: 'test',
  };
}

export const EOS_PIECE = '<eos>';

/** The piece of an id, `<eos>` for eos. */
export function pieceOf(tokenizer: Tokenizer, id: number): string {
  return id === tokenizer.eos ? EOS_PIECE : tokenizer.decode([id]);
}

/** p(next | prev) over pieces (prev is `<eos>` at a sequence start after eos). */
export type BigramProb = (prev: string, next: string) => number;

/** Scores of whole sequences cut to each one's positions from `from[i]` on, as `scoreSequences` answers. */
export function fromPositions(scores: TokenScores[], from?: number[]): TokenScores[] {
  return scores.map((s, i) => ({ logprobs: s.logprobs.slice(from?.[i] ?? 0), greedy: s.greedy.slice(from?.[i] ?? 0) }));
}

export interface RecordingModel extends ScoringModel {
  /** Every batch passed to scoreSequences, in call order. */
  batches: number[][][];
}

/**
 * A bigram model: log p(seq[i+1] | seq[..i]) = log prob(seq[i], seq[i+1]); greedy when seq[i+1] has the largest
 * probability among all non-eos pieces after seq[i] (first one on ties).
 */
export function bigramModel(tokenizer: Tokenizer, prob: BigramProb, maxSeqLen = 64): RecordingModel {
  const vocabulary = Array.from({ length: tokenizer.vocabSize - 1 }, (_, id) => id);
  const batches: number[][][] = [];
  return {
    tokenizer,
    maxSeqLen,
    batches,
    async scoreSequences(seqs: number[][], from?: number[]): Promise<TokenScores[]> {
      batches.push(seqs.map((s) => [...s]));
      const whole = seqs.map((seq) => {
        if (seq.length < 2 || seq.length > maxSeqLen) throw new Error(`sequence of length ${seq.length} outside 2..${maxSeqLen}`);
        const logprobs = new Float64Array(seq.length - 1);
        const greedy = new Uint8Array(seq.length - 1);
        for (let i = 0; i + 1 < seq.length; i++) {
          const prev = pieceOf(tokenizer, seq[i]);
          logprobs[i] = Math.log(prob(prev, pieceOf(tokenizer, seq[i + 1])));
          let best = vocabulary[0];
          for (const id of vocabulary) if (prob(prev, pieceOf(tokenizer, id)) > prob(prev, pieceOf(tokenizer, best))) best = id;
          greedy[i] = best === seq[i + 1] ? 1 : 0;
        }
        return { logprobs, greedy };
      });
      return fromPositions(whole, from);
    },
  };
}

/** A unigram model: the context is ignored; p is given per piece. */
export function unigramModel(tokenizer: Tokenizer, p: Record<string, number>, maxSeqLen = 64): RecordingModel {
  return bigramModel(tokenizer, (_prev, next) => p[next] ?? 0, maxSeqLen);
}

/**
 * A model whose score of each token is minus the number of tokens it is conditioned on (its position in the
 * fed sequence), so a sum of scores tells how much context every token had.
 */
export function contextLengthModel(tokenizer: Tokenizer, maxSeqLen: number): RecordingModel {
  const batches: number[][][] = [];
  return {
    tokenizer,
    maxSeqLen,
    batches,
    async scoreSequences(seqs, from) {
      batches.push(seqs.map((s) => [...s]));
      const whole = seqs.map((seq) => {
        if (seq.length < 2 || seq.length > maxSeqLen) throw new Error(`sequence of length ${seq.length} outside 2..${maxSeqLen}`);
        const logprobs = Float64Array.from({ length: seq.length - 1 }, (_, i) => -(i + 1));
        return { logprobs, greedy: new Uint8Array(seq.length - 1) };
      });
      return fromPositions(whole, from);
    },
  };
}

/** A model whose every log-probability is `value` (NaN or an infinity: what corrupt weights give), from `source`. */
export function constantModel(tokenizer: Tokenizer, value: number, source?: string, maxSeqLen = 64): RecordingModel {
  const batches: number[][][] = [];
  return {
    tokenizer,
    maxSeqLen,
    source,
    batches,
    async scoreSequences(seqs, from) {
      batches.push(seqs.map((s) => [...s]));
      return fromPositions(seqs.map((seq) => ({ logprobs: new Float64Array(seq.length - 1).fill(value), greedy: new Uint8Array(seq.length - 1) })), from);
    },
  };
}

/** Every distinct character of `texts` as a one-character piece. */
export function characterPieces(...texts: string[]): string[] {
  return [...new Set(texts.join(''))].sort();
}
