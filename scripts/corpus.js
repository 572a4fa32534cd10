#!/usr/bin/env node
// The Node half of scripts/build-corpus.sh (which fetches and unpacks the packages): the package list, the kernel
// folders to unpack, the documents, and the manifest. The rules themselves live in src/data/debian-corpus.ts;
// this file only reads flags and prints. Run from the project root after `npm run build`.
//   node scripts/corpus.js packages [--latest]          name=version per line (name alone with --latest)
//   node scripts/corpus.js kernel-tarball               the kernel tarball, relative to the work folder
//   node scripts/corpus.js kernel-folders               the tarball's folders to unpack, one per line
//   node scripts/corpus.js documents --work W --out O [--max-tokens N]
//   node scripts/corpus.js manifest --work W --out O --prepare-seconds S [--max-tokens N] [--commit C] [--host H]
const fs = require('fs');
const path = require('path');

const dist = path.join(__dirname, '..', 'dist');
const corpus = require(path.join(dist, 'data', 'debian-corpus'));
const { UserError } = require(path.join(dist, 'errors'));

function flags(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith('--')) throw new UserError(`unexpected argument ${argv[i]}`);
    const name = argv[i].slice(2);
    if (name === 'latest') out.latest = true;
    else if (i + 1 < argv.length) out[name] = argv[++i];
    else throw new UserError(`--${name} needs a value`);
  }
  return out;
}

function positiveInteger(value, name) {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new UserError(`--${name} must be a positive integer, got ${value}`);
  return n;
}

function required(opts, name) {
  if (opts[name] === undefined) throw new UserError(`--${name} is required`);
  return opts[name];
}

function main(argv) {
  const [command, ...rest] = argv;
  const opts = flags(rest);
  switch (command) {
    case 'packages':
      for (const p of corpus.CORPUS_PACKAGES) console.log(opts.latest ? p.name : `${p.name}=${p.version}`);
      return;
    case 'kernel-tarball':
      console.log(corpus.packageRoot(corpus.KERNEL_PACKAGE, corpus.KERNEL_TARBALL));
      return;
    case 'kernel-folders':
      for (const folder of ['Documentation', ...corpus.KERNEL_CODE_FOLDERS]) console.log(`${corpus.KERNEL_TOP}/${folder}`);
      return;
    case 'documents': {
      const work = required(opts, 'work'), out = required(opts, 'out');
      const maxTokens = positiveInteger(opts['max-tokens'], 'max-tokens');
      let countTokens;
      if (maxTokens !== undefined) {
        const tokenizer = require(path.join(dist, 'data', 'tokenizer')).getTokenizer('gpt2');
        // Each document is followed by one end-of-text token in the shards.
        countTokens = (text) => tokenizer.encode(text).length + 1;
      }
      const result = corpus.writeDocuments(work, out, { maxTokens, countTokens });
      fs.writeFileSync(path.join(work, 'documents.json'), JSON.stringify(result, null, 1));
      for (const [name, tally] of Object.entries(result.bySource)) {
        const skipped = Object.entries(tally.skipped).map(([why, n]) => `${n} ${why}`).join(', ');
        console.log(`  ${name}: ${tally.documents} documents, ${(tally.bytes / 1e6).toFixed(1)} MB${skipped ? ` (left out: ${skipped})` : ''}`);
      }
      console.log(`  ${result.documents} documents, ${(result.bytes / 1e6).toFixed(1)} MB of text${result.countedTokens === null ? '' : `, ${result.countedTokens} tokens counted`}`);
      return;
    }
    case 'manifest': {
      const work = required(opts, 'work'), out = required(opts, 'out');
      const documents = JSON.parse(fs.readFileSync(path.join(work, 'documents.json'), 'utf8'));
      const packages = fs.readFileSync(path.join(work, 'debs.tsv'), 'utf8').trim().split('\n').map((line) => {
        const [name, version, deb, sha256, bytes] = line.split('\t');
        return { name, version, deb, sha256, bytes: Number(bytes) };
      });
      const seconds = Number(required(opts, 'prepare-seconds'));
      if (!(seconds > 0)) throw new UserError(`--prepare-seconds must be a positive number, got ${opts['prepare-seconds']}`);
      const manifest = corpus.writeCorpusManifest({
        outDir: out,
        packages,
        documents,
        maxTokens: positiveInteger(opts['max-tokens'], 'max-tokens') ?? null,
        prepareSeconds: seconds,
        commit: opts.commit || null,
        host: opts.host || null,
      });
      if (documents.countedTokens !== null && documents.countedTokens !== manifest.shards.total_tokens) {
        throw new UserError(`${path.join(out, 'shards', 'manifest.json')}: ${manifest.shards.total_tokens} tokens, but the documents were counted at ${documents.countedTokens}`);
      }
      const s = manifest.shards;
      console.log(`  ${s.total_tokens} tokens (train ${s.split_tokens.train}, val ${s.split_tokens.val}, test ${s.split_tokens.test}) in ${s.files.length} shards, every sha256 checked`);
      console.log(`  tokenised in ${manifest.tokenisation.seconds.toFixed(1)} s: ${manifest.tokenisation.tokens_per_second} tokens/s`);
      return;
    }
    default:
      throw new UserError(`unknown command ${command ?? '(none)'}: packages | kernel-tarball | kernel-folders | documents | manifest`);
  }
}

try {
  main(process.argv.slice(2));
} catch (err) {
  if (err instanceof UserError) {
    process.stderr.write(`corpus.js: ${err.message}\n`);
    process.exit(err.exitCode);
  }
  throw err;
}
