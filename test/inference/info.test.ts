import * as path from 'path';
import { loadConfig } from '../../src/config/load';
import { flopsPerToken, formatModelInfo, humanBytes, modelInfo, parameterCounts } from '../../src/inference/info';
import { configSpec } from '../../src/model/spec';
import { tinySpec } from '../helpers';

const preset = (name: string) => path.resolve(__dirname, '../../configs/models', `${name}.yaml`);

describe('paper-400m', () => {
  const spec = configSpec(loadConfig(preset('paper-400m')));

  test('parameter counts equal the sum over its shapes, worked out by hand', () => {
    // d 1024, 24 layers, 16 heads, dc 256, dn 64, dr 32, dv 64, d_ff 2816, vocab 50304, untied, no query low-rank.
    const d = 1024, L = 24, H = 16, dc = 256, dn = 64, dr = 32, dv = 64, dff = 2816, V = 50304;
    const qProj = H * (dn + dr) * d; // 1,572,864
    const kvA = (dc + dr) * d; // 294,912
    const kvB = H * (dn + dv) * dc; // 524,288
    const oProj = d * H * dv; // 1,048,576
    const attentionPerLayer = qProj + kvA + kvB + oProj; // 3,440,640
    const mlpPerLayer = 3 * dff * d; // 8,650,752
    const normsPerLayer = d + dc + d; // input, kv_a, post-attention: 2,304
    const embedding = V * d; // 51,511,296
    const total = embedding + L * (attentionPerLayer + mlpPerLayer + normsPerLayer) + d + V * d;
    expect(total).toBe(393_272_320);

    const p = parameterCounts(spec);
    expect(p).toEqual({
      embedding,
      attention: L * attentionPerLayer,
      qk_norm: 0,
      mlp: L * mlpPerLayer,
      norms: L * normsPerLayer + d,
      head: V * d,
      total,
      non_embedding: total - 2 * embedding,
    });
    // The preset's comment promises about 390M.
    expect(Math.abs(p.total - 390e6) / 390e6).toBeLessThan(0.01);
  });

  test('decode cache bytes per token per layer and at 4k / 32k / 256k', () => {
    const info = modelInfo(spec, 2048);
    const bytes = Object.fromEntries(info.kv_cache.map((c) => [c.kind, c.bytes_per_token_per_layer]));
    expect(bytes).toEqual({ latent: 4 * (256 + 32), 'latent+invrms': 4 * (256 + 32 + 16), 'full-key': 4 * (16 * (64 + 32) + 256) });
    const latent = info.kv_cache.find((c) => c.kind === 'latent')!;
    expect(latent.applicable).toBe(true);
    expect(info.kv_cache.find((c) => c.kind === 'latent+invrms')!.applicable).toBe(false);
    // 1152 bytes x 24 layers x 4096 tokens = 108 MiB exactly.
    expect(latent.total_bytes).toEqual([
      { context: 4096, bytes: 1152 * 24 * 4096 },
      { context: 32768, bytes: 1152 * 24 * 32768 },
      { context: 262144, bytes: 1152 * 24 * 262144 },
    ]);
    expect(humanBytes(latent.total_bytes[0].bytes)).toBe('108 MiB');
    expect(formatModelInfo(info, 'paper-400m')).toContain('| total | 393272320 | 393.27M |');
  });

  test('qk-norm adds two weights of dn+dr per layer (or dn for scope nope), G numbers to its cache', () => {
    const qk = configSpec(loadConfig(preset('paper-400m'), ['model.variant=qk-norm', 'model.qk_norm.key_groups=4']));
    expect(parameterCounts(qk).qk_norm).toBe(24 * 2 * 96);
    expect(parameterCounts(qk).total).toBe(393_272_320 + 24 * 2 * 96);
    const nope = configSpec(loadConfig(preset('paper-400m'), ['model.variant=qk-norm', 'model.qk_norm.scope=nope']));
    expect(parameterCounts(nope).qk_norm).toBe(24 * 2 * 64);
    const caches = modelInfo(qk, 2048).kv_cache;
    expect(caches.find((c) => c.kind === 'latent+invrms')).toMatchObject({ applicable: true, numbers_per_token_per_layer: 256 + 32 + 4 });
    expect(caches.find((c) => c.kind === 'latent')!.applicable).toBe(false);
  });
});

test('FLOPs per token of a tiny model, by hand', () => {
  // d 24, L 2, H 4, dc 12, dn 6, dr 4, dv 5, dff 40, vocab 37, tied: the head matmul still runs on the embedding.
  const s = tinySpec({ tied: true, dq: 10 });
  const perLayerMatmulWeights = 10 * 24 + 4 * 10 * 10 + 16 * 24 + 4 * 11 * 12 + 24 * 20 + 3 * 40 * 24;
  const head = 37 * 24;
  const T = 16;
  const matmul = 2 * (2 * perLayerMatmulWeights + head);
  const attention = 2 * 2 * 4 * T * (6 + 4 + 5);
  expect(flopsPerToken(s, T)).toEqual({ seq_len: T, matmul, attention, forward: matmul + attention, training: 3 * (matmul + attention) });
  expect(parameterCounts(s).head).toBe(0);
  expect(parameterCounts(s).non_embedding).toBe(parameterCounts(s).total - 37 * 24);
});

test('vocab_size 0 is sized from the configured tokenizer', () => {
  const spec = configSpec(loadConfig(preset('tiny')));
  expect(spec.vocab).toBe(320); // byte tokenizer: 258 ids rounded up to a multiple of 64
});
