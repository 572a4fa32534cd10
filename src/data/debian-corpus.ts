// A corpus of over 100M GPT-2 tokens built from text Debian packages ship (scripts/build-corpus.sh; docs/corpus.md):
// the Linux kernel's documentation and C sources, and the manuals of Python, Perl, Git and Node.js. This module
// holds what the build decides (which packages, which files, which files are left out and why) and writes the
// JSONL source that `mlactl data prepare` tokenizes: one line per source file, so one file is one document and
// the train/validation/test split never puts two halves of a file on different sides.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { UserError } from '../errors';
import { MANIFEST_FILE, readManifest as readShardManifest, verifyShards } from './shards';
import type { SplitName } from './split';

export interface CorpusPackage {
  name: string;
  /** The version the build was made and measured with; `--latest` takes apt's candidate instead. */
  version: string;
  /** The licence in brief, from the package's debian/copyright (the full terms ship in the package). */
  licence: string;
}

/** Debian 12 (bookworm) main: every package is DFSG-free, so the corpus may be shared under the same terms. */
export const CORPUS_PACKAGES: readonly CorpusPackage[] = [
  { name: 'linux-source-6.1', version: '6.1.192-3', licence: 'GPL-2.0 (the kernel; some files GPL-2.0+, LGPL-2.1, BSD or MIT, and some documentation CC-BY-4.0, per SPDX header)' },
  { name: 'python3.11-doc', version: '3.11.2-6+deb12u9', licence: 'PSF-2.0 (Python documentation)' },
  { name: 'perl-doc', version: '5.36.0-7+deb12u4', licence: 'GPL-1.0+ or Artistic-1.0 (the terms of Perl)' },
  { name: 'git-doc', version: '1:2.39.5-0+deb12u3', licence: 'GPL-2.0' },
  { name: 'nodejs-doc', version: '18.20.4+dfsg-1~deb12u3', licence: 'MIT (Expat)' },
  { name: 'debian-reference-en', version: '2.100', licence: 'GPL-2.0+' },
];

/** The kernel's package, its tarball inside the package, and the folder the tarball unpacks to. */
export const KERNEL_PACKAGE = 'linux-source-6.1';
export const KERNEL_TARBALL = 'usr/src/linux-source-6.1.tar.xz';
export const KERNEL_TOP = 'linux-source-6.1';

/**
 * Kernel folders whose C files are taken: the core, file systems, networking, headers, sound and architectures.
 * drivers/ (900 MB, much of it generated register tables) and tools/ are left out; these already give the budget.
 */
export const KERNEL_CODE_FOLDERS: readonly string[] = [
  'arch', 'block', 'crypto', 'fs', 'include', 'init', 'io_uring', 'ipc', 'kernel', 'lib', 'mm', 'net', 'security', 'sound', 'virt',
];

export interface CorpusSource {
  /** Prefix of the documents' ids (`kernel-docs:admin-guide/README.rst`). */
  name: string;
  package: string;
  kind: 'prose' | 'code';
  /** Where the files are, relative to the build's work folder. */
  root: string;
  /** Sub-folders of root walked (all of root when absent). */
  folders?: readonly string[];
  /** File name endings taken; a `.gz` ending is decompressed. */
  suffixes: readonly string[];
}

/** Where scripts/build-corpus.sh unpacks each package (`pkg/<name>/`) and the kernel tarball (`kernel/`). */
export const packageRoot = (name: string, inside: string): string => path.posix.join('pkg', name, inside);

export const CORPUS_SOURCES: readonly CorpusSource[] = [
  { name: 'kernel-docs', package: 'linux-source-6.1', kind: 'prose', root: `kernel/${KERNEL_TOP}/Documentation`, suffixes: ['.rst', '.txt'] },
  { name: 'python-docs', package: 'python3.11-doc', kind: 'prose', root: packageRoot('python3.11-doc', 'usr/share/doc/python3.11/html/_sources'), suffixes: ['.rst.txt'] },
  { name: 'perl-pod', package: 'perl-doc', kind: 'prose', root: packageRoot('perl-doc', 'usr/share/perl'), suffixes: ['.pod'] },
  { name: 'git-docs', package: 'git-doc', kind: 'prose', root: packageRoot('git-doc', 'usr/share/doc/git-doc'), suffixes: ['.txt'] },
  { name: 'node-docs', package: 'nodejs-doc', kind: 'prose', root: packageRoot('nodejs-doc', 'usr/share/doc/nodejs/api'), suffixes: ['.md', '.md.gz'] },
  { name: 'debian-reference', package: 'debian-reference-en', kind: 'prose', root: packageRoot('debian-reference-en', 'usr/share/debian-reference'), suffixes: ['.en.txt.gz'] },
  { name: 'kernel-code', package: 'linux-source-6.1', kind: 'code', root: `kernel/${KERNEL_TOP}`, folders: KERNEL_CODE_FOLDERS, suffixes: ['.c', '.h'] },
];

