// Reference values from the TypeScript engine (the built dist/), for the Python tests' cross-checks.
// Usage: node ts_reference.js < request.json > answer.json, where the request is {"tasks": [{"kind": ..., ...}]}
// and the answer {"results": [...]}, one result per task in order. Runs on tfjs's pure-JS `cpu` backend.
'use strict';
const path = require('path');
const fs = require('fs');

const DIST = path.resolve(__dirname, '..', '..', 'dist');
const req = (m) => require(path.join(DIST, m));

async function main() {
  const request = JSON.parse(fs.readFileSync(0, 'utf8'));
  const tf = require(require.resolve('@tensorflow/tfjs', { paths: [path.resolve(DIST, '..')] }));
  await req('backend').initBackend('cpu');
  const results = [];
  for (const task of request.tasks) results.push(await run(task, tf));
  process.stdout.write(JSON.stringify({ results }));
}

function specOf(s) {
  return {
    variant: s.variant, vocab: s.vocab, d: s.d, L: s.L, H: s.H, dq: s.dq, dc: s.dc, dn: s.dn, dr: s.dr, dv: s.dv,
    dff: s.dff, G: s.G, scope: s.scope, qkEps: s.qk_eps, normEps: s.norm_eps, ropeTheta: s.rope_theta,
    maxSeqLen: s.max_seq_len, tied: s.tied, initStd: s.init_std,
  };
}

function logitsOf(tf, P, spec, tokens) {
  const { RopeTables } = req('model/layers');
  const { forward } = req('model/transformer');
  const rope = new RopeTables(spec.dr, spec.maxSeqLen, spec.ropeTheta, [0, spec.dn]);
  const out = tf.tidy(() => {
    const r = forward(P, spec, rope, tf.tensor2d(tokens, [tokens.length, tokens[0].length], 'int32'), true);
    return { logits: r.logits.arraySync(), maxLogits: r.maxLogits.arraySync() };
  });
  rope.dispose();
  return out;
}

async function run(task, tf) {
  switch (task.kind) {
    case 'batches': {
      const b = req('data/batches');
      return task.calls.map(([seed, step, micro, B, T, len, A]) => {
        const starts = b.batchStarts(seed, step, micro, B, T, len, A);
        return { starts, hash: b.batchHash(starts) };
      });
    }
    case 'validation_windows':
      return task.calls.map(([len, T, maxTokens]) => req('data/batches').validationWindows(len, T, maxTokens));
    case 'schedule':
      return task.calls.map(([step, total, warmup, cfg]) => req('optim/schedule').learningRate(step, total, warmup, cfg));
    case 'qkclip_plan': {
      const plan = req('optim/qkclip').planQkClip(specOf(task.spec), task.max_logits, task.qk_clip);
      return { queryRows: plan.queryRows.map((r) => Array.from(r)), keyRows: plan.keyRows.map((r) => Array.from(r)), clipped: plan.clipped };
    }
    case 'encode_safetensors': {
      // tensors: {name: {shape, dtype: 'F32'|'I32', values}}
      const stored = {};
      for (const [name, t] of Object.entries(task.tensors)) stored[name] = { shape: t.shape, data: t.dtype === 'I32' ? Int32Array.from(t.values) : Float32Array.from(t.values) };
      req('runfolder/safetensors').saveSafetensors(task.file, stored, task.metadata);
      return null;
    }
    case 'init_checkpoint': {
      // A tfjs step-0 training checkpoint of a fresh Trainer, plus the logits of its weights on `tokens`.
      const { resolveConfigObject } = req('config/load');
      const cfg = resolveConfigObject(task.config);
      const spec = specOf(task.spec);
      const { memoryTokenStore } = req('data/batches');
      const { Trainer } = req('engine/tfjs/trainer');
      const { saveTrainingCheckpoint } = req('engine/tfjs/checkpoint');
      const trainer = new Trainer(cfg, spec, memoryTokenStore(task.train_tokens || [0, 1, 2]));
      const state = {
        step: 0, tokens: 0, data_cursor: { seed: cfg.data.seed, step: 0 },
        schedule: { step: 0, total_steps: 1, warmup_steps: 0 }, elapsed_s: 0, best_val_loss: null,
        last_val_loss: null, heads_clipped_total: 0, max_logit_peak: null,
      };
      const dir = await saveTrainingCheckpoint(task.run_dir, trainer, state, task.tokenizer || null);
      const out = logitsOf(tf, trainer.params, spec, task.tokens);
      trainer.dispose();
      return { dir, ...out };
    }
    case 'load_and_forward': {
      // Load a model folder (strictly, as `mlactl score` does) and return its logits on `tokens`.
      const { loadModel } = req('engine/tfjs/checkpoint');
      const { spec, params } = loadModel(task.dir);
      const out = logitsOf(tf, params, spec, task.tokens);
      Object.values(params).forEach((v) => v.dispose());
      return out;
    }
    case 'restore_checkpoint': {
      // Restore a training checkpoint into a fresh tfjs Trainer (model and optimizer, strictly).
      const { resolveConfigObject } = req('config/load');
      const cfg = resolveConfigObject(task.config);
      const { memoryTokenStore } = req('data/batches');
      const { Trainer } = req('engine/tfjs/trainer');
      const { restoreTrainingCheckpoint } = req('engine/tfjs/checkpoint');
      const trainer = new Trainer(cfg, specOf(task.spec), memoryTokenStore([0, 1, 2]));
      const state = restoreTrainingCheckpoint(task.dir, trainer);
      const steps = trainer.step;
      trainer.dispose();
      return { state, steps };
    }
    case 'train': {
      // A straight tfjs run: write the step-0 checkpoint, then `steps` steps; per step the metrics.
      const { resolveConfigObject } = req('config/load');
      const cfg = resolveConfigObject(task.config);
      const spec = specOf(task.spec);
      const { memoryTokenStore } = req('data/batches');
      const { Trainer } = req('engine/tfjs/trainer');
      const { saveTrainingCheckpoint } = req('engine/tfjs/checkpoint');
      const trainer = new Trainer(cfg, spec, memoryTokenStore(task.train_tokens));
      trainer.plan.totalSteps = task.total_steps;
      trainer.plan.warmupSteps = task.warmup_steps;
      const state = {
        step: 0, tokens: 0, data_cursor: { seed: cfg.data.seed, step: 0 },
        schedule: { step: 0, total_steps: task.total_steps, warmup_steps: task.warmup_steps }, elapsed_s: 0,
        best_val_loss: null, last_val_loss: null, heads_clipped_total: 0, max_logit_peak: null,
      };
      const dir = await saveTrainingCheckpoint(task.run_dir, trainer, state, null);
      const steps = [];
      for (let i = 0; i < task.steps; i++) steps.push(await trainer.runStep());
      trainer.dispose();
      return { dir, steps };
    }
    default:
      throw new Error(`unknown task ${task.kind}`);
  }
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
