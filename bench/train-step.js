#!/usr/bin/env node
// The CPU backend's Node banner recommends tfjs-node; this benchmark reports its backend itself.
const warn = console.warn; console.warn = (...a) => { if (!String(a[0] ?? '').includes('looks like you are running')) warn(...a); };
// Training-step throughput of a preset and the cost of max-logit tracking, measured side by side in one process:
// the same step (forward + backward + optimizer update) with tracking on and off, interleaved so drift hits both.
// Usage: npm run build && node bench/train-step.js [backend=wasm] [preset=configs/models/demo.yaml] [repeats=6]
const tf = require('@tensorflow/tfjs');
const { initBackend } = require('../dist/backend');
const { loadConfig, effectiveVocab } = require('../dist/config/load');
const { openTrainingData } = require('../dist/data/dataset');
const { batchStarts, makeBatch } = require('../dist/data/batches');
const { modelSpec } = require('../dist/model/spec');
const { RopeTables } = require('../dist/model/layers');
const { initParams } = require('../dist/model/params');
const { forward } = require('../dist/model/transformer');
const { lossFromLogits } = require('../dist/engine/tfjs/head-loss');
const { Trainer } = require('../dist/engine/tfjs/trainer');

async function main() {
  const [backend = 'wasm', preset = 'configs/models/demo.yaml', repeats = '6'] = process.argv.slice(2);
  const choice = await initBackend(backend);
  const cfg = loadConfig(preset);
  const data = openTrainingData(cfg.data);
  const spec = modelSpec(cfg.model, effectiveVocab(cfg.model, data.tokenizer.vocabSize));
  const B = cfg.train.batch_size;
  const T = cfg.data.seq_len;
  const P = initParams(spec, 0);
  const rope = new RopeTables(spec.dr, spec.maxSeqLen, spec.ropeTheta, [0, spec.dn]);
  const names = Object.keys(P);
  const batch = makeBatch(data.train, batchStarts(1, 0, 0, B, T, data.train.length), T);
  const x = tf.tensor2d(batch.inputs, [B, T], 'int32');
  const y = tf.tensor2d(batch.targets, [B, T], 'int32');
  // Forward + backward, reading the loss (and the maxima when tracked) back as the trainer does.
  const step = (track) =>
    tf.tidy(() => {
      let ml;
      const r = tf.variableGrads(() => {
        const out = forward(P, spec, rope, x, track);
        if (track) ml = tf.keep(out.maxLogits);
        return lossFromLogits(out.logits, y, 0).loss;
      }, names.map((n) => P[n]));
      r.value.dataSync();
      if (ml) { ml.dataSync(); ml.dispose(); }
    });
  step(true); step(false);
  const times = { on: [], off: [] };
  for (let i = 0; i < Number(repeats); i++) {
    for (const k of i % 2 ? ['off', 'on'] : ['on', 'off']) {
      const t0 = process.hrtime.bigint();
      step(k === 'on');
      times[k].push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  const median = (a) => [...a].sort((p, q) => p - q)[Math.floor(a.length / 2)];
  // The full trainer step (with optimizer update and clipping) for the tokens/s figure.
  const trainer = new Trainer(cfg, spec, data.train);
  await trainer.runStep();
  const t0 = Date.now();
  const full = Math.max(2, Math.floor(Number(repeats) / 2));
  for (let i = 0; i < full; i++) await trainer.runStep();
  const stepMs = (Date.now() - t0) / full;
  const row = {
    backend: choice.name,
    device: choice.device,
    preset,
    tokens_per_step: B * T,
    step_ms: +stepMs.toFixed(1),
    tokens_per_s: +((B * T) / (stepMs / 1000)).toFixed(0),
    fwd_bwd_ms_tracking_on: +median(times.on).toFixed(1),
    fwd_bwd_ms_tracking_off: +median(times.off).toFixed(1),
    tracking_cost_fraction: +((median(times.on) - median(times.off)) / median(times.off)).toFixed(4),
  };
  console.log(JSON.stringify(row));
  process.exit(0);
}
main();
