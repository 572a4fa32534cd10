import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import {
  CORPUS_SOURCES, KERNEL_CODE_FOLDERS, MAX_DOCUMENT_BYTES, documentText, hexLiteralShare, writeDocuments,
} from '../../src/data/debian-corpus';
import { loadDocuments } from '../../src/data/sources';

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

describe('documentText', () => {
  const bytes = (text: string) => Buffer.from(text, 'utf8');

  test('keeps text, drops a BOM and makes line ends "\\n"', () => {
    expect(documentText(bytes('\uFEFFline one\r\nline two\rthree\n'), 'prose')).toEqual({ text: 'line one\nline two\nthree\n' });
  });

  test('says why a file is left out', () => {
    expect(documentText(Buffer.from([0x66, 0x6f, 0xff, 0x6f]), 'prose')).toEqual({ skip: 'not UTF-8' });
    expect(documentText(bytes('ELF\u0000\u0001'), 'code')).toEqual({ skip: 'binary' });
    expect(documentText(bytes(' \n\t\n'), 'prose')).toEqual({ skip: 'empty' });
    expect(documentText(Buffer.alloc(MAX_DOCUMENT_BYTES + 1, 0x61), 'prose')).toEqual({ skip: 'too large' });
  });

  test('a code file made mostly of hex literals is a table; the same text as prose is kept', () => {
    const table = `static const u8 table[] = {\n${'\t0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,\n'.repeat(40)}};\n`;
    expect(hexLiteralShare(table)).toBeGreaterThan(1 / 3);
    expect(documentText(bytes(table), 'code')).toEqual({ skip: 'table' });
    expect(documentText(bytes(table), 'prose')).toEqual({ text: table });
    const code = 'static int add(int a, int b)\n{\n\treturn a + b + 0x10;\n}\n';
    expect(hexLiteralShare(code)).toBeCloseTo(4 / code.length, 12);
    expect(documentText(bytes(code), 'code')).toEqual({ text: code });
  });
});

