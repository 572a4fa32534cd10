// QK-norm with fewer key groups than heads (G = 1 is the cheapest cache of QK-Normed MLA) must train: every G that
// divides H, both scopes, with and without the query low-rank path.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { initBackend } from '../../src/backend';
import { loadConfig } from '../../src/config/load';
import { readMetrics } from '../../src/runfolder/metrics';
import { trainRun } from '../../src/train/run';

const TINY = path.resolve(__dirname, '../../configs/models/tiny.yaml');

beforeAll(async () => {
  await initBackend('wasm');
});

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-groups-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const cases: [number, string, number][] = [];
for (const G of [1, 2, 4]) for (const scope of ['full', 'nope']) for (const dq of [0, 16]) cases.push([G, scope, dq]);

test.each(cases)('key_groups %i, scope %s, q_lora_rank %i: trains and the loss falls', async (G, scope, dq) => {
  const cfg = loadConfig(TINY, [
    'backend=wasm', 'model.variant=qk-norm', `model.qk_norm.key_groups=${G}`, `model.qk_norm.scope=${scope}`,
    `model.q_lora_rank=${dq}`, 'train.tokens=1536', 'train.lr=1e-2', 'train.eval_every_tokens=0',
  ]);
  const r = await trainRun({ config: cfg, runDir: path.join(dir, `g${G}-${scope}-${dq}`) });
  expect(r.summary.status).toBe('completed');
  const losses = readMetrics(r.runDir).map((m) => m.train_loss);
  expect(losses).toHaveLength(12);
  expect(losses.every(Number.isFinite)).toBe(true);
  expect(losses[losses.length - 1]).toBeLessThan(losses[0] - 0.3);
});
