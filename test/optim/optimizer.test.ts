import * as tf from '@tensorflow/tfjs';
import type { TrainConfig } from '../../src/config/types';
import { UserError } from '../../src/errors';
import { adamwStep } from '../../src/optim/adamw';
import { muonStep } from '../../src/optim/muon';
import { Optimizer } from '../../src/optim/optimizer';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const baseTrain: TrainConfig = {
  tokens: 1000,
  batch_size: 2,
  grad_accum: 1,
  optimizer: 'muon',
  lr: 0.01,
  min_lr_ratio: 0.1,
  warmup_tokens: 0,
  schedule: 'cosine',
  decay_fraction: 0.2,
  weight_decay: 0.1,
  beta1: 0.9,
  beta2: 0.95,
  adam_eps: 1e-8,
  muon_momentum: 0.95,
  grad_clip: 1,
  z_loss: 0,
  eval_every_tokens: 0,
  eval_tokens: 0,
  ckpt_every_tokens: 0,
  log_every_steps: 1,
  maxlogit_every_steps: 1,
  qk_clip: { tau: 100, alpha: 0.5 },
};

const SHAPES: Record<string, number[]> = {
  'model.embed_tokens.weight': [10, 4],
  'model.layers.0.input_layernorm.weight': [4],
  'model.layers.0.self_attn.q_proj.weight': [6, 4],
  'model.layers.0.self_attn.kv_b_proj.weight': [8, 3],
  'model.norm.weight': [4],
  'lm_head.weight': [10, 4],
};

/** Deterministic values in [-1, 1) from a seed, so two parameter sets can be built identically. */
function seededValues(size: number, seed: number): Float32Array {
  let state = seed >>> 0;
  return Float32Array.from({ length: size }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 31 - 1;
  });
}

function makeParams(seed: number): Map<string, tf.Variable> {
  return new Map(
    Object.entries(SHAPES).map(([name, shape], i) => {
      const values = seededValues(shape.reduce((a, b) => a * b, 1), seed + i);
      return [name, tf.variable(tf.tensor(values, shape), true)];
    }),
  );
}

function makeGrads(step: number): Map<string, tf.Tensor> {
  return new Map(
    Object.entries(SHAPES).map(([name, shape], i) => [name, tf.tensor(seededValues(shape.reduce((a, b) => a * b, 1), 1000 * step + i), shape)]),
  );
}

const disposeMap = (m: Map<string, tf.Tensor>): void => m.forEach((t) => t.dispose());
const valuesOf = (m: Map<string, tf.Tensor>): Record<string, number[]> =>
  Object.fromEntries([...m].map(([k, t]) => [k, Array.from(t.dataSync())]));

