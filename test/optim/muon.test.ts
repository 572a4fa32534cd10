import * as tf from '@tensorflow/tfjs';
import { muonStep, muonUpdateScale, newtonSchulz5 } from '../../src/optim/muon';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

type Matrix = number[][];

/** Deterministic standard normals (mulberry32 + Box-Muller), so the test matrices never change. */
function gaussianMatrix(rows: number, cols: number, seed: number): Matrix {
  let state = seed >>> 0;
  const uniform = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return Array.from({ length: rows }, () =>
    Array.from({ length: cols }, () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform())),
  );
}

const transpose = (A: Matrix): Matrix => A[0].map((_, j) => A.map((row) => row[j]));
const matMul = (A: Matrix, B: Matrix): Matrix => A.map((row) => B[0].map((_, j) => row.reduce((s, x, k) => s + x * B[k][j], 0)));
const combine = (alpha: number, A: Matrix, beta: number, B: Matrix): Matrix => A.map((row, i) => row.map((x, j) => alpha * x + beta * B[i][j]));
const flat = (A: Matrix): number[] => A.flat();

/** The Newton-Schulz iteration of design/mla-math.md §7 in float64, written independently of the tensor code. */
function newtonSchulzReference(G: Matrix, steps = 5): Matrix {
  const [a, b, c] = [3.4445, -4.775, 2.0315];
  const tall = G.length > G[0].length;
  let X = tall ? transpose(G) : G;
  const frobenius = Math.sqrt(flat(X).reduce((s, x) => s + x * x, 0));
  X = X.map((row) => row.map((x) => x / (frobenius + 1e-7)));
  for (let i = 0; i < steps; i++) {
    const A = matMul(X, transpose(X));
    const B = combine(b, A, c, matMul(A, A));
    X = combine(a, X, 1, matMul(B, X));
  }
  return tall ? transpose(X) : X;
}

/** Singular values via cyclic Jacobi on the smaller Gram matrix, in float64. */
function singularValues(M: Matrix): number[] {
  const S = M.length <= M[0].length ? matMul(M, transpose(M)) : matMul(transpose(M), M);
  const n = S.length;
  const A = S.map((row) => row.slice());
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += A[p][q] ** 2;
    if (off < 1e-30) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        if (Math.abs(A[p][q]) < 1e-300) continue;
        const theta = (A[q][q] - A[p][p]) / (2 * A[p][q]);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const cs = 1 / Math.sqrt(t * t + 1);
        const sn = t * cs;
        for (let k = 0; k < n; k++) {
          const akp = A[k][p];
          const akq = A[k][q];
          A[k][p] = cs * akp - sn * akq;
          A[k][q] = sn * akp + cs * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = A[p][k];
          const aqk = A[q][k];
          A[p][k] = cs * apk - sn * aqk;
          A[q][k] = sn * apk + cs * aqk;
        }
      }
    }
  }
  return A.map((row, i) => Math.sqrt(Math.max(0, row[i]))).sort((x, y) => x - y);
}

function maxAbsDiff(actual: ArrayLike<number>, expected: number[]): number {
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  return worst;
}

