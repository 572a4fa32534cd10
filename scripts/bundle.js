#!/usr/bin/env node
// Build the single-file CLI bundle: node scripts/bundle.js OUTFILE. Used by scripts/gpu-pack.sh and by the test
// that runs the bundle (test/cli/bundle.test.ts), so both build it the same way.
const path = require('path');
const esbuild = require('esbuild');

// Left external: webgpu (native, shipped beside the bundle by pack.sh), tfjs-node (optional, never on the GPU box),
// the packages only `compare` uses (resvg is native; vega runs in a child process from its own files), and
// typescript, which oclif would use to run .ts commands in development. Identifiers stay unminified so that stack
// traces from the GPU machine still read.
const EXTERNAL = ['webgpu', '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu', '@resvg/resvg-js', 'vega', 'vega-lite', 'typescript'];

async function main() {
  const outfile = process.argv[2];
  if (!outfile) {
    process.stderr.write('usage: node scripts/bundle.js OUTFILE\n');
    process.exit(2);
  }
  await esbuild.build({
    entryPoints: [path.join(__dirname, '..', 'src', 'cli', 'bundle.ts')],
    bundle: true,
    platform: 'node',
    target: 'node20',
    outfile,
    external: EXTERNAL,
    minifyWhitespace: true,
    minifySyntax: true,
    logLevel: 'error',
  });
}

main().catch((err) => {
  process.stderr.write(`bundle: ${err.message}\n`);
  process.exit(1);
});
