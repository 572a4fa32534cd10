import { UserError } from '../../src/errors';
import { learningRate } from '../../src/optim/schedule';

// lr 1e-3, floor 1e-4; 100 steps, 10 of them warmup.
const cosine = { lr: 1e-3, min_lr_ratio: 0.1, schedule: 'cosine' as const, decay_fraction: 0.2 };
const wsd = { ...cosine, schedule: 'wsd' as const };
const T = 100;
const W = 10;

describe('learningRate', () => {
  it('warms up linearly from lr/W to lr over steps 0..W-1', () => {
    expect(learningRate(0, T, W, cosine)).toBeCloseTo(1e-4, 15);
    expect(learningRate(4, T, W, cosine)).toBeCloseTo(5e-4, 15);
    expect(learningRate(9, T, W, cosine)).toBeCloseTo(1e-3, 15);
    expect(learningRate(4, T, W, wsd)).toBeCloseTo(5e-4, 15);
  });

  it('cosine: half way down at the midpoint of the decay, the floor on the last step and after', () => {
    // step 10 is s = 11: progress 1/90.
    expect(learningRate(10, T, W, cosine)).toBeCloseTo(1e-4 + 9e-4 * (1 + Math.cos(Math.PI / 90)) / 2, 15);
    // step 54 is s = 55: progress 45/90 = 0.5, cos = 0.
    expect(learningRate(54, T, W, cosine)).toBeCloseTo(5.5e-4, 15);
    expect(learningRate(99, T, W, cosine)).toBeCloseTo(1e-4, 15);
    expect(learningRate(150, T, W, cosine)).toBeCloseTo(1e-4, 15);
  });

  it('cosine decreases monotonically after warmup', () => {
    for (let step = W; step < T - 1; step++) {
      expect(learningRate(step + 1, T, W, cosine)).toBeLessThan(learningRate(step, T, W, cosine));
    }
  });

  it('wsd: constant lr until the last decay_fraction of steps, then linear to the floor', () => {
    expect(learningRate(10, T, W, wsd)).toBe(1e-3);
    expect(learningRate(79, T, W, wsd)).toBe(1e-3); // s = 80 = T - 0.2 T
    expect(learningRate(80, T, W, wsd)).toBeCloseTo(1e-3 - 9e-4 / 20, 15);
    expect(learningRate(89, T, W, wsd)).toBeCloseTo(5.5e-4, 15); // half of the 20 decay steps done
    expect(learningRate(99, T, W, wsd)).toBeCloseTo(1e-4, 15);
    expect(learningRate(120, T, W, wsd)).toBeCloseTo(1e-4, 15);
  });

  it('wsd: decay never starts inside warmup, and decay_fraction 0 never decays', () => {
    const allDecay = { ...wsd, decay_fraction: 1 };
    expect(learningRate(9, T, W, allDecay)).toBeCloseTo(1e-3, 15);
    expect(learningRate(54, T, W, allDecay)).toBeCloseTo(1e-3 - 9e-4 * 0.5, 15); // s = 55: 45 of 90
    expect(learningRate(99, T, W, { ...wsd, decay_fraction: 0 })).toBe(1e-3);
  });

  it('without warmup the first step already follows the decay', () => {
    expect(learningRate(0, T, 0, cosine)).toBeCloseTo(1e-4 + 9e-4 * (1 + Math.cos(Math.PI / 100)) / 2, 15);
    expect(learningRate(0, T, 0, wsd)).toBe(1e-3);
  });

  it('warmup longer than the run is cut at the run length', () => {
    expect(learningRate(4, 5, 50, cosine)).toBeCloseTo(1e-3, 15);
    expect(learningRate(0, 5, 50, cosine)).toBeCloseTo(2e-4, 15);
  });

  it('refuses invalid settings with the key named', () => {
    expect(() => learningRate(0, T, W, { ...cosine, min_lr_ratio: 1.5 })).toThrow(UserError);
    expect(() => learningRate(0, T, W, { ...cosine, min_lr_ratio: 1.5 })).toThrow(/min_lr_ratio/);
    expect(() => learningRate(50, T, W, { ...wsd, decay_fraction: -0.1 })).toThrow(/decay_fraction/);
    expect(() => learningRate(50, T, W, { ...cosine, schedule: 'linear' as never })).toThrow(/train\.schedule/);
    expect(() => learningRate(0, 0, 0, cosine)).toThrow(UserError);
    expect(() => learningRate(-1, T, W, cosine)).toThrow(/0-based/);
  });
});
