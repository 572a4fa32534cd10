// Restructuring and fixes must not move a single bit of training: every logged loss of the `tiny` preset, for each
// variant and optimizer, equals the value recorded by the commit named in the fixture (wasm backend).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { initBackend } from '../../src/backend';
import { loadConfig } from '../../src/config/load';
import { readMetrics } from '../../src/runfolder/metrics';
import { trainRun } from '../../src/train/run';

const ROOT = path.resolve(__dirname, '../..');
const TINY = path.join(ROOT, 'configs/models/tiny.yaml');
const recorded = JSON.parse(fs.readFileSync(path.join(__dirname, '../fixtures/recorded-losses.json'), 'utf8')) as {
  recorded_at_commit: string;
  arms: Record<string, { set: string[]; steps: [number, number | null, number][] }>;
};

beforeAll(async () => {
  await initBackend('wasm');
});

describe(`tiny preset losses equal those recorded at ${recorded.recorded_at_commit.slice(0, 7)}`, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-recorded-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test.each(Object.keys(recorded.arms))('%s', async (arm) => {
    const { set, steps } = recorded.arms[arm];
    const cfg = loadConfig(TINY, ['backend=wasm', 'train.tokens=2048', ...set]);
    const r = await trainRun({ config: cfg, runDir: path.join(dir, arm) });
    const got = readMetrics(r.runDir).map((m) => [m.train_loss, m.val_loss, m.heads_clipped]);
    expect(got).toEqual(steps);
  });
});
