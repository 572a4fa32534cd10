#!/usr/bin/env node
// Peak memory and time of the output head's loss with gradients, whole logits against row chunks
// (src/engine/tfjs/head-loss.ts), one child process per path (a wasm heap overflow aborts the process), printed side by
// side. Usage: node bench/head-loss.js [backend] [B] [T] [d] [V]
// (defaults: wasm, gpu-small's micro-batch 8 x 512, d 512, GPT-2's 50304 ids). Run `npm run build` first.
const { spawnSync } = require('child_process');

async function measure(backend, label, B, T, d, V) {
  const tf = require('@tensorflow/tfjs');
  const { initBackend } = require('../dist/backend');
  const { headLoss, WHOLE_LOGITS_BYTES } = require('../dist/engine/tfjs/head-loss');
  await initBackend(backend);
  const h = tf.variable(tf.randomNormal([B, T, d], 0, 1, 'float32', 1));
  const W = tf.variable(tf.mul(tf.randomNormal([V, d], 0, 1, 'float32', 2), 1 / Math.sqrt(d)));
  const targets = tf.randomUniform([B, T], 0, V, 'int32', 3);
  const budget = label === 'whole' ? Infinity : WHOLE_LOGITS_BYTES;
  const run = () => tf.variableGrads(() => headLoss(h, W, targets, 1e-4, budget).loss, [h, W]);
  const warm = run();
  tf.dispose([warm.value, ...Object.values(warm.grads)]);
  const t0 = Date.now();
  let loss = 0;
  const info = await tf.profile(() => {
    const r = run();
    loss = r.value.dataSync()[0];
    tf.dispose([r.value, ...Object.values(r.grads)]);
  });
  process.stdout.write(JSON.stringify({ label, ms: Date.now() - t0, peakMiB: info.peakBytes / 2 ** 20, loss }) + '\n');
}

function main() {
  const args = process.argv.slice(2);
  if (args[0] === '--child') return measure(args[1], args[2], ...args.slice(3).map(Number));
  const [backend = 'wasm', B = 8, T = 512, d = 512, V = 50304] = args.map((a, i) => (i === 0 ? a : Number(a)));
  const rows = ['whole', 'chunked'].map((label) => {
    const r = spawnSync(process.execPath, [__filename, '--child', backend, label, B, T, d, V].map(String), { encoding: 'utf8' });
    const line = r.stdout.trim().split('\n').pop();
    return r.status === 0 ? JSON.parse(line) : { label, failed: (r.stderr.match(/RuntimeError: [^\n]*|Error: [^\n]*/) ?? ['exit ' + r.status])[0] };
  });
  console.log(`head loss with gradients: ${backend}, ${B} x ${T} tokens, d ${d}, V ${V} (logits ${((B * T * V * 4) / 2 ** 20).toFixed(0)} MiB)`);
  console.log('| path | ms | peak MiB | loss |\n| --- | ---: | ---: | ---: |');
  for (const r of rows) console.log(r.failed ? `| ${r.label} | failed: ${r.failed} | | |` : `| ${r.label} | ${r.ms} | ${r.peakMiB.toFixed(0)} | ${r.loss.toFixed(6)} |`);
  if (!rows[0].failed && !rows[1].failed) console.log(`chunked / whole: time ${(rows[1].ms / rows[0].ms).toFixed(2)}, peak memory ${(rows[1].peakMiB / rows[0].peakMiB).toFixed(2)}`);
}
main();
