import { UserError } from '../../src/errors';
import { splitDocuments, splitGroupedDocuments } from '../../src/data/split';

const ids = Array.from({ length: 100 }, (_, i) => `doc${String(i).padStart(3, '0')}`);

describe('splitDocuments', () => {
  it('is deterministic, sorted, disjoint and complete', () => {
    const a = splitDocuments(ids, 1, 0.1, 0.2);
    const b = splitDocuments([...ids].reverse(), 1, 0.1, 0.2);
    expect(b).toEqual(a);
    expect(a.val).toHaveLength(10);
    expect(a.test).toHaveLength(20);
    expect(a.train).toHaveLength(70);
    for (const list of [a.train, a.val, a.test]) expect(list).toEqual([...list].sort());
    const all = [...a.train, ...a.val, ...a.test];
    expect(new Set(all).size).toBe(100);
    expect([...all].sort()).toEqual(ids);
  });

  it('depends on the seed', () => {
    expect(splitDocuments(ids, 1, 0.1, 0.1).val).not.toEqual(splitDocuments(ids, 2, 0.1, 0.1).val);
  });

  it('puts every stratum in every split when it can, and keeps one document in train', () => {
    // Strata of 3 (tiny), 10 and 2 documents.
    const strataIds = ['a1', 'a2', 'a3', ...Array.from({ length: 10 }, (_, i) => `b${i}`), 'c1', 'c2'];
    const strata = strataIds.map((id) => id[0]);
    const split = splitDocuments(strataIds, 5, 0.05, 0.05, strata);
    const stratumOf = (list: string[]) => new Set(list.map((id) => id[0]));
    expect(stratumOf(split.train)).toEqual(new Set(['a', 'b', 'c']));
    expect(stratumOf(split.val)).toEqual(new Set(['a', 'b', 'c']));
    // The 2-document stratum c can only spare one document, which goes to val.
    expect(stratumOf(split.test)).toEqual(new Set(['a', 'b']));
    expect(split.val.filter((id) => id[0] === 'b')).toHaveLength(1);
  });

  it('gives zero held-out documents for zero fractions', () => {
    const split = splitDocuments(ids, 1, 0, 0);
    expect(split.val).toEqual([]);
    expect(split.test).toEqual([]);
    expect(split.train).toEqual(ids);
  });

  it('keeps a stratum unaffected by the other strata', () => {
    const genreA = ['a1', 'a2', 'a3', 'a4', 'a5', 'a6', 'a7', 'a8'];
    const withB = splitDocuments([...genreA, 'b1', 'b2', 'b3'], 9, 0.25, 0.25, [...genreA.map(() => 'a'), 'b', 'b', 'b']);
    const alone = splitDocuments(genreA, 9, 0.25, 0.25, genreA.map(() => 'a'));
    expect(withB.val.filter((id) => id[0] === 'a')).toEqual(alone.val);
    expect(withB.test.filter((id) => id[0] === 'a')).toEqual(alone.test);
  });

  it('stratifies by group only when every document has one', () => {
    const docs = ids.slice(0, 20).map((id, i) => ({ id, group: i < 10 ? 'x' : 'y' }));
    expect(splitGroupedDocuments(docs, 3, 0.2, 0.2)).toEqual(splitDocuments(docs.map((d) => d.id), 3, 0.2, 0.2, docs.map((d) => d.group)));
    const ungrouped = docs.map(({ id }, i) => (i === 0 ? { id } : { id, group: 'x' }));
    expect(splitGroupedDocuments(ungrouped, 3, 0.2, 0.2)).toEqual(splitDocuments(docs.map((d) => d.id), 3, 0.2, 0.2));
  });

  it('rejects bad fractions with a UserError naming the key', () => {
    expect(() => splitDocuments(ids, 1, -0.1, 0.1)).toThrow(UserError);
    expect(() => splitDocuments(ids, 1, -0.1, 0.1)).toThrow(/data\.val_fraction/);
    expect(() => splitDocuments(ids, 1, 0.1, 1)).toThrow(/data\.test_fraction/);
    expect(() => splitDocuments(ids, 1, 0.5, 0.5)).toThrow(/below 1/);
    expect(() => splitDocuments(['a', 'a'], 1, 0.1, 0.1)).toThrow(/unique/);
  });
});
