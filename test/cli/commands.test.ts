// The single-file bundle finds commands through src/cli/commands.ts, not oclif's glob of dist/commands: a command
// file missing from that table would exist in `bin/run.js` and silently vanish from the GPU bundle.
import * as fs from 'fs';
import * as path from 'path';
import { COMMANDS, resolveCommand } from '../../src/cli/commands';
import { loadConfig } from '../../src/config/load';
import { modelSpec } from '../../src/model/spec';
import { checkTensorSizes } from '../../src/engine/tfjs/train';

function commandIds(dir: string, prefix: string[] = []): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (e.isDirectory()) return commandIds(path.join(dir, e.name), [...prefix, e.name]);
    if (!e.name.endsWith('.ts')) return [];
    const name = e.name.replace(/\.ts$/, '');
    return [[...prefix, ...(name === 'index' ? [] : [name])].join(':')];
  });
}

test('the bundle command table lists every command file, with its class', () => {
  const ids = commandIds(path.join(__dirname, '..', '..', 'src', 'commands')).sort();
  expect(Object.keys(COMMANDS).sort()).toEqual(ids);
  for (const id of ids) {
    const file = path.join(__dirname, '..', '..', 'src', 'commands', ...id.split(':')) + '.ts';
    expect(COMMANDS[id]).toBe(require(file).default);
  }
});

test('argv words resolve to a command id, the longest match first', () => {
  expect(resolveCommand(['bench', 'decode', '--contexts', '1k'])).toEqual({ id: 'bench:decode', rest: ['--contexts', '1k'] });
  expect(resolveCommand(['train', '-c', 'x.yaml'])).toEqual({ id: 'train', rest: ['-c', 'x.yaml'] });
  expect(resolveCommand(['model'])).toBeUndefined();
  expect(resolveCommand(['nope', 'x'])).toBeUndefined();
});

test('a micro-batch whose attention scores exceed the backend binding limit is refused with the key and a size that fits', () => {
  const cfg = loadConfig(path.join(__dirname, '..', '..', 'configs', 'models', 'paper-400m.yaml'));
  const spec = modelSpec(cfg.model, 50304);
  const limit = 2147483644; // WebGPU's maxStorageBufferBindingSize on the lent H100
  // paper-400m: 64 sequences x 16 heads x 2048 x 2048 scores x 4 bytes = 16 GiB; 7 sequences (1.75 GiB) fit.
  expect(() => checkTensorSizes(cfg, spec, 'webgpu', limit)).toThrow(/^train\.batch_size: 64 sequences of 2048 tokens make a 16\.00 GiB activation .* use train\.batch_size <= 7 /);
  expect(() => checkTensorSizes({ ...cfg, train: { ...cfg.train, batch_size: 7 } }, spec, 'webgpu', limit)).not.toThrow();
  // The logits no longer count: gpu-small at 32 x 512 (3.1 GiB of logits, 0.27 GiB of scores) is accepted.
  const small = loadConfig(path.join(__dirname, '..', '..', 'configs', 'models', 'gpu-small.yaml'), ['train.batch_size=32']);
  expect(() => checkTensorSizes(small, modelSpec(small.model, 50304), 'webgpu', limit)).not.toThrow();
  expect(() => checkTensorSizes(cfg, spec, 'wasm', undefined)).not.toThrow(); // no limit known: nothing to check
});

test('evaluation lowers its scoring batch to what the binding limit holds instead of failing', () => {
  const { fittingBatch } = require('../../src/inference/scoring') as typeof import('../../src/inference/scoring');
  // paper-400m on WebGPU: 16 x 2048 x 50304 floats would be 6.1 GiB; 5 sequences (1.9 GiB) fit in 2 GiB.
  expect(fittingBatch(16, 2048, 50304, 2147483644)).toBe(5);
  expect(fittingBatch(16, 128, 320, 2147483644)).toBe(16); // small models keep the configured batch
  expect(fittingBatch(16, 2048, 50304, undefined)).toBe(16); // no limit known (cpu, wasm, tensorflow)
  expect(fittingBatch(16, 1 << 20, 50304, 2147483644)).toBe(1); // never below one sequence
});