describe('newtonSchulz5', () => {
  it('the Jacobi helper recovers known singular values', () => {
    expect(singularValues([[3, 0, 0], [0, 0.5, 0]])).toEqual([expect.closeTo(0.5, 12), expect.closeTo(3, 12)]);
  });

  it('on c*I applies the scalar quintic five times to 1/sqrt(n), by hand', () => {
    const n = 4;
    const G = tf.mul(tf.eye(n), 3) as tf.Tensor2D;
    const O = newtonSchulz5(G);
    let x = 3 / (Math.sqrt(n * 9) + 1e-7);
    for (let i = 0; i < 5; i++) x = 3.4445 * x - 4.775 * x ** 3 + 2.0315 * x ** 5;
    const expected = flat(Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? x : 0))));
    expect(maxAbsDiff(O.dataSync(), expected)).toBeLessThan(1e-5);
    tf.dispose([G, O]);
  });

  it.each([
    [6, 10, 1],
    [12, 5, 2],
    [7, 7, 3],
  ])('on a %ix%i Gaussian matrix matches the float64 loop within 1e-4 and pushes singular values into 0.7..1.2', (rows, cols, seed) => {
    const G64 = gaussianMatrix(rows, cols, seed);
    const inputSingular = singularValues(G64);
    const frobenius = Math.sqrt(flat(G64).reduce((s, x) => s + x * x, 0));
    // The normalised input is far from orthogonal, so reaching 0.7..1.2 is the iteration's doing.
    expect(inputSingular[0] / frobenius).toBeLessThan(0.3);
    const reference = newtonSchulzReference(G64);
    const G = tf.tensor2d(G64);
    const O = newtonSchulz5(G);
    expect(O.shape).toEqual([rows, cols]);
    expect(maxAbsDiff(O.dataSync(), flat(reference))).toBeLessThan(1e-4);
    const outputSingular = singularValues(O.arraySync());
    expect(outputSingular[0]).toBeGreaterThan(0.7);
    expect(outputSingular[outputSingular.length - 1]).toBeLessThan(1.2);
    tf.dispose([G, O]);
  });

  it('maps a zero matrix to zeros and keeps no temporaries', () => {
    const G = tf.zeros([3, 5]) as tf.Tensor2D;
    const before = tf.memory().numTensors;
    const O = newtonSchulz5(G);
    expect(tf.memory().numTensors).toBe(before + 1);
    expect(Array.from(O.dataSync()).every((x) => x === 0)).toBe(true);
    tf.dispose([G, O]);
  });
});

describe('muonStep', () => {
  it('scales by 0.2 * sqrt(max(rows, cols))', () => {
    expect(muonUpdateScale(6, 10)).toBeCloseTo(0.2 * Math.sqrt(10), 15);
    expect(muonUpdateScale(16, 4)).toBeCloseTo(0.8, 15);
  });

  const hp = { lr: 0.02, momentum: 0.95, weightDecay: 0.1 };

  it.each([true, false])('matches momentum, NS5, scale and decoupled decay in float64 (nesterov=%s)', (nesterov) => {
    const [rows, cols] = [8, 5];
    const p64 = gaussianMatrix(rows, cols, 11);
    const g64 = gaussianMatrix(rows, cols, 12);
    const m64 = gaussianMatrix(rows, cols, 13);
    const mNext = combine(hp.momentum, m64, 1, g64);
    const direction = nesterov ? combine(1, g64, hp.momentum, mNext) : mNext;
    const O = newtonSchulzReference(direction);
    const scale = 0.2 * Math.sqrt(8);
    const pNext = combine(1 - hp.lr * hp.weightDecay, p64, -hp.lr * scale, O);

    const [p, g, m] = [p64, g64, m64].map((x) => tf.tensor2d(x));
    const out = muonStep(p, g, m, { ...hp, nesterov });
    expect(maxAbsDiff(out.m.dataSync(), flat(mNext))).toBeLessThan(1e-5);
    // NS5 agrees to 1e-4, times lr * scale ~ 0.011.
    expect(maxAbsDiff(out.p.dataSync(), flat(pNext))).toBeLessThan(1e-5);
    tf.dispose([p, g, m, out.p, out.m]);
  });

  it('gives an update whose RMS is about 0.2 * lr, whatever the matrix size', () => {
    for (const [rows, cols] of [[16, 16], [32, 8], [4, 64]]) {
      const p = tf.zeros([rows, cols]);
      const g = tf.tensor2d(gaussianMatrix(rows, cols, rows + cols));
      const m = tf.zeros([rows, cols]);
      const out = muonStep(p, g, m, { lr: 1, momentum: 0.9, weightDecay: 0 });
      const rms = Math.sqrt(tf.mean(tf.square(out.p)).dataSync()[0]);
      expect(rms).toBeGreaterThan(0.2 * 0.7);
      expect(rms).toBeLessThan(0.2 * 1.2);
      tf.dispose([p, g, m, out.p, out.m]);
    }
  });

  it('refuses non-2-D parameters', () => {
    const v = tf.zeros([4]);
    expect(() => muonStep(v, v, v, hp)).toThrow(/2-D/);
    v.dispose();
  });

  it('keeps no temporaries', () => {
    const [p, g, m] = [1, 2, 3].map((s) => tf.tensor2d(gaussianMatrix(4, 6, s)));
    const before = tf.memory().numTensors;
    const out = muonStep(p, g, m, hp);
    expect(tf.memory().numTensors).toBe(before + 2);
    tf.dispose([p, g, m, out.p, out.m]);
  });
});