/** A file above this size is data, not a document (the largest C file kept is ~0.6 MB). */
export const MAX_DOCUMENT_BYTES = 2 * 1024 * 1024;
/**
 * A code file in which hexadecimal literals make up more than this share of the characters is a table (code pages,
 * crypto test vectors, firmware blobs, register maps): tokens that teach a model nothing about language or code.
 */
export const MAX_HEX_SHARE = 1 / 3;

export type SkipReason = 'not UTF-8' | 'binary' | 'empty' | 'table' | 'too large';

export function hexLiteralShare(text: string): number {
  if (text.length === 0) return 0;
  let hexChars = 0;
  for (const match of text.matchAll(/0[xX][0-9a-fA-F]+/g)) hexChars += match[0].length;
  return hexChars / text.length;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** A file's text as a document (BOM dropped, line ends made "\n", as the .txt source does), or why it is left out. */
export function documentText(bytes: Uint8Array, kind: CorpusSource['kind']): { text: string } | { skip: SkipReason } {
  if (bytes.length > MAX_DOCUMENT_BYTES) return { skip: 'too large' };
  let text: string;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    return { skip: 'not UTF-8' };
  }
  if (text.includes('\u0000')) return { skip: 'binary' };
  text = text.replace(/^\uFEFF/, '').replace(/\r\n?/g, '\n');
  if (text.trim().length === 0) return { skip: 'empty' };
  if (kind === 'code' && hexLiteralShare(text) > MAX_HEX_SHARE) return { skip: 'table' };
  return { text };
}

