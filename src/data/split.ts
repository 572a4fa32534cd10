// Train/validation/test split by whole documents, so no text of a held-out document is ever trained on.

import { UserError } from '../errors';
import { hashString, Rng } from './rng';

export interface DocumentSplit {
  /** Document ids per split, each sorted. */
  train: string[];
  val: string[];
  test: string[];
}

export const SPLIT_NAMES = ['train', 'val', 'test'] as const;
export type SplitName = (typeof SPLIT_NAMES)[number];

function checkFraction(key: string, value: number): void {
  if (!Number.isFinite(value) || value < 0 || value >= 1) throw new UserError(`${key}: must be in [0, 1), got ${value}`);
}

/**
 * How many of a stratum's n documents go to val and test. A positive fraction always gets at least one document
 * when the stratum can spare it, so every genre is represented in every split; train always keeps one. When a
 * tiny stratum cannot feed both held-out splits, val (used during training) wins over test.
 */
function heldOutCounts(n: number, valFraction: number, testFraction: number): { nVal: number; nTest: number } {
  let nVal = Math.round(n * valFraction);
  let nTest = Math.round(n * testFraction);
  if (valFraction > 0 && nVal === 0) nVal = 1;
  if (testFraction > 0 && nTest === 0) nTest = 1;
  while (nVal + nTest > Math.max(0, n - 1)) {
    if (nTest >= nVal && nTest > 0) nTest--;
    else nVal--;
  }
  return { nVal, nTest };
}

/**
 * Deterministic split of document ids: a pure function of (ids as a set, strata, seed, fractions). With `strata`
 * (one label per id, e.g. the Brown genre) each stratum is split on its own with its own seeded stream, so a
 * genre's assignment does not depend on the other genres. Fractions are rounded per stratum.
 */
export function splitDocuments(
  ids: readonly string[],
  seed: number,
  valFraction: number,
  testFraction: number,
  strata?: readonly string[],
): DocumentSplit {
  checkFraction('data.val_fraction', valFraction);
  checkFraction('data.test_fraction', testFraction);
  if (valFraction + testFraction >= 1) {
    throw new UserError(`data.val_fraction + data.test_fraction must be below 1, got ${valFraction} + ${testFraction}`);
  }
  if (strata && strata.length !== ids.length) throw new Error(`splitDocuments: ${strata.length} strata for ${ids.length} ids`);
  if (new Set(ids).size !== ids.length) throw new Error('splitDocuments: document ids must be unique');

  const members = new Map<string, string[]>();
  ids.forEach((id, index) => {
    const stratum = strata ? strata[index] : '';
    const list = members.get(stratum);
    if (list) list.push(id);
    else members.set(stratum, [id]);
  });

  const split: DocumentSplit = { train: [], val: [], test: [] };
  for (const [stratum, stratumIds] of members) {
    // Sorting first makes the result independent of the order the ids were listed in.
    const shuffled = Rng.fromSeed(seed, hashString(stratum)).shuffle([...stratumIds].sort());
    const { nVal, nTest } = heldOutCounts(shuffled.length, valFraction, testFraction);
    split.test.push(...shuffled.slice(0, nTest));
    split.val.push(...shuffled.slice(nTest, nTest + nVal));
    split.train.push(...shuffled.slice(nTest + nVal));
  }
  for (const name of SPLIT_NAMES) split[name].sort();
  return split;
}

/** Split source documents, stratified by `group` when every document has one (e.g. Brown genres). */
export function splitGroupedDocuments(
  docs: readonly { id: string; group?: string }[],
  seed: number,
  valFraction: number,
  testFraction: number,
): DocumentSplit {
  const grouped = docs.length > 0 && docs.every((doc) => doc.group !== undefined);
  return splitDocuments(
    docs.map((doc) => doc.id),
    seed,
    valFraction,
    testFraction,
    grouped ? docs.map((doc) => doc.group as string) : undefined,
  );
}
