// Which optimizer updates each parameter, and whether it is weight-decayed. Names are Hugging Face DeepSeek-V3 names.
//
// Weight decay: every 2-D matrix is decayed (hidden projections, the token embedding and the output head); 1-D norm
// gains are not. Decay pulls a weight toward 0. For a matrix that only bounds its scale, which keeps attention and
// output logits from drifting upward over a long run; the embedding and head take part because output-logit growth
// lands there first. For a norm gain 0 is not a neutral value: the gain starts at 1, and decaying it shrinks every
// activation it scales, which the next layer must then undo. This is the nanoGPT / torchtitan convention.
//
// Muon updates only the hidden 2-D projections. The embedding is a lookup table (each row sees a sparse gradient,
// so orthogonalising the whole matrix mixes unrelated tokens) and the head's rows are per-token output directions;
// Muon's authors keep both on AdamW, and norm gains are vectors, which Muon cannot orthogonalise.

export type OptimizerName = 'adamw' | 'muon';

export interface ParamAssignment {
  opt: OptimizerName;
  weightDecay: boolean;
}

type ParamKind = 'hidden' | 'embedding' | 'head' | 'norm';

interface ParamRule {
  kind: ParamKind;
  pattern: RegExp;
  rank: number;
}

const LAYER = String.raw`model\.layers\.\d+`;

/** Every parameter the model may have; a name matching none of these is a bug and is refused. */
export const PARAM_RULES: readonly ParamRule[] = [
  { kind: 'embedding', pattern: /^model\.embed_tokens\.weight$/, rank: 2 },
  { kind: 'head', pattern: /^lm_head\.weight$/, rank: 2 },
  {
    kind: 'hidden',
    pattern: new RegExp(
      `^${LAYER}\\.(self_attn\\.(q_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)|mlp\\.(gate_proj|up_proj|down_proj))\\.weight$`,
    ),
    rank: 2,
  },
  { kind: 'norm', pattern: /^model\.norm\.weight$/, rank: 1 },
  {
    kind: 'norm',
    pattern: new RegExp(
      `^${LAYER}\\.(input_layernorm|post_attention_layernorm|self_attn\\.(q_a_layernorm|kv_a_layernorm|q_norm|k_norm))\\.weight$`,
    ),
    rank: 1,
  },
];

/** Throws (a programming error, not user input) for an unknown name, a shape of the wrong rank, or an unknown optimizer. */
export function assignParam(name: string, shape: readonly number[], optimizer: OptimizerName): ParamAssignment {
  if (optimizer !== 'adamw' && optimizer !== 'muon') {
    throw new Error(`assignParam: unknown optimizer '${String(optimizer)}' for parameter ${name}`);
  }
  const rule = PARAM_RULES.find((r) => r.pattern.test(name));
  if (rule === undefined) throw new Error(`assignParam: parameter ${name} matches no optimizer group rule`);
  if (shape.length !== rule.rank) {
    const what = optimizer === 'muon' && rule.kind === 'hidden' ? 'Muon needs a 2-D weight' : `expected rank ${rule.rank}`;
    throw new Error(`assignParam: parameter ${name} has shape [${shape.join(', ')}]; ${what}`);
  }
  return {
    opt: optimizer === 'muon' && rule.kind === 'hidden' ? 'muon' : 'adamw',
    weightDecay: rule.rank === 2,
  };
}
