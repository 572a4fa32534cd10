import { assignParam } from '../../src/optim/groups';

const hidden: Array<[string, number[]]> = [
  ['model.layers.0.self_attn.q_proj.weight', [48, 32]],
  ['model.layers.0.self_attn.q_a_proj.weight', [16, 32]],
  ['model.layers.0.self_attn.q_b_proj.weight', [48, 16]],
  ['model.layers.0.self_attn.kv_a_proj_with_mqa.weight', [20, 32]],
  ['model.layers.0.self_attn.kv_b_proj.weight', [64, 16]],
  ['model.layers.0.self_attn.o_proj.weight', [32, 32]],
  ['model.layers.11.mlp.gate_proj.weight', [96, 32]],
  ['model.layers.11.mlp.up_proj.weight', [96, 32]],
  ['model.layers.11.mlp.down_proj.weight', [32, 96]],
];
const norms: Array<[string, number[]]> = [
  ['model.layers.0.input_layernorm.weight', [32]],
  ['model.layers.0.post_attention_layernorm.weight', [32]],
  ['model.layers.0.self_attn.kv_a_layernorm.weight', [16]],
  ['model.layers.0.self_attn.q_a_layernorm.weight', [16]],
  ['model.layers.0.self_attn.q_norm.weight', [12]],
  ['model.layers.0.self_attn.k_norm.weight', [12]],
  ['model.norm.weight', [32]],
];
const embeddings: Array<[string, number[]]> = [
  ['model.embed_tokens.weight', [256, 32]],
  ['lm_head.weight', [256, 32]],
];

describe('assignParam', () => {
  it('with muon: hidden projections to Muon; embedding, head and norms to AdamW', () => {
    for (const [name, shape] of hidden) expect(assignParam(name, shape, 'muon')).toEqual({ opt: 'muon', weightDecay: true });
    for (const [name, shape] of embeddings) expect(assignParam(name, shape, 'muon')).toEqual({ opt: 'adamw', weightDecay: true });
    for (const [name, shape] of norms) expect(assignParam(name, shape, 'muon')).toEqual({ opt: 'adamw', weightDecay: false });
  });

  it('with adamw: everything AdamW, decay on matrices only', () => {
    for (const [name, shape] of [...hidden, ...embeddings]) {
      expect(assignParam(name, shape, 'adamw')).toEqual({ opt: 'adamw', weightDecay: true });
    }
    for (const [name, shape] of norms) expect(assignParam(name, shape, 'adamw')).toEqual({ opt: 'adamw', weightDecay: false });
  });

  it('refuses names that match no rule', () => {
    for (const name of [
      'model.layers.0.self_attn.q_proj.bias',
      'model.layers.0.self_attn.w_q.weight',
      'layers.0.mlp.gate_proj.weight',
      'model.layers.x.mlp.gate_proj.weight',
      'model.embed_tokens.weight.extra',
      'lm_head.weight ',
    ]) {
      expect(() => assignParam(name, [4, 4], 'adamw')).toThrow(/matches no optimizer group rule/);
    }
  });

  it('refuses Muon for a non-2-D weight and a rank that does not fit the name', () => {
    expect(() => assignParam('model.layers.0.mlp.gate_proj.weight', [4, 3, 2], 'muon')).toThrow(/Muon needs a 2-D weight/);
    expect(() => assignParam('model.layers.0.mlp.gate_proj.weight', [12], 'muon')).toThrow(/gate_proj/);
    expect(() => assignParam('model.norm.weight', [4, 4], 'adamw')).toThrow(/expected rank 1/);
    expect(() => assignParam('model.embed_tokens.weight', [64], 'muon')).toThrow(/expected rank 2/);
  });

  it('refuses an unknown optimizer', () => {
    expect(() => assignParam('model.norm.weight', [4], 'sgd' as never)).toThrow(/unknown optimizer/);
  });
});
