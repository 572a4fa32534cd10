// The training memory estimate and the check that refuses a config before anything is allocated (issue #10, 11).
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { registerSegmentSum } from '../../../src/backend';
import { loadConfig } from '../../../src/config/load';
import {
  checkInferenceMemory,
  checkMemory,
  estimateInferenceMemory,
  estimateTrainingMemory,
  WASM_HEAP_BYTES,
} from '../../../src/engine/tfjs/memory';
import type { Config } from '../../../src/config/types';
import { UserError } from '../../../src/errors';
import { RopeTables } from '../../../src/model/layers';
import { countParams, headWeight, initParams, paramInfos } from '../../../src/model/params';
import { modelSpec } from '../../../src/model/spec';
import { forward, forwardHidden } from '../../../src/model/transformer';
import { headLoss } from '../../../src/engine/tfjs/head-loss';
import { assignParam } from '../../../src/optim/groups';
import { userErrorOf } from '../../user-error';

const MODELS = path.resolve(__dirname, '../../../configs/models');
const preset = (name: string, sets: string[] = []): Config => loadConfig(path.join(MODELS, `${name}.yaml`), sets);
const GiB = 2 ** 30;

describe('estimateTrainingMemory', () => {
  test.each([
    ['tiny', []],
    ['demo', []],
    ['gpu-small', []],
    ['paper-400m', []],
    ['tiny', ['model.variant=qk-norm', 'model.q_lora_rank=12', 'model.tie_embeddings=true']],
    ['tiny', ['model.variant=qk-norm', 'model.qk_norm.scope=nope']],
  ] as [string, string[]][])('%s %j: parameters as the model counts them, weights and optimizer state by group', (name, sets) => {
    const cfg = preset(name, sets);
    const vocab = cfg.model.vocab_size || 256;
    const spec = modelSpec(cfg.model, vocab);
    const est = estimateTrainingMemory(cfg, vocab);
    expect(est.parameters).toBe(countParams(spec));
    expect(est.weights).toBe(4 * est.parameters);
    for (const optimizer of ['adamw', 'muon'] as const) {
      const expected = paramInfos(spec).reduce((bytes, p) => {
        const n = p.shape.reduce((a, b) => a * b, 1);
        return bytes + 4 * n * (assignParam(p.name, p.shape, optimizer).opt === 'adamw' ? 2 : 1);
      }, 0);
      expect(estimateTrainingMemory({ ...cfg, train: { ...cfg.train, optimizer } }, vocab).optimizer).toBe(expected);
    }
    expect(est.total).toBe(est.weights + est.gradients + est.optimizer + est.activations + est.rope);
  });

  test('paper-400m: ~393M parameters, whose weights, gradients and Muon/AdamW state alone exceed 4 GiB', () => {
    const est = estimateTrainingMemory(preset('paper-400m'), 50304);
    expect(est.parameters).toBe(393_272_320);
    // AdamW would keep 2 moments for all 393M (6.3 GB with weights and one gradient); Muon keeps 1 for the hidden matrices.
    expect(est.weights + 4 * est.parameters + est.optimizer).toBeGreaterThan(WASM_HEAP_BYTES);
  });

  test('activations grow with the batch and quadratically with the window; RoPE tables with max_seq_len', () => {
    const base = preset('tiny');
    const at = (sets: string[]) => estimateTrainingMemory(preset('tiny', sets), 256);
    const a = at([]).activations;
    expect(at(['train.batch_size=8']).activations / a).toBeCloseTo(2, 2); // the causal masks do not grow with the batch
    const long = at(['model.max_seq_len=256', 'data.seq_len=256']).activations;
    expect(long).toBeGreaterThan(8 * a); // 8x the tokens, plus the quadratic scores
    expect(at(['model.max_seq_len=6400']).rope).toBe(100 * at([]).rope);
    expect(base.model.max_seq_len).toBe(64);
  });

  /**
   * The estimate against what TensorFlow.js really holds at the peak of one micro-batch's forward and backward pass
   * (the cpu backend's own accounting): never below it, and not wildly above it.
   */
  describe('against the measured peak of a training micro-batch', () => {
    beforeAll(async () => {
      registerSegmentSum('cpu');
      await tf.setBackend('cpu');
      await tf.ready();
    });

    test.each([
      [[]],
      [['data.seq_len=64']],
      [['model.d_ff=1024']],
      [['model.d_model=256', 'model.v_head_dim=64']],
      [['model.n_heads=16']],
      [['model.kv_lora_rank=256']],
      [['model.vocab_size=4096']],
      [['model.variant=qk-norm', 'model.qk_norm.key_groups=4']],
      [['model.q_lora_rank=64']],
    ] as string[][][])('tiny %j', async (sets) => {
      const cfg = preset('tiny', sets);
      const vocab = cfg.model.vocab_size || 256;
      const spec = modelSpec(cfg.model, vocab);
      const P = initParams(spec, 0);
      const rope = new RopeTables(spec.dr, spec.maxSeqLen, spec.ropeTheta, [0, spec.dn]);
      const B = cfg.train.batch_size;
      const T = cfg.data.seq_len;
      const names = Object.keys(P);
      const before = tf.memory().numBytes;
      const info = await tf.profile(() => {
        tf.tidy(() => {
          const inputs = tf.zeros([B, T], 'int32') as tf.Tensor2D;
          const targets = tf.zeros([B, T], 'int32') as tf.Tensor2D;
          tf.variableGrads(() => headLoss(forwardHidden(P, spec, rope, inputs, true).hidden, headWeight(P), targets, 0).loss, names.map((n) => P[n]));
        });
        return [];
      });
      const measured = info.peakBytes - before;
      rope.dispose();
      for (const v of Object.values(P)) v.dispose();
      const est = estimateTrainingMemory(cfg, vocab);
      const transient = est.gradients + est.activations;
      expect(transient).toBeGreaterThanOrEqual(measured);
      expect(transient).toBeLessThan(3 * measured);
    });
  });
});