describe('Optimizer', () => {
  it('steps each parameter with its group: AdamW (decay only on matrices) or Muon, step counted from 1', () => {
    tf.engine().startScope(); // frees this test's many reference tensors at the end
    const params = makeParams(1);
    const initial = new Map([...params].map(([k, v]) => [k, tf.clone(v)]));
    const opt = new Optimizer(params, baseTrain);
    const grads = makeGrads(1);
    opt.step(grads, 0.01);
    expect(opt.steps).toBe(1);

    const zero = (shape: number[]) => tf.zeros(shape);
    const adamHp = { lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8 };
    const expectParam = (name: string, expected: tf.Tensor) => {
      expect(Array.from((params.get(name) as tf.Variable).dataSync())).toEqual(Array.from(expected.dataSync()));
    };
    for (const name of ['model.embed_tokens.weight', 'lm_head.weight']) {
      const e = adamwStep(initial.get(name)!, grads.get(name)!, zero(SHAPES[name]), zero(SHAPES[name]), 1, { ...adamHp, weightDecay: 0.1 });
      expectParam(name, e.p);
    }
    for (const name of ['model.norm.weight', 'model.layers.0.input_layernorm.weight']) {
      const e = adamwStep(initial.get(name)!, grads.get(name)!, zero(SHAPES[name]), zero(SHAPES[name]), 1, { ...adamHp, weightDecay: 0 });
      expectParam(name, e.p);
    }
    for (const name of ['model.layers.0.self_attn.q_proj.weight', 'model.layers.0.self_attn.kv_b_proj.weight']) {
      const e = muonStep(initial.get(name)!, grads.get(name)!, zero(SHAPES[name]), { lr: 0.01, momentum: 0.95, weightDecay: 0.1 });
      expectParam(name, e.p);
    }
    const state = opt.stateTensors();
    expect(Object.keys(state).sort()).toEqual(
      [
        'lm_head.weight.exp_avg',
        'lm_head.weight.exp_avg_sq',
        'model.embed_tokens.weight.exp_avg',
        'model.embed_tokens.weight.exp_avg_sq',
        'model.layers.0.input_layernorm.weight.exp_avg',
        'model.layers.0.input_layernorm.weight.exp_avg_sq',
        'model.layers.0.self_attn.kv_b_proj.weight.momentum_buffer',
        'model.layers.0.self_attn.q_proj.weight.momentum_buffer',
        'model.norm.weight.exp_avg',
        'model.norm.weight.exp_avg_sq',
        'step',
      ].sort(),
    );
    // After one step from zero state, the momentum buffer is the gradient itself.
    expect(Array.from(state['model.layers.0.self_attn.q_proj.weight.momentum_buffer'].dataSync())).toEqual(
      Array.from(grads.get('model.layers.0.self_attn.q_proj.weight')!.dataSync()),
    );
    expect(state.step.dtype).toBe('int32');
    expect(state.step.dataSync()[0]).toBe(1);
    tf.dispose(Object.values(state));

    // The second step must use bias correction with t = 2.
    const name = 'model.norm.weight';
    const before = tf.clone(params.get(name)!);
    const m = tf.clone(opt.stateTensors()[`${name}.exp_avg`]);
    const v = tf.clone(opt.stateTensors()[`${name}.exp_avg_sq`]);
    const grads2 = makeGrads(2);
    opt.step(grads2, 0.005);
    expectParam(name, adamwStep(before, grads2.get(name)!, m, v, 2, { ...adamHp, lr: 0.005, weightDecay: 0 }).p);
    opt.dispose();
    params.forEach((p) => p.dispose());
    tf.engine().endScope();
  });

  it('with optimizer adamw puts every parameter on AdamW', () => {
    const params = makeParams(2);
    const opt = new Optimizer(params, { ...baseTrain, optimizer: 'adamw' });
    expect([...opt.assignments().values()].every((a) => a.opt === 'adamw')).toBe(true);
    const state = opt.stateTensors();
    expect(Object.keys(state).filter((k) => k.endsWith('momentum_buffer'))).toEqual([]);
    tf.dispose(Object.values(state));
    opt.dispose();
    params.forEach((p) => p.dispose());
  });

  it.each(['muon', 'adamw'] as const)('resumes bit-identically from stateTensors/loadState (%s)', (optimizer) => {
    const cfg = { ...baseTrain, optimizer };
    const paramsA = makeParams(3);
    const optA = new Optimizer(paramsA, cfg);
    for (let s = 1; s <= 3; s++) {
      const g = makeGrads(s);
      optA.step(g, 0.01 / s);
      disposeMap(g);
    }
    // A checkpoint: parameter values and optimizer state copied out as plain numbers and rebuilt.
    const savedParams = valuesOf(paramsA);
    const savedState = Object.entries(optA.stateTensors()).map(([k, t]) => [k, Array.from(t.dataSync()), t.shape, t.dtype] as const);
    const record = Object.fromEntries(savedState.map(([k, values, shape, dtype]) => [k, tf.tensor(values, shape, dtype)]));

    const paramsB = new Map([...paramsA.keys()].map((k) => [k, tf.variable(tf.tensor(savedParams[k], SHAPES[k]), true)]));
    const optB = new Optimizer(paramsB, cfg);
    optB.loadState(record);
    tf.dispose(Object.values(record));
    expect(optB.steps).toBe(3);

    // Control: same parameters but fresh state must differ, or this test could not catch a broken loadState.
    const paramsC = new Map([...paramsA.keys()].map((k) => [k, tf.variable(tf.tensor(savedParams[k], SHAPES[k]), true)]));
    const optC = new Optimizer(paramsC, cfg);

    const g = makeGrads(4);
    for (const o of [optA, optB, optC]) o.step(g, 0.004);
    disposeMap(g);
    expect(valuesOf(paramsB)).toEqual(valuesOf(paramsA));
    const stateA = optA.stateTensors();
    const stateB = optB.stateTensors();
    for (const key of Object.keys(stateA)) expect(Array.from(stateB[key].dataSync())).toEqual(Array.from(stateA[key].dataSync()));
    expect(valuesOf(paramsC)).not.toEqual(valuesOf(paramsA));
    tf.dispose([...Object.values(stateA), ...Object.values(stateB)]);
    for (const [o, p] of [[optA, paramsA], [optB, paramsB], [optC, paramsC]] as const) {
      o.dispose();
      p.forEach((v) => v.dispose());
    }
  });

  it('refuses a state record with missing, extra or misshapen keys and stays untouched', () => {
    const params = makeParams(4);
    const opt = new Optimizer(params, baseTrain);
    const g = makeGrads(1);
    opt.step(g, 0.01);
    const good = opt.stateTensors();
    const { step: _step, ...noStep } = good;
    expect(() => opt.loadState(noStep)).toThrow(UserError);
    expect(() => opt.loadState(noStep)).toThrow(/missing key step/);
    const extra = tf.zeros([1]);
    expect(() => opt.loadState({ ...good, 'model.norm.weight.momentum_buffer': extra })).toThrow(/unexpected key model\.norm\.weight\.momentum_buffer/);
    const wrong = tf.zeros([5]);
    expect(() => opt.loadState({ ...good, 'model.norm.weight.exp_avg': wrong })).toThrow(/model\.norm\.weight\.exp_avg has shape \[5\]/);
    const zeroStep = tf.scalar(0, 'int32');
    expect(() => opt.loadState({ ...good, 'model.norm.weight.exp_avg': wrong, step: zeroStep })).toThrow(UserError);
    expect(opt.steps).toBe(1);
    tf.dispose([extra, wrong, zeroStep, ...Object.values(good)]);
    disposeMap(g);
    opt.dispose();
    params.forEach((p) => p.dispose());
  });

  it('refuses missing, extra or misshapen gradients', () => {
    const params = makeParams(5);
    const opt = new Optimizer(params, baseTrain);
    const g = makeGrads(1);
    const partial = new Map([...g].filter(([k]) => k !== 'lm_head.weight'));
    expect(() => opt.step(partial, 0.01)).toThrow(/no gradient for parameter lm_head\.weight/);
    const extra = tf.zeros([2]);
    expect(() => opt.step(new Map([...g, ['model.layers.0.mlp.up_proj.weight', extra]]), 0.01)).toThrow(/unknown parameter/);
    const wrong = tf.zeros([4, 4]);
    expect(() => opt.step(new Map([...g, ['model.norm.weight', wrong]]), 0.01)).toThrow(/shape \[4,4\]/);
    expect(opt.steps).toBe(0);
    tf.dispose([extra, wrong]);
    disposeMap(g);
    opt.dispose();
    params.forEach((p) => p.dispose());
  });

  it('refuses a parameter that matches no group rule', () => {
    const bad = new Map([['model.layers.0.self_attn.q_proj.bias', tf.variable(tf.zeros([6]))]]);
    expect(() => new Optimizer(bad, baseTrain)).toThrow(/matches no optimizer group rule/);
    bad.forEach((p) => p.dispose());
  });

  it('leaks no tensors over steps, checkpoints and resumes, and dispose frees its state', () => {
    const params = makeParams(6);
    const baseline = tf.memory().numTensors;
    const opt = new Optimizer(params, baseTrain);
    const stateCount = 2 * 4 + 2; // four AdamW parameters with two buffers, two Muon parameters with one
    const grads = makeGrads(1);
    opt.step(grads, 0.01);
    const afterWarmup = tf.memory().numTensors;
    expect(afterWarmup).toBe(baseline + stateCount + grads.size);
    for (let s = 0; s < 5; s++) {
      opt.step(grads, 0.01);
      const record = opt.stateTensors();
      opt.loadState(record);
      tf.dispose(Object.values(record));
      expect(tf.memory().numTensors).toBe(afterWarmup);
    }
    disposeMap(grads);
    opt.dispose();
    expect(tf.memory().numTensors).toBe(baseline);
    expect(() => opt.step(new Map(), 0.01)).toThrow(/after dispose/);
    params.forEach((p) => p.dispose());
  });

  it('lets several optimizers over the same parameter names coexist', () => {
    const p1 = makeParams(7);
    const p2 = makeParams(7);
    const o1 = new Optimizer(p1, baseTrain);
    const o2 = new Optimizer(p2, baseTrain);
    o1.dispose();
    o2.dispose();
    [...p1.values(), ...p2.values()].forEach((p) => p.dispose());
  });
});
