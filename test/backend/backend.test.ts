import { spawnSync } from 'child_process';
import * as path from 'path';
import { initBackend } from '../../src/backend';

const BIN = path.resolve(__dirname, '../../bin/run.js');

test('auto picks the first backend that starts and says why it skipped the others', async () => {
  const choice = await initBackend('auto');
  expect(['tensorflow', 'webgpu', 'wasm', 'cpu']).toContain(choice.name);
  expect(choice.reason).toMatch(/^auto: /);
  if (choice.name !== 'tensorflow') expect(choice.reason).toMatch(/tensorflow unavailable/);
  expect(choice.device.length).toBeGreaterThan(0);
});

test('a requested backend that cannot start is an error (exit 2, one line), never a silent fallback', () => {
  let hasNative = true;
  try {
    require.resolve('@tensorflow/tfjs-node');
  } catch {
    hasNative = false;
  }
  if (hasNative) return; // nothing to refuse on a machine where libtensorflow installed
  const r = spawnSync(process.execPath, [BIN, 'verify', '--config', path.resolve(__dirname, '../../configs/models/tiny.yaml'), '--backend', 'tensorflow'], { encoding: 'utf8' });
  expect(r.status).toBe(2);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(/backend tensorflow cannot start/);
});