describe('checkMemory (before a run allocates anything)', () => {
  test('paper-400m on wasm: the heap cannot hold its weights and optimizer state', () => {
    const cfg = preset('paper-400m');
    const message = userErrorOf(() => checkMemory(cfg, 50304, 'wasm', 128 * GiB));
    expect(message).toMatch(/^model\.\w+: the wasm heap \(4\.00 GiB\) cannot hold the weights, gradients and optimizer state of 393\.27M parameters \(about [\d.]+ GiB\)/);
    // Even with a small batch and window: the resident state alone is the problem.
    const small = preset('paper-400m', ['train.batch_size=1', 'data.seq_len=128']);
    expect(userErrorOf(() => checkMemory(small, 50304, 'wasm', 128 * GiB))).toMatch(/wasm heap .* cannot hold the weights, gradients and optimizer state/);
    // The native backend on a large machine holds it at that batch.
    expect(() => checkMemory(small, 50304, 'tensorflow', 128 * GiB)).not.toThrow();
    // Machine memory binds wasm too when it is the smaller.
    expect(userErrorOf(() => checkMemory(small, 50304, 'tensorflow', 4 * GiB))).toMatch(/this machine's memory \(4\.00 GiB\) cannot hold the weights/);
  });

  test('the presets that train on a laptop pass on every backend', () => {
    for (const backend of ['wasm', 'cpu', 'tensorflow', 'webgpu']) {
      expect(() => checkMemory(preset('tiny'), 256, backend, 8 * GiB)).not.toThrow();
      expect(() => checkMemory(preset('demo'), 256, backend, 8 * GiB)).not.toThrow();
    }
    const est = checkMemory(preset('tiny'), 256, 'cpu', 8 * GiB);
    expect(est.total).toBeGreaterThan(0);
  });

  test.each([
    ['model.n_layers=1000000000', /^model\.n_layers: this machine's memory \(16\.00 GiB\) cannot hold the weights, gradients and optimizer state of .* parameters .*model\.n_layers = 1000000000 drives the size/],
    ['model.d_model=1000000', /^model\.d_model: .*cannot hold the weights, gradients and optimizer state.*model\.d_model = 1000000 drives the size/],
    ['model.n_heads=1000000', /^model\.n_heads: .*cannot hold the weights, gradients and optimizer state.*model\.n_heads = 1000000 drives the size/],
    ['model.vocab_size=2147483647', /^model\.vocab_size: .*cannot hold the weights, gradients and optimizer state.*model\.vocab_size = 2147483647 drives the size/],
    ['model.d_ff=100000000', /^model\.d_ff: .*model\.d_ff = 100000000 drives the size/],
  ])('%s: refused naming the key that drives the size', (set, pattern) => {
    const cfg = loadConfig(path.join(MODELS, 'tiny.yaml'), [set]);
    const vocab = cfg.model.vocab_size || 256;
    expect(userErrorOf(() => checkMemory(cfg, vocab, 'cpu', 16 * GiB))).toMatch(pattern);
  });

  test('a huge batch: the activations of one micro-batch, with a batch size that fits', () => {
    const cfg = preset('tiny', ['train.batch_size=1000000000', 'train.tokens=1e11']);
    const message = userErrorOf(() => checkMemory(cfg, 256, 'cpu', 16 * GiB));
    expect(message).toMatch(/^train\.batch_size: this machine's memory \(16\.00 GiB\) cannot hold the activations of one micro-batch of 1000000000 sequences x 32 tokens \(about [\d.]+ PiB in all\); use train\.batch_size <= (\d+) and raise train\.grad_accum/);
    const fits = Number(/<= (\d+)/.exec(message)![1]);
    expect(fits).toBeGreaterThan(1000);
    expect(() => checkMemory(preset('tiny', [`train.batch_size=${fits}`, 'train.tokens=1e11']), 256, 'cpu', 16 * GiB)).not.toThrow();
    expect(() => checkMemory(preset('tiny', [`train.batch_size=${fits + 1}`, 'train.tokens=1e11']), 256, 'cpu', 16 * GiB)).toThrow(UserError);
  });

  test('a window too long for even one sequence names data.seq_len', () => {
    const cfg = preset('tiny', ['model.max_seq_len=1000000', 'data.seq_len=1000000', 'train.batch_size=1', 'train.tokens=1e9']);
    expect(userErrorOf(() => checkMemory(cfg, 256, 'cpu', 16 * GiB))).toMatch(/^data\.seq_len: this machine's memory \(16\.00 GiB\) cannot hold the activations of one micro-batch of 1 sequence x 1000000 tokens .*data\.seq_len = 1000000 drives the size/);
  });

  test('RoPE tables beyond the wasm heap name model.max_seq_len', () => {
    // 2^24 positions x (8 rotary + 8 content features): about 6 GiB of tables while they are built.
    const cfg = preset('tiny', ['model.max_seq_len=16777216', 'model.qk_rope_head_dim=8']);
    expect(userErrorOf(() => checkMemory(cfg, 256, 'wasm', 64 * GiB))).toMatch(/^model\.max_seq_len: the wasm heap \(4\.00 GiB\) cannot hold the RoPE tables of 16777216 positions \(about [\d.]+ GiB\); model\.max_seq_len = 16777216 drives the size$/);
  });

  test('one tensor beyond the largest typed array is refused even where memory would hold it', () => {
    // 2^23 x 1024 = 2^33 numbers in the embedding: more than a Float32Array may hold (2^32), and 32 GiB.
    const cfg = preset('tiny', ['model.vocab_size=8388608', 'model.d_model=1024', 'model.tie_embeddings=true', 'train.optimizer=muon']);
    expect(userErrorOf(() => checkMemory(cfg, 8388608, 'tensorflow', 2 ** 50))).toMatch(/^model\.vocab_size: the embedding of 8388608 x 1024 numbers is larger than one tensor can be \(2\^32 numbers\)/);
  });
});

describe('evaluation and scoring memory', () => {
  test.each([[[]], [['data.seq_len=64']], [['model.vocab_size=4096']], [['model.kv_lora_rank=256']]] as string[][][])(
    'tiny %j: the estimate of a forward pass is above its measured peak, within 3x',
    async (sets) => {
      registerSegmentSum('cpu');
      await tf.setBackend('cpu');
      const cfg = preset('tiny', sets);
      const spec = modelSpec(cfg.model, cfg.model.vocab_size || 256);
      const P = initParams(spec, 0);
      const rope = new RopeTables(spec.dr, spec.maxSeqLen, spec.ropeTheta, [0, spec.dn]);
      const [B, T] = [cfg.eval.batch_size, cfg.data.seq_len];
      const before = tf.memory().numBytes;
      const info = await tf.profile(() => {
        tf.tidy(() => {
          tf.logSoftmax(forward(P, spec, rope, tf.zeros([B, T], 'int32') as tf.Tensor2D).logits);
        });
        return [];
      });
      const measured = info.peakBytes - before;
      rope.dispose();
      for (const v of Object.values(P)) v.dispose();
      const activations = estimateInferenceMemory(spec, B, T).activations;
      expect(activations).toBeGreaterThanOrEqual(measured);
      expect(activations).toBeLessThan(3 * measured);
    },
  );

  test('weights, RoPE tables and a forward pass of one scoring batch', () => {
    const cfg = preset('paper-400m');
    const spec = modelSpec(cfg.model, 50304);
    const est = estimateInferenceMemory(spec, 16, 2048);
    expect(est.weights).toBe(4 * 393_272_320);
    expect(est.total).toBeGreaterThan(est.weights + est.rope);
    expect(estimateInferenceMemory(spec, 32, 2048).activations / est.activations).toBeCloseTo(2, 2);
  });

  test('refused with the key when the scoring batch or the model does not fit', () => {
    const spec = modelSpec(preset('gpu-small').model, 50304);
    expect(userErrorOf(() => checkInferenceMemory(spec, 16, 512, 'wasm', 64 * GiB))).toMatch(/^eval\.batch_size: the wasm heap \(4\.00 GiB\) cannot hold the activations of scoring 16 sequences x 512 tokens \(about [\d.]+ GiB in all\); use eval\.batch_size <= \d+$/);
    // paper-400m at its full window: not even one sequence fits the heap.
    const paper = modelSpec(preset('paper-400m').model, 50304);
    expect(userErrorOf(() => checkInferenceMemory(paper, 16, 2048, 'wasm', 64 * GiB, { batch: '--batch-size', window: '--window' }))).toMatch(
      /^--window: the wasm heap \(4\.00 GiB\) cannot hold the activations of scoring 16 sequences x 2048 tokens .*--window = 2048 drives the size$/,
    );
    const tiny = modelSpec(preset('tiny').model, 256);
    expect(() => checkInferenceMemory(tiny, 4, 64, 'wasm', 8 * GiB)).not.toThrow();
    const deep = modelSpec(preset('tiny', ['model.n_layers=100000000']).model, 256);
    expect(userErrorOf(() => checkInferenceMemory(deep, 1, 32, 'cpu', 16 * GiB))).toMatch(/^model\.n_layers: this machine's memory \(16\.00 GiB\) cannot hold the weights of .* parameters/);
  });
});
