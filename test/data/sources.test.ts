import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { UserError } from '../../src/errors';
import { cutAtParagraphs, fileLines, hashDocumentTexts, loadDocuments } from '../../src/data/sources';

describe('loadDocuments', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-sources-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const write = (name: string, contents: string): string => {
    const file = path.join(dir, name);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, contents);
    return file;
  };

  it('loads Brown with the genre as group', () => {
    const { docs, hash } = loadDocuments('brown');
    expect(docs).toHaveLength(500);
    expect(docs[0]).toMatchObject({ id: 'ca01', group: 'a' });
    expect(new Set(docs.map((d) => d.group)).size).toBe(15);
    expect(hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it('reads a short .txt file as one document', () => {
    const file = write('short.txt', '\uFEFFFirst paragraph.\r\n\r\nSecond paragraph.\r\n');
    expect(loadDocuments(file).docs).toEqual([{ id: 'short.txt', text: 'First paragraph.\n\nSecond paragraph.', group: undefined }]);
  });

  it('cuts a long .txt file at paragraph breaks into documents of at least the chunk size', () => {
    const paragraph = 'x'.repeat(3000);
    // Six paragraphs of 3000 characters: cuts happen once a piece reaches 8192, i.e. after 3 paragraphs.
    const file = write('long.txt', Array(6).fill(paragraph).join('\n\n  \n'));
    const { docs } = loadDocuments(file);
    expect(docs.map((d) => d.id)).toEqual(['long.txt#0000', 'long.txt#0001']);
    expect(docs[0].text).toBe([paragraph, paragraph, paragraph].join('\n\n  \n'));
    expect(cutAtParagraphs('a\n\nb\n\nc', 1)).toEqual(['a', 'b', 'c']);
    expect(cutAtParagraphs('a\n\nb\n\nc', 4)).toEqual(['a\n\nb', 'c']);
  });

  it('reads every .txt file of a folder recursively in sorted order, grouped by first-level subfolder', () => {
    const folder = path.join(dir, 'corpus');
    write('corpus/b.txt', 'bee');
    write('corpus/a.txt', 'ay');
    write('corpus/sub/e.txt', 'e');
    write('corpus/sub/deeper/d.txt', 'dee');
    write('corpus/notes.md', 'ignored');
    write('corpus/empty.txt', '  \n\n ');
    const { docs } = loadDocuments(folder);
    expect(docs).toEqual([
      { id: 'a.txt', text: 'ay', group: '.' },
      { id: 'b.txt', text: 'bee', group: '.' },
      { id: 'sub/deeper/d.txt', text: 'dee', group: 'sub' },
      { id: 'sub/e.txt', text: 'e', group: 'sub' },
    ]);
    const flat = path.join(dir, 'flat');
    write('flat/one.txt', 'one');
    expect(loadDocuments(flat).docs).toEqual([{ id: 'one.txt', text: 'one', group: undefined }]);
  });

  it('reads .jsonl records and skips blank lines', () => {
    const file = write('docs.jsonl', '{"text": "one"}\n\n{"text": "two", "extra": 1}\n');
    expect(loadDocuments(file).docs).toEqual([
      { id: 'docs.jsonl:1', text: 'one' },
      { id: 'docs.jsonl:3', text: 'two' },
    ]);
  });

  it('reads lines across read-chunk boundaries as text.split would, multi-byte characters included', () => {
    // "é" and "€" are 2 and 3 UTF-8 bytes: with 4-byte chunks every character and line straddles a boundary somewhere.
    const text = 'é€a\n\nbb€é\n{"text": "ça"}\r\nlast-without-newline';
    const file = write('lines.txt', text);
    for (const chunk of [1, 2, 3, 4, 5, 7, 64]) expect([...fileLines(file, chunk)]).toEqual(text.split('\n'));
    expect([...fileLines(write('empty.txt', ''))]).toEqual(['']);
  });

  it('names the file and line of bad JSONL', () => {
    const badJson = write('bad.jsonl', '{"text": "ok"}\n{"text": oops}\n');
    expect(() => loadDocuments(badJson)).toThrow(UserError);
    expect(() => loadDocuments(badJson)).toThrow(new RegExp(`${escape(badJson)} line 2: invalid JSON`));
    const missingText = write('missing.jsonl', '{"text": "ok"}\n{"text": "ok"}\n{"body": "no"}\n');
    expect(() => loadDocuments(missingText)).toThrow(new RegExp(`${escape(missingText)} line 3: .*"text"`));
    const numberText = write('number.jsonl', '{"text": 5}\n');
    expect(() => loadDocuments(numberText)).toThrow(new RegExp(`${escape(numberText)} line 1`));
    const notObject = write('array.jsonl', '["text"]\n');
    expect(() => loadDocuments(notObject)).toThrow(/line 1/);
  });

  it('names a missing file', () => {
    const missing = path.join(dir, 'nope.txt');
    expect(() => loadDocuments(missing)).toThrow(UserError);
    expect(() => loadDocuments(missing)).toThrow(`data.source: file not found: ${missing}`);
  });

  it('rejects an empty corpus', () => {
    expect(() => loadDocuments(write('blank.txt', ' \n\n\t\n'))).toThrow(/no text/);
    expect(() => loadDocuments(write('blank.jsonl', '{"text": "  "}\n\n'))).toThrow(/no text/);
    fs.mkdirSync(path.join(dir, 'nothing'));
    expect(() => loadDocuments(path.join(dir, 'nothing'))).toThrow(/no \.txt files/);
  });

  it('rejects unsupported file types', () => {
    expect(() => loadDocuments(write('data.csv', 'a,b'))).toThrow(/unsupported file type/);
  });

  it('hashes the document texts with length prefixes', () => {
    const file = write('hash.jsonl', '{"text": "ab"}\n{"text": "c"}\n');
    const expected = createHash('sha256').update('2:ab1:c').digest('hex');
    expect(loadDocuments(file).hash).toBe(expected);
    expect(hashDocumentTexts([{ id: 'x', text: 'a' }, { id: 'y', text: 'bc' }])).not.toBe(expected);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
