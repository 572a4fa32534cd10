import { BROWN_GENRES, detokenize, loadBrown, parseBrownFile } from '../../src/data/brown';

describe('Brown corpus', () => {
  // Parsed once for the whole file (loadBrown caches in-process).
  const docs = loadBrown();

  it('has 500 documents in 15 genres with the published genre sizes', () => {
    expect(docs).toHaveLength(500);
    const perGenre: Record<string, number> = {};
    for (const doc of docs) perGenre[doc.genre] = (perGenre[doc.genre] ?? 0) + 1;
    // Francis & Kucera's sample sizes per genre.
    expect(perGenre).toEqual({ a: 44, b: 27, c: 17, d: 17, e: 36, f: 48, g: 75, h: 30, j: 80, k: 29, l: 24, m: 6, n: 29, p: 29, r: 9 });
    expect(Object.keys(BROWN_GENRES)).toHaveLength(15);
    expect(docs[0]).toMatchObject({ id: 'ca01', genre: 'a', genreName: 'PRESS: REPORTAGE' });
    expect(docs[499].id).toBe('cr09');
    expect(docs[499].genreName).toBe('HUMOR');
  });

  it('caches the parse', () => {
    expect(loadBrown()).toBe(docs);
  });

  it('detokenizes the first sentence of ca01 into plain prose', () => {
    expect(docs[0].text.startsWith(
      'The Fulton County Grand Jury said Friday an investigation of Atlanta\'s recent primary election produced "no evidence" that any irregularities took place.\n\nThe jury further said',
    )).toBe(true);
  });

  it('joins the sentences of a paragraph with spaces (cn01)', () => {
    const cn01 = docs.find((doc) => doc.id === 'cn01')!;
    expect(cn01.text.startsWith(
      "Dan Morgan told himself he would forget Ann Turner. He was well rid of her. He certainly didn't want a wife who was fickle as Ann. If he had married her, he'd have been asking for trouble.\n\nBut all of this was rationalization.",
    )).toBe(true);
  });

  it('keeps one sentence per corpus line with its tags', () => {
    // ca01 has 98 non-blank lines.
    expect(docs[0].sentences).toHaveLength(98);
    expect(docs[0].sentences[0].slice(0, 3)).toEqual([
      { word: 'The', tag: 'at' },
      { word: 'Fulton', tag: 'np-tl' },
      { word: 'County', tag: 'nn-tl' },
    ]);
    expect(docs[0].sentences[0][docs[0].sentences[0].length - 1]).toEqual({ word: '.', tag: '.' });
  });

  it('leaves no tag remnants or corpus quote marks in any text', () => {
    for (const doc of docs) {
      // Any `word/tag` of the document surviving into the text (with trailing punctuation, at most) is a remnant.
      const rawTokens = new Set(doc.sentences.flat().map((token) => `${token.word}/${token.tag}`));
      const remnants = doc.text.split(/\s+/).filter((piece) => rawTokens.has(piece) || rawTokens.has(piece.replace(/[,.;:?!)"]+$/, '')));
      expect(remnants).toEqual([]);
      // '' inside a word is an inch mark (12''); only the standalone quote tokens must be gone.
      expect(doc.text).not.toMatch(/(^|\s)(``|'')(\s|$)/);
      expect(doc.text).not.toMatch(/ [,.;:?!)](\s|$)/);
    }
  });
});

describe('detokenize', () => {
  it('attaches punctuation and converts corpus quotes', () => {
    expect(detokenize([['He', 'said', ',', '``', 'Hi', '(', 'twice', ')', "''", '.']])).toBe('He said, "Hi (twice)".');
    expect(detokenize([['Why', '?', 'No', '!', 'a', ';', 'b', ':', 'c']])).toBe('Why? No! a; b: c');
  });

  it('alternates lone single quotes between opening and closing', () => {
    expect(detokenize([['the', "'", 'Met', "'", 'opera']])).toBe("the 'Met' opera");
    expect(detokenize([['he', 'said', ':', "'", 'Go', '.'], ['Now', "'", '.']])).toBe("he said: 'Go. Now'.");
  });

  it('prints one period after an abbreviation that ends the sentence', () => {
    expect(detokenize([['Ivan', 'Allen', 'Jr.', '.']])).toBe('Ivan Allen Jr.');
    expect(detokenize([['so', '.']])).toBe('so.');
  });

  it('joins sentences with a space, a newline after a headline, and none before a closing parenthesis', () => {
    expect(detokenize([['Big', 'news'], ['(', 'It', 'rained', '.'], [')', 'Then', 'sun', '.']], [true, false, false])).toBe(
      'Big news\n(It rained.) Then sun.',
    );
  });
});

describe('parseBrownFile', () => {
  it('splits paragraphs on blank lines, sentences on lines, and puts headlines on their own line', () => {
    const raw = '\n\n\tA/at dog/nn ./.\nIt/pps ran/vbd ./.\n\n\n\tBig/jj-hl news/nn-hl \nWe/ppss won/vbd !/.\n\n';
    const doc = parseBrownFile('cr99', raw);
    expect(doc.genre).toBe('r');
    expect(doc.sentences.map((s) => s.map((t) => t.word).join(' '))).toEqual(['A dog .', 'It ran .', 'Big news', 'We won !']);
    expect(doc.text).toBe('A dog. It ran.\n\nBig news\nWe won!');
  });

  it('rejects a token without a tag', () => {
    expect(() => parseBrownFile('ca99', '\tword/nn broken\n')).toThrow(/ca99.*broken/);
  });
});
