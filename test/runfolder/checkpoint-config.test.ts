// config.json and the model file's tensor set: everything docs/checkpoint-format.md says a reader must refuse.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../src/errors';
import { loadModel, saveModel } from '../../src/engine/tfjs/checkpoint';
import { modelFolderInfo, specFromCheckpointConfig, type CheckpointConfigJson } from '../../src/runfolder/checkpoint';
import { getTokenizer } from '../../src/data/tokenizer';
import { disposeParams } from '../../src/model/params';
import { loadSafetensors, saveSafetensors } from '../../src/runfolder/safetensors';
import { randomParams, tinySpec } from '../helpers';

let base: string;
let baseQk: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-cfg-'));
  const s = tinySpec({ dq: 6 });
  const P = randomParams(s, 3);
  await saveModel(base, P, s, { name: 'byte', hash: 'abc', eos: 256 });
  disposeParams(P);
  baseQk = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-cfg-'));
  const sq = tinySpec({ variant: 'qk-norm', G: 2, scope: 'nope' });
  const Q = randomParams(sq, 4);
  await saveModel(baseQk, Q, sq, null);
  disposeParams(Q);
});

/** A copy of a saved model folder whose config.json is `edit` applied to the saved one. */
function withConfig(from: string, edit: (c: Record<string, unknown>) => unknown): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-cfg-'));
  fs.copyFileSync(path.join(from, 'model.safetensors'), path.join(dir, 'model.safetensors'));
  const cfg = JSON.parse(fs.readFileSync(path.join(from, 'config.json'), 'utf8'));
  const out = edit(cfg) ?? cfg;
  fs.writeFileSync(path.join(dir, 'config.json'), typeof out === 'string' ? out : JSON.stringify(out));
  return dir;
}