describe('writeDocuments', () => {
  let work: string;
  let files: Record<string, Buffer>;
  /** Every source root exists, with a few files each: some kept, some left out, one compressed. */
  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-corpus-'));
    files = {};
    const put = (relative: string, content: string | Buffer) => {
      const file = path.join(work, relative);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      const data = typeof content === 'string' ? Buffer.from(content) : content;
      fs.writeFileSync(file, data);
      files[relative] = data;
    };
    for (const source of CORPUS_SOURCES) fs.mkdirSync(path.join(work, source.root), { recursive: true });
    const kernel = CORPUS_SOURCES.find((s) => s.name === 'kernel-code')!.root;
    for (const folder of KERNEL_CODE_FOLDERS) fs.mkdirSync(path.join(work, kernel, folder), { recursive: true });
    const docs = CORPUS_SOURCES.find((s) => s.name === 'kernel-docs')!.root;
    put(`${docs}/b/second.rst`, 'Second\n======\n\nMore prose.\n\n\nWith blank lines that the folder source would cut at.\n');
    put(`${docs}/a.txt`, 'First document.\n');
    put(`${docs}/image.svg`, '<svg/>');
    put(`${kernel}/kernel/fork.c`, 'int fork(void)\n{\n\treturn 0;\n}\n');
    put(`${kernel}/fs/nls/table.c`, `${'0xff, 0x00, 0x12, 0x34,\n'.repeat(100)}`);
    put(`${kernel}/lib/latin1.c`, Buffer.from([0x2f, 0x2a, 0xe9, 0x2a, 0x2f]));
    put(`${kernel}/drivers/ignored.c`, 'int not_taken;\n');
    const node = CORPUS_SOURCES.find((s) => s.name === 'node-docs')!.root;
    put(`${node}/fs.md.gz`, zlib.gzipSync('# File system\n\nThe `fs` module.\n'));
    const perl = CORPUS_SOURCES.find((s) => s.name === 'perl-pod')!.root;
    put(`${perl}/5.36.0/pod/perlintro.pod`, '=head1 NAME\n\nperlintro - a brief introduction\n');
  });
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  test('one JSONL line per kept file, in source then path order; every file hashed as shipped', () => {
    const out = path.join(work, 'out-all');
    const result = writeDocuments(work, out);
    const lines = fs.readFileSync(path.join(out, 'corpus.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.source)).toEqual([
      'kernel-docs:a.txt', 'kernel-docs:b/second.rst', 'perl-pod:5.36.0/pod/perlintro.pod', 'node-docs:fs.md.gz', 'kernel-code:kernel/fork.c',
    ]);
    expect(lines[3].text).toBe('# File system\n\nThe `fs` module.\n');
    expect(result.documents).toBe(5);
    expect(result.bySource['kernel-code']).toEqual({ documents: 1, bytes: Buffer.byteLength('int fork(void)\n{\n\treturn 0;\n}\n'), skipped: { table: 1, 'not UTF-8': 1 } });
    expect(result.countedTokens).toBeNull();

    const tsv = fs.readFileSync(path.join(out, 'documents.tsv'), 'utf8').trim().split('\n').map((l) => l.split('\t'));
    expect(tsv[0]).toEqual(['line', 'id', 'bytes', 'sha256']);
    const nodeFile = Object.keys(files).find((f) => f.endsWith('fs.md.gz'))!;
    // The compressed file as the package ships it, not its text.
    expect(tsv[4]).toEqual(['4', 'node-docs:fs.md.gz', String(Buffer.byteLength(lines[3].text)), sha256(files[nodeFile])]);

    // Read back through the JSONL source: one document per file, whole, however many blank lines it has.
    const { docs } = loadDocuments(path.join(out, 'corpus.jsonl'));
    expect(docs.map((d) => d.id)).toEqual(['1', '2', '3', '4', '5'].map((n) => `corpus.jsonl:${n}`));
    expect(docs[1].text).toBe(files[Object.keys(files).find((f) => f.endsWith('second.rst'))!].toString());
  });

  test('a token budget draws files in the order of their ids\' sha256 until it is reached, and writes them in source order', () => {
    const count = (text: string) => text.length;
    const everything = writeDocuments(work, path.join(work, 'out-ref'));
    const ids = fs.readFileSync(path.join(work, 'out-ref', 'documents.tsv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split('\t')[1]);
    const texts = fs.readFileSync(path.join(work, 'out-ref', 'corpus.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).text as string);
    expect(ids).toHaveLength(everything.documents);
    // The documented draw, done here by hand: shuffle by sha256(id), take until the budget is met.
    const budget = 60;
    const drawn: string[] = [];
    let total = 0;
    for (const id of [...ids].sort((a, b) => (sha256(a) < sha256(b) ? -1 : 1))) {
      if (total >= budget) break;
      drawn.push(id);
      total += count(texts[ids.indexOf(id)]);
    }
    expect(drawn.length).toBeLessThan(ids.length);

    const out = path.join(work, 'out-budget');
    const result = writeDocuments(work, out, { maxTokens: budget, countTokens: count });
    const written = fs.readFileSync(path.join(out, 'corpus.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).source as string);
    expect(written).toEqual(ids.filter((id) => drawn.includes(id)));
    expect(result.countedTokens).toBe(total);
    expect(result.countedTokens).toBeGreaterThanOrEqual(budget);
    // The same inputs give the same bytes.
    writeDocuments(work, path.join(work, 'out-budget-2'), { maxTokens: budget, countTokens: count });
    expect(fs.readFileSync(path.join(work, 'out-budget-2', 'corpus.jsonl')).equals(fs.readFileSync(path.join(out, 'corpus.jsonl')))).toBe(true);
  });

  test('a missing source folder is one line naming it', () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-corpus-empty-'));
    expect(() => writeDocuments(empty, path.join(empty, 'out'))).toThrow(`${path.join(empty, CORPUS_SOURCES[0].root)}: not found (was linux-source-6.1 unpacked into the work folder?)`);
    fs.rmSync(empty, { recursive: true, force: true });
  });
});
