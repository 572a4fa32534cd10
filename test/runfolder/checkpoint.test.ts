import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { loadModel, saveModel } from '../../src/engine/tfjs/checkpoint';
import { disposeParams, paramInfos } from '../../src/model/params';
import { randomParams, tinySpec } from '../helpers';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

test('a checkpoint round-trips bit-exactly and its bytes follow the safetensors layout', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-ckpt-'));
  const s = tinySpec({ variant: 'qk-norm', G: 2, dq: 6 });
  const P = randomParams(s, 2);
  await saveModel(dir, P, s, { name: 'byte', hash: 'abc', eos: 256 });

  // Parse the file by hand, independently of the reader: u64 LE header size, JSON header, aligned data.
  const raw = fs.readFileSync(path.join(dir, 'model.safetensors'));
  const n = Number(raw.readBigUInt64LE(0));
  expect((8 + n) % 8).toBe(0);
  const header = JSON.parse(raw.subarray(8, 8 + n).toString());
  const q = header['model.layers.1.self_attn.q_b_proj.weight'];
  expect(q.dtype).toBe('F32');
  expect(q.shape).toEqual([s.H * (s.dn + s.dr), s.dq]); // PyTorch [out, in]
  const [a] = q.data_offsets;
  const first = raw.readFloatLE(8 + n + a);
  expect(first).toBe(P['model.layers.1.self_attn.q_b_proj.weight'].dataSync()[0]);
  expect(Object.keys(header).filter((k) => k !== '__metadata__').sort()).toEqual(paramInfos(s).map((p) => p.name).sort());
  expect(header['model.layers.0.self_attn.k_norm.weight'].shape).toEqual([s.dn + s.dr]);

  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  expect(cfg).toMatchObject({ q_lora_rank: 6, kv_lora_rank: s.dc, rope_layout: 'adjacent-pairs', qk_norm: { scope: 'full', key_groups: 2 } });

  const loaded = loadModel(dir);
  expect(loaded.spec).toEqual(s);
  for (const p of paramInfos(s)) expect(Array.from(loaded.params[p.name].dataSync())).toEqual(Array.from(P[p.name].dataSync()));
  disposeParams(P);
  disposeParams(loaded.params);
});

test('a checkpoint with a missing or misshapen tensor is refused naming the tensor', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-ckpt-'));
  const s = tinySpec();
  const P = randomParams(s, 2);
  await saveModel(dir, P, s, null);
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, kv_lora_rank: cfg.kv_lora_rank + 1 }));
  expect(() => loadModel(dir)).toThrow(/kv_a_proj_with_mqa.weight has shape/);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, variant: 'qk-norm', qk_norm: { scope: 'full', key_groups: 4, eps: 1e-6 } }));
  expect(() => loadModel(dir)).toThrow(/missing tensor model.layers.0.self_attn.q_norm.weight/);
  disposeParams(P);
});