function refusal(dir: string): string {
  try {
    const m = loadModel(dir);
    disposeParams(m.params);
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    const msg = (e as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error(`${dir} was accepted`);
}

const REQUIRED = [
  'model_type', 'format', 'vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads', 'q_lora_rank',
  'kv_lora_rank', 'qk_nope_head_dim', 'qk_rope_head_dim', 'v_head_dim', 'intermediate_size', 'hidden_act', 'rope_theta',
  'rope_layout', 'rms_norm_eps', 'max_position_embeddings', 'tie_word_embeddings', 'variant', 'qk_norm',
  'tokenizer', 'initializer_range',
];

test('the saved folders load (the edits below are the only difference)', () => {
  for (const dir of [base, baseQk]) disposeParams(loadModel(dir).params);
});

test.each(REQUIRED)('a config.json without %s is refused naming the file and the key', (key) => {
  const dir = withConfig(base, (c) => void delete c[key]);
  expect(refusal(dir)).toBe(`${path.join(dir, 'config.json')}: ${key}: missing`);
});

test('the informative keys attention_scale and qk_norm.applied may be left out', () => {
  disposeParams(loadModel(withConfig(base, (c) => void delete c.attention_scale)).params);
  disposeParams(loadModel(withConfig(baseQk, (c) => void delete (c.qk_norm as Record<string, unknown>).applied)).params);
});

test.each(['scope', 'key_groups', 'eps'])('a qk-norm config.json without qk_norm.%s is refused', (key) => {
  const dir = withConfig(baseQk, (c) => void delete (c.qk_norm as Record<string, unknown>)[key]);
  expect(refusal(dir)).toBe(`${path.join(dir, 'config.json')}: qk_norm.${key}: missing`);
});

test.each(['name', 'hash', 'eos'])('a tokenizer without %s is refused', (key) => {
  const dir = withConfig(base, (c) => void delete (c.tokenizer as Record<string, unknown>)[key]);
  expect(refusal(dir)).toBe(`${path.join(dir, 'config.json')}: tokenizer.${key}: missing`);
});

// [case, folder (qk: the qk-norm one), edit, key the message must name, what it must say]
const MISTYPED: [string, 'base' | 'qk', (c: any) => void, string, RegExp][] = [
  ['a string count', 'base', (c) => (c.num_hidden_layers = '2'), 'num_hidden_layers', /positive integer/],
  ['a fractional count', 'base', (c) => (c.num_attention_heads = 2.5), 'num_attention_heads', /positive integer/],
  ['a zero count', 'base', (c) => (c.hidden_size = 0), 'hidden_size', /positive integer/],
  ['a negative count', 'base', (c) => (c.vocab_size = -37), 'vocab_size', /positive integer/],
  ['a null count', 'base', (c) => (c.kv_lora_rank = null), 'kv_lora_rank', /positive integer/],
  ['a zero q_lora_rank', 'base', (c) => (c.q_lora_rank = 0), 'q_lora_rank', /positive integer or null/],
  ['a string q_lora_rank', 'base', (c) => (c.q_lora_rank = '6'), 'q_lora_rank', /positive integer or null/],
  ['an odd rope dim', 'base', (c) => (c.qk_rope_head_dim = 5), 'qk_rope_head_dim', /even/],
  ['a string rope_theta', 'base', (c) => (c.rope_theta = '10000'), 'rope_theta', /positive number/],
  ['a negative eps', 'base', (c) => (c.rms_norm_eps = -1e-6), 'rms_norm_eps', /positive number/],
  ['a string bool', 'base', (c) => (c.tie_word_embeddings = 'false'), 'tie_word_embeddings', /true or false/],
  ['another model_type', 'base', (c) => (c.model_type = 'deepseek_v3'), 'model_type', /"deepseek_v3".*mlactl-mla/],
  ['a newer format', 'base', (c) => (c.format = 'mlactl-mla/2'), 'format', /"mlactl-mla\/2".*mlactl-mla\/1/],
  ['an unknown variant', 'base', (c) => (c.variant = 'mla'), 'variant', /"mla".*baseline/],
  ['the half-split RoPE layout', 'base', (c) => (c.rope_layout = 'half-split'), 'rope_layout', /adjacent-pairs/],
  ['another activation', 'base', (c) => (c.hidden_act = 'gelu'), 'hidden_act', /silu/],
  ['another attention scale', 'base', (c) => (c.attention_scale = '1/sqrt(v_head_dim)'), 'attention_scale', /1\/sqrt\(qk_nope_head_dim \+ qk_rope_head_dim\)/],
  ['a string init range', 'base', (c) => (c.initializer_range = 'small'), 'initializer_range', /number/],
  ['qk_norm on a baseline model', 'base', (c) => (c.qk_norm = { scope: 'full', key_groups: 4, eps: 1e-6, applied: 'before-rope' }), 'qk_norm', /null.*baseline/],
  ['no qk_norm on a qk-norm model', 'qk', (c) => (c.qk_norm = null), 'qk_norm', /qk-norm/],
  ['qk_norm not an object', 'qk', (c) => (c.qk_norm = 'full'), 'qk_norm', /object/],
  ['key groups not dividing the heads', 'qk', (c) => (c.qk_norm.key_groups = 3), 'qk_norm.key_groups', /divide.*4/],
  ['zero key groups', 'qk', (c) => (c.qk_norm.key_groups = 0), 'qk_norm.key_groups', /positive integer/],
  ['an unknown scope', 'qk', (c) => (c.qk_norm.scope = 'rope'), 'qk_norm.scope', /full.*nope/],
  ['a zero qk eps', 'qk', (c) => (c.qk_norm.eps = 0), 'qk_norm.eps', /positive number/],
  ['QK-norm after RoPE', 'qk', (c) => (c.qk_norm.applied = 'after-rope'), 'qk_norm.applied', /before-rope/],
  ['an unknown tokenizer', 'base', (c) => (c.tokenizer.name = 'llama'), 'tokenizer.name', /byte.*gpt2/],
  ['a negative eos', 'base', (c) => (c.tokenizer.eos = -1), 'tokenizer.eos', /non-negative integer/],
  ['a numeric hash', 'base', (c) => (c.tokenizer.hash = 12), 'tokenizer.hash', /string/],
  ['a tokenizer that is a string', 'base', (c) => (c.tokenizer = 'byte'), 'tokenizer', /object or null/],
];

test.each(MISTYPED)('%s is refused naming the file and the key', (_case, which, edit, key, what) => {
  const dir = withConfig(which === 'qk' ? baseQk : base, (c) => void edit(c));
  const msg = refusal(dir);
  expect(msg.startsWith(`${path.join(dir, 'config.json')}: ${key}: `)).toBe(true);
  expect(msg).toMatch(what);
});

test.each([
  ['an array', '[1, 2]'],
  ['null', 'null'],
  ['not JSON', '{"model_type": '],
])('a config.json that is %s is refused naming the file', (_case, text) => {
  const dir = withConfig(base, () => text);
  expect(refusal(dir)).toMatch(new RegExp(`^${path.join(dir, 'config.json').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: `));
});

test('keys the format does not know (Hugging Face extras) are tolerated', () => {
  const dir = withConfig(base, (c) => ({ ...c, architectures: ['DeepseekV3ForCausalLM'], torch_dtype: 'float32' }));
  disposeParams(loadModel(dir).params);
});

test('specFromCheckpointConfig validates too (bench decode reads config.json through it)', () => {
  const cfg = JSON.parse(fs.readFileSync(path.join(base, 'config.json'), 'utf8')) as CheckpointConfigJson;
  expect(specFromCheckpointConfig(cfg).L).toBe(2);
  const { num_hidden_layers: _drop, ...rest } = cfg;
  expect(() => specFromCheckpointConfig(rest as CheckpointConfigJson, 'some/config.json')).toThrow(new UserError('some/config.json: num_hidden_layers: missing'));
});

describe('model.safetensors holds exactly the tensors of the table', () => {
  function withTensors(edit: (t: ReturnType<typeof loadSafetensors>['tensors']) => void): string {
    const dir = withConfig(base, () => undefined);
    const file = path.join(dir, 'model.safetensors');
    const { tensors, metadata } = loadSafetensors(file);
    edit(tensors);
    saveSafetensors(file, tensors, metadata);
    return dir;
  }

  test('an extra tensor is refused naming it', () => {
    const dir = withTensors((t) => (t['model.layers.0.self_attn.o_proj.bias'] = { shape: [24], data: new Float32Array(24) }));
    expect(refusal(dir)).toBe(`${path.join(dir, 'model.safetensors')}: unexpected tensor model.layers.0.self_attn.o_proj.bias (not in the checkpoint format's table for this config.json)`);
  });

  test('a layer beyond num_hidden_layers is refused', () => {
    const dir = withTensors((t) => (t['model.layers.2.input_layernorm.weight'] = { shape: [24], data: new Float32Array(24) }));
    expect(refusal(dir)).toMatch(/unexpected tensor model\.layers\.2\.input_layernorm\.weight/);
  });

  test('a tensor that is not F32 is refused naming it', () => {
    const dir = withTensors((t) => (t['model.norm.weight'] = { shape: [24], data: new Int32Array(24) }));
    expect(refusal(dir)).toBe(`${path.join(dir, 'model.safetensors')}: tensor model.norm.weight has dtype I32, expected F32`);
  });
});

describe('the tokenizer a checkpoint names (modelFolderInfo: every engine that encodes text for a model folder)', () => {
  test('the named tokenizer when its hash is this build\'s', () => {
    const dir = withConfig(base, (c) => void ((c.tokenizer as { hash: string }).hash = getTokenizer('byte').hash));
    const info = modelFolderInfo(dir);
    expect(info.tokenizer.name).toBe('byte');
    expect(info.spec.dq).toBe(6);
  });

  test('a different hash is refused naming config.json and the key: the ids would not match the model\'s', () => {
    // base was saved with hash "abc", not the byte tokenizer's.
    expect(() => modelFolderInfo(base)).toThrow(UserError);
    expect(() => modelFolderInfo(base)).toThrow(`${path.join(base, 'config.json')}: tokenizer.hash differs from this build's byte tokenizer`);
  });

  test('no tokenizer at all is refused: text cannot be encoded', () => {
    expect(() => modelFolderInfo(baseQk)).toThrow(`${path.join(baseQk, 'config.json')}: tokenizer is missing`);
  });
});
