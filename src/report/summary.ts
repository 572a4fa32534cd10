// The generated summary: sentences that restate what the numbers show and claim nothing beyond them.
import type { ArmGroup } from './groups';
import { formatLogit, formatStatuses, formatTokens } from './tables';

function fmt(value: number, digits = 4): string {
  return value.toFixed(digits);
}

function ranking(groups: ArmGroup[]): string[] {
  const ranked = groups.filter((g) => !g.partial && g.finalValLoss.mean !== null)
    .sort((a, b) => (a.finalValLoss.mean as number) - (b.finalValLoss.mean as number));
  const unranked = groups.filter((g) => !ranked.includes(g));
  const lines: string[] = [];
  if (ranked.length === 0) {
    lines.push('No arm group has a completed run with a final validation loss, so none is ranked.');
  } else if (ranked.length === 1) {
    const only = ranked[0];
    lines.push(`Only ${only.label} has a completed run with a final validation loss (${fmt(only.finalValLoss.mean as number)}, n=${only.finalValLoss.count}).`);
  } else {
    const [best, next] = ranked;
    const bestLoss = best.finalValLoss, nextLoss = next.finalValLoss;
    const gap = (nextLoss.mean as number) - (bestLoss.mean as number);
    let spread: string;
    if (bestLoss.count < 2 || nextLoss.count < 2) {
      const single = [best, next].filter((g) => g.finalValLoss.count < 2).map((g) => g.label).join(' and ');
      spread = `${single} ${single.includes(' and ') ? 'have' : 'has'} one seed, so the seed spread is unknown.`;
    } else {
      const largestStd = Math.max(bestLoss.std as number, nextLoss.std as number);
      spread = gap > largestStd
        ? `The gap is larger than the seed spread (largest std ${fmt(largestStd)}).`
        : `The gap is within the seed spread (largest std ${fmt(largestStd)}).`;
    }
    lines.push(`${best.label} has the lowest final validation loss (${fmt(bestLoss.mean as number)}, n=${bestLoss.count}); `
      + `the next, ${next.label}, is ${fmt(gap)} higher (${fmt(nextLoss.mean as number)}, n=${nextLoss.count}). ${spread}`);
  }
  if (unranked.length > 0) {
    lines.push(`Not ranked (no completed run with a validation loss): ${unranked.map((g) => `${g.label} (${formatStatuses(g)})`).join('; ')}.`);
  }
  return lines;
}

function statusLines(groups: ArmGroup[]): string[] {
  const runs = groups.flatMap((g) => g.runs.map((r) => ({ r, g })));
  const diverged = runs.filter(({ r }) => r.status === 'diverged');
  const lines: string[] = [];
  if (diverged.length === 0) {
    lines.push(`No run diverged (${runs.length} run${runs.length === 1 ? '' : 's'}).`);
  } else {
    const list = diverged.map(({ r, g }) => {
      const at = r.run.summary.diverged_at_step;
      return `${r.run.id} (${g.label}${at !== null ? `, at step ${at}` : ''}, after ${formatTokens(r.tokens)} tokens)`;
    });
    lines.push(`Diverged: ${list.join('; ')}.`);
  }
  for (const status of ['running', 'interrupted'] as const) {
    const matching = runs.filter(({ r }) => r.status === status);
    if (matching.length > 0) {
      const label = status === 'running' ? 'Still running' : 'Interrupted';
      lines.push(`${label}: ${matching.map(({ r }) => `${r.run.id} (${formatTokens(r.tokens)} tokens)`).join('; ')}.`);
    }
  }
  const noEval = runs.filter(({ r }) => r.run.evalResults === null);
  if (noEval.length > 0 && noEval.length < runs.length) lines.push(`No downstream evaluation: ${noEval.map(({ r }) => r.run.id).join(', ')}.`);
  if (noEval.length === runs.length) lines.push('No run has downstream evaluation results.');
  return lines;
}

function logitLines(groups: ArmGroup[]): string[] {
  const peaks = groups.map((g) => {
    const p = g.maxLogitPeak;
    if (!p) return `${g.label}: not logged`;
    const where = `layer ${p.layer}${p.head === null ? '' : `, head ${p.head}`}`;
    return `${g.label} ${formatLogit(p.value)} (${p.runId}, ${where}, at ${formatTokens(p.tokens)} tokens)`;
  });
  const clipped = groups.map((g) => {
    const total = g.runs.reduce((a, r) => a + r.headsClippedTotal, 0);
    if (total === 0) return `${g.label} none`;
    const perRun = g.runs.length > 1 ? ` over ${g.runs.length} runs` : '';
    return `${g.label} ${total}${perRun}`;
  });
  return [
    `Max attention logit peak: ${peaks.join('; ')}.`,
    `Heads clipped (total over each run): ${clipped.join('; ')}.`,
  ];
}

/** `notStarted`: experiment arms without a run folder yet, which have no numbers but must not vanish silently. */
export function summarise(groups: ArmGroup[], notStarted: string[] = []): string[] {
  const pending = notStarted.length > 0 ? [`Not started yet: ${notStarted.join(', ')}.`] : [];
  return [...ranking(groups), ...statusLines(groups), ...pending, ...logitLines(groups)];
}