/** Relative paths (POSIX, sorted by code unit so every machine orders them alike) of a source's files. */
export function listSourceFiles(workDir: string, source: CorpusSource): string[] {
  const root = path.join(workDir, source.root);
  if (!fs.existsSync(root)) throw new UserError(`${root}: not found (was ${source.package} unpacked into the work folder?)`);
  const found: string[] = [];
  const walk = (relative: string): void => {
    for (const entry of fs.readdirSync(path.join(root, relative), { withFileTypes: true })) {
      const child = relative ? `${relative}/${entry.name}` : entry.name;
      // Symbolic links are skipped: in the kernel tree they point at files that are taken where they live.
      if (entry.isDirectory()) walk(child);
      else if (entry.isFile() && source.suffixes.some((suffix) => entry.name.endsWith(suffix))) found.push(child);
    }
  };
  for (const folder of source.folders ?? ['']) {
    if (folder && !fs.existsSync(path.join(root, folder))) throw new UserError(`${path.join(root, folder)}: not found (the kernel folders are unpacked by scripts/build-corpus.sh)`);
    walk(folder);
  }
  return found.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

export interface CandidateFile {
  source: CorpusSource;
  relative: string;
  /** `<source name>:<relative path>`, the document's name in documents.tsv and corpus.jsonl. */
  id: string;
}

export function candidateFiles(workDir: string, sources: readonly CorpusSource[] = CORPUS_SOURCES): CandidateFile[] {
  return sources.flatMap((source) => listSourceFiles(workDir, source).map((relative) => ({ source, relative, id: `${source.name}:${relative}` })));
}

/** The file as the package ships it (hashed into documents.tsv) and its content (decompressed when `.gz`). */
function readSourceFile(workDir: string, file: CandidateFile): { shipped: Buffer; content: Buffer } {
  const shipped = fs.readFileSync(path.join(workDir, file.source.root, file.relative));
  return { shipped, content: file.relative.endsWith('.gz') ? zlib.gunzipSync(shipped) : shipped };
}

const sha256 = (data: string | Uint8Array): string => createHash('sha256').update(data).digest('hex');

export interface SourceTally {
  documents: number;
  bytes: number;
  skipped: Partial<Record<SkipReason, number>>;
}

export interface DocumentsResult {
  documents: number;
  /** UTF-8 bytes of the documents' texts. */
  bytes: number;
  bySource: Record<string, SourceTally>;
  /** With a token budget: the GPT-2 tokens of the documents taken, each followed by its end-of-text token. */
  countedTokens: number | null;
}

export interface WriteDocumentsOptions {
  /** Stop once the documents taken reach this many tokens (counted with `countTokens`); all of them when absent. */
  maxTokens?: number;
  countTokens?: (text: string) => number;
}

/**
 * Write `corpus.jsonl` (one `{"source", "text"}` line per kept file) and `documents.tsv` (line number, id, bytes,
 * sha256 of the file as shipped). Files are written in source order, then path order. With a token budget, files
 * are drawn in the order of the sha256 of their ids, a fixed shuffle, so a small corpus mixes every source the
 * way the full one does; the draw stops at the first file that brings the total to the budget.
 */
export function writeDocuments(workDir: string, outDir: string, options: WriteDocumentsOptions = {}): DocumentsResult {
  const candidates = candidateFiles(workDir);
  const bySource: Record<string, SourceTally> = {};
  for (const source of CORPUS_SOURCES) bySource[source.name] = { documents: 0, bytes: 0, skipped: {} };
  const kept = new Map<CandidateFile, { text: string; shippedSha256: string }>();
  const consider = (file: CandidateFile): { text: string; shippedSha256: string } | null => {
    const { shipped, content } = readSourceFile(workDir, file);
    const result = documentText(content, file.source.kind);
    if ('skip' in result) {
      const tally = bySource[file.source.name].skipped;
      tally[result.skip] = (tally[result.skip] ?? 0) + 1;
      return null;
    }
    return { text: result.text, shippedSha256: sha256(shipped) };
  };

  let countedTokens: number | null = null;
  let taken: CandidateFile[];
  if (options.maxTokens === undefined) {
    taken = candidates;
  } else {
    if (!options.countTokens) throw new Error('writeDocuments: a token budget needs countTokens');
    countedTokens = 0;
    taken = [];
    const drawOrder = candidates.map((file) => ({ file, key: sha256(file.id) })).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const { file } of drawOrder) {
      if (countedTokens >= options.maxTokens) break;
      const doc = consider(file);
      if (doc === null) continue;
      countedTokens += options.countTokens(doc.text);
      kept.set(file, doc);
      taken.push(file);
    }
    const order = new Map(candidates.map((file, index) => [file, index]));
    taken.sort((a, b) => order.get(a)! - order.get(b)!);
  }

  fs.mkdirSync(outDir, { recursive: true });
  const jsonl = fs.openSync(path.join(outDir, 'corpus.jsonl'), 'w');
  const tsv = fs.openSync(path.join(outDir, 'documents.tsv'), 'w');
  let documents = 0, bytes = 0;
  try {
    fs.writeSync(tsv, 'line\tid\tbytes\tsha256\n');
    for (const file of taken) {
      const doc = kept.get(file) ?? consider(file);
      if (doc === null) continue;
      kept.delete(file);
      const textBytes = Buffer.byteLength(doc.text, 'utf8');
      documents += 1;
      bytes += textBytes;
      bySource[file.source.name].documents += 1;
      bySource[file.source.name].bytes += textBytes;
      fs.writeSync(jsonl, `${JSON.stringify({ source: file.id, text: doc.text })}\n`);
      fs.writeSync(tsv, `${documents}\t${file.id}\t${textBytes}\t${doc.shippedSha256}\n`);
    }
  } finally {
    fs.closeSync(jsonl);
    fs.closeSync(tsv);
  }
  return { documents, bytes, bySource, countedTokens };
}

