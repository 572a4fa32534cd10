// The torch engine's own unit tests (python/tests: the model against a float64 NumPy reference, optimizers against
// hand-written formulas, the batch order against this engine's, checkpoints, resume, signals, two gloo processes)
// run as part of `npm test`, so one command tests both engines.
import { spawnSync } from 'child_process';
import { findTorch, PYTHON_PACKAGE_DIR } from '../../src/engine/torch';

test('python -m unittest discover (python/tests) passes', () => {
  const found = findTorch({ engine: { name: 'torch', python: '', gpus: 1, precision: 'auto', compile: 'auto', threads: 0, device: 'auto' } });
  expect('reasons' in found ? found.reasons : []).toEqual([]);
  if (!('probe' in found)) return;
  const r = spawnSync(found.probe.python, ['-m', 'unittest', 'discover', '-s', 'tests'], {
    cwd: PYTHON_PACKAGE_DIR,
    encoding: 'utf8',
    env: { ...process.env, OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1' },
    timeout: 600_000,
  });
  const summary = r.stderr.trim().split('\n').slice(-3).join('\n');
  if (r.status !== 0) process.stderr.write(r.stderr);
  expect(summary).toMatch(/^OK/m);
  expect(summary).toMatch(/Ran \d+ tests/);
  expect(r.status).toBe(0);
}, 600_000);
