import { UserError } from '../../src/errors';
import { byteTokenizer, getTokenizer, gpt2Tokenizer } from '../../src/data/tokenizer';

describe('byte tokenizer', () => {
  const tokenizer = byteTokenizer();

  it('encodes UTF-8 bytes and reserves eos and pad', () => {
    expect(tokenizer).toMatchObject({ name: 'byte', vocabSize: 258, eos: 256 });
    expect(tokenizer.encode('Hi!')).toEqual([72, 105, 33]);
    // é is U+00E9 = C3 A9 in UTF-8; € is U+20AC = E2 82 AC.
    expect(tokenizer.encode('é€')).toEqual([0xc3, 0xa9, 0xe2, 0x82, 0xac]);
  });

  it('round-trips non-ASCII text and drops special ids when decoding', () => {
    const text = 'naïve café — 日本語 😀\n';
    expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
    expect(tokenizer.decode([104, 256, 105, 257])).toBe('hi');
    expect(() => tokenizer.decode([258])).toThrow();
  });

  it('has a stable 64-hex hash distinct from gpt2', () => {
    expect(tokenizer.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(byteTokenizer().hash).toBe(tokenizer.hash);
    expect(getTokenizer('gpt2').hash).not.toBe(tokenizer.hash);
  });
});

describe('gpt2 tokenizer', () => {
  const tokenizer = gpt2Tokenizer();

  it('reproduces known GPT-2 encodings', () => {
    expect(tokenizer).toMatchObject({ name: 'gpt2', vocabSize: 50257, eos: 50256 });
    expect(tokenizer.encode('Hello world')).toEqual([15496, 995]);
    expect(tokenizer.encode('Hello, world!')).toEqual([15496, 11, 995, 0]);
    expect(tokenizer.encode(' the')).toEqual([262]);
  });

  it('treats a literal <|endoftext|> in the text as plain characters', () => {
    // < | end of text | >, as tiktoken gives with special tokens disallowed.
    expect(tokenizer.encode('<|endoftext|>')).toEqual([27, 91, 437, 1659, 5239, 91, 29]);
  });

  it('round-trips text and drops eos when decoding', () => {
    const text = 'Naïve café: 3.14 — "quoted" 日本\n\nnext paragraph';
    expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
    expect(tokenizer.decode([15496, 50256, 995])).toBe('Hello world');
    expect(tokenizer.hash).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('getTokenizer', () => {
  it('returns cached instances and rejects unknown names naming the key', () => {
    expect(getTokenizer('byte')).toBe(getTokenizer('byte'));
    expect(() => getTokenizer('sentencepiece')).toThrow(UserError);
    expect(() => getTokenizer('sentencepiece')).toThrow(/data\.tokenizer/);
  });
});