/** sha256 of a file, read in pieces (the corpus is larger than a string may hold). */
export function fileSha256(file: string): string {
  const hash = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const chunk = Buffer.allocUnsafe(1 << 24);
    for (let read = fs.readSync(fd, chunk, 0, chunk.length, null); read > 0; read = fs.readSync(fd, chunk, 0, chunk.length, null)) {
      hash.update(chunk.subarray(0, read));
    }
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

export interface DownloadedPackage {
  name: string;
  version: string;
  /** The .deb file's name and sha256, as apt-get download fetched it. */
  deb: string;
  sha256: string;
  bytes: number;
}

export interface CorpusManifest {
  format: 'mlactl-debian-corpus';
  version: 1;
  built_at: string;
  /** The mlactl commit that built it (the selection rules live in its src/data/debian-corpus.ts). */
  mlactl_commit: string | null;
  /** The machine's Debian release (informational: the packages, not the host, fix the content). */
  host: string | null;
  packages: (DownloadedPackage & { licence: string; pinned: boolean })[];
  selection: {
    sources: CorpusSource[];
    max_document_bytes: number;
    max_hex_share: number;
    max_tokens: number | null;
  };
  documents: { file: string; sha256: string; bytes: number; count: number; text_bytes: number; list: string; list_sha256: string; by_source: Record<string, SourceTally> };
  shards: {
    dir: string;
    manifest_sha256: string;
    tokenizer: string;
    tokenizer_hash: string;
    total_tokens: number;
    split_tokens: Record<SplitName, number>;
    split_documents: Record<SplitName, number>;
    seed: number;
    val_fraction: number;
    test_fraction: number;
    files: { file: string; split: SplitName; tokens: number; sha256: string }[];
  };
  tokenisation: { seconds: number; tokens_per_second: number };
}

export interface ManifestInputs {
  outDir: string;
  packages: DownloadedPackage[];
  documents: DocumentsResult;
  maxTokens: number | null;
  prepareSeconds: number;
  commit: string | null;
  host: string | null;
}

/**
 * Check the shards against their own manifest (every file's sha256 recomputed) and write corpus-manifest.json:
 * what went in (package versions and .deb hashes), what was kept, and what came out (the corpus file's and every
 * shard's sha256), so a rebuild can be compared byte for byte.
 */
export function writeCorpusManifest(inputs: ManifestInputs): CorpusManifest {
  const shardManifestPath = path.join(inputs.outDir, 'shards', MANIFEST_FILE);
  verifyShards(shardManifestPath);
  const shards = readShardManifest(shardManifestPath);
  const corpusFile = path.join(inputs.outDir, 'corpus.jsonl');
  const listFile = path.join(inputs.outDir, 'documents.tsv');
  const pins = new Map(CORPUS_PACKAGES.map((p) => [p.name, p]));
  const manifest: CorpusManifest = {
    format: 'mlactl-debian-corpus',
    version: 1,
    built_at: new Date().toISOString(),
    mlactl_commit: inputs.commit,
    host: inputs.host,
    packages: inputs.packages.map((p) => ({ ...p, licence: pins.get(p.name)?.licence ?? 'unknown', pinned: pins.get(p.name)?.version === p.version })),
    selection: { sources: [...CORPUS_SOURCES], max_document_bytes: MAX_DOCUMENT_BYTES, max_hex_share: MAX_HEX_SHARE, max_tokens: inputs.maxTokens },
    documents: {
      file: 'corpus.jsonl',
      sha256: fileSha256(corpusFile),
      bytes: fs.statSync(corpusFile).size,
      count: inputs.documents.documents,
      text_bytes: inputs.documents.bytes,
      list: 'documents.tsv',
      list_sha256: fileSha256(listFile),
      by_source: inputs.documents.bySource,
    },
    shards: {
      dir: 'shards',
      manifest_sha256: fileSha256(shardManifestPath),
      tokenizer: shards.tokenizer,
      tokenizer_hash: shards.tokenizer_hash,
      total_tokens: shards.total_tokens,
      split_tokens: shards.splits.tokens,
      split_documents: { train: shards.splits.documents.train.length, val: shards.splits.documents.val.length, test: shards.splits.documents.test.length },
      seed: shards.splits.seed,
      val_fraction: shards.splits.val_fraction,
      test_fraction: shards.splits.test_fraction,
      files: shards.shards.map((s) => ({ file: s.file, split: s.split, tokens: s.tokens, sha256: s.sha256 })),
    },
    tokenisation: { seconds: inputs.prepareSeconds, tokens_per_second: Math.round(shards.total_tokens / inputs.prepareSeconds) },
  };
  fs.writeFileSync(path.join(inputs.outDir, 'corpus-manifest.json'), `${JSON.stringify(manifest, null, 1)}\n`);
  return manifest;
}
