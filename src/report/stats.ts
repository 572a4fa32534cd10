// Small numeric helpers for comparing runs: seed aggregation and alignment of curves by tokens seen.

/** Mean ± sample standard deviation over the seeds that have a value; std is null with fewer than two values. */
export interface Aggregate {
  mean: number | null;
  std: number | null;
  count: number;
}

export function aggregate(values: (number | null | undefined)[]): Aggregate {
  const finite = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  const count = finite.length;
  if (count === 0) return { mean: null, std: null, count: 0 };
  const mean = finite.reduce((a, b) => a + b, 0) / count;
  if (count < 2) return { mean, std: null, count };
  // n - 1: the seeds are a sample of the seed distribution, and the spread is what a new seed would show.
  const variance = finite.reduce((a, v) => a + (v - mean) ** 2, 0) / (count - 1);
  return { mean, std: Math.sqrt(variance), count };
}

/** Mean ± standard error of the mean over seeds: how well the mean itself is known, which is what a curve of means needs. */
export interface MeanWithError {
  mean: number | null;
  /** std / sqrt(n); null with fewer than two values. */
  stderr: number | null;
  n: number;
}

export function meanWithError(values: (number | null | undefined)[]): MeanWithError {
  const { mean, std, count } = aggregate(values);
  return { mean, stderr: std === null ? null : std / Math.sqrt(count), n: count };
}

export interface Point {
  tokens: number;
  value: number;
}

/** Points with a finite value, sorted by tokens; a repeated token count keeps its last value (a resumed run re-logs). */
export function cleanSeries(points: { tokens: number; value: number | null }[]): Point[] {
  const byTokens = new Map<number, number>();
  for (const p of points) {
    if (p.value !== null && Number.isFinite(p.value) && Number.isFinite(p.tokens)) byTokens.set(p.tokens, p.value);
  }
  return [...byTokens.entries()].sort((a, b) => a[0] - b[0]).map(([tokens, value]) => ({ tokens, value }));
}

/**
 * Linear interpolation at `tokens` on a sorted series; null outside the logged range, so a run is never credited
 * with a value at a token count it did not reach.
 */
export function interpolateAt(series: Point[], tokens: number): number | null {
  if (series.length === 0) return null;
  if (tokens < series[0].tokens || tokens > series[series.length - 1].tokens) return null;
  let lo = 0, hi = series.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (series[mid].tokens <= tokens) lo = mid; else hi = mid;
  }
  const a = series[lo], b = series[hi];
  if (a.tokens === tokens) return a.value;
  if (b.tokens === tokens) return b.value;
  const t = (tokens - a.tokens) / (b.tokens - a.tokens);
  return a.value + t * (b.value - a.value);
}

/**
 * Exponential moving average whose memory is measured in tokens, not log lines, so runs logged at different
 * step intervals or batch sizes are smoothed alike. Debiased (weights renormalised) so the start is not pulled
 * towards zero.
 */
export function tokenEma(series: Point[], timeConstantTokens: number): Point[] {
  if (timeConstantTokens <= 0) return series.slice();
  const out: Point[] = [];
  let weightedSum = 0, weightTotal = 0, previousTokens = series.length > 0 ? series[0].tokens : 0;
  for (const p of series) {
    const decay = Math.exp(-(p.tokens - previousTokens) / timeConstantTokens);
    weightedSum = weightedSum * decay + p.value;
    weightTotal = weightTotal * decay + 1;
    previousTokens = p.tokens;
    out.push({ tokens: p.tokens, value: weightedSum / weightTotal });
  }
  return out;
}

/**
 * Mean over several runs' series on the union of their token positions. At each position only the runs whose
 * logged range covers it contribute (interpolated), so a seed that stopped early ends its share there.
 */
export function meanCurve(seriesList: Point[][]): { tokens: number; mean: number; count: number }[] {
  const positions = [...new Set(seriesList.flatMap((s) => s.map((p) => p.tokens)))].sort((a, b) => a - b);
  const out: { tokens: number; mean: number; count: number }[] = [];
  for (const tokens of positions) {
    const values = seriesList.map((s) => interpolateAt(s, tokens)).filter((v): v is number => v !== null);
    if (values.length > 0) out.push({ tokens, mean: values.reduce((a, b) => a + b, 0) / values.length, count: values.length });
  }
  return out;
}

/** Every k-th point (always keeping the last) so plots stay small for long runs. */
export function thin<T>(items: T[], maxItems: number): T[] {
  if (items.length <= maxItems) return items;
  const stride = Math.ceil(items.length / maxItems);
  const out = items.filter((_, i) => i % stride === 0);
  if (out[out.length - 1] !== items[items.length - 1]) out.push(items[items.length - 1]);
  return out;
}
