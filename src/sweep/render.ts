/** The sweep commands' text output: the plan and the status as aligned tables. `--json` prints the results instead. */
import { fmtFlops, fmtHours, fmtTokens, type PlanEstimate } from './cost';
import type { SweepStatus } from './status';
import type { AxisValue } from './types';

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [line(header), ...rows.map(line)];
}

const show = (v: AxisValue) => String(v);
const loss = (v: number | null) => (v === null ? '-' : v.toFixed(4));

export function planLines(p: PlanEstimate): string[] {
  const keys = p.axes.map((a) => a.key);
  const axes = p.axes.map((a) => `${a.key} x${a.values.length}`).join(', ');
  const c = p.cost;
  return [
    `sweep ${p.name}: ${p.count} runs (${axes})`,
    ...table(
      ['id', ...keys, 'steps', 'tokens', 'FLOPs'],
      p.runs.map((r) => [r.id, ...keys.map((k) => show(r.overrides[k])), String(r.steps), fmtTokens(r.tokens), fmtFlops(r.flops)]),
    ).map((l) => `  ${l}`),
    `cost: ${c.runs} runs, ${fmtTokens(c.tokens)} training tokens, ${fmtFlops(c.flops)} (training 3 x forward, validation forward)`,
    c.hours === null
      ? `time: unknown (${c.basis.replace(/^no hours: /, '')})`
      : `time: about ${fmtHours(c.hours)} of training in all, ${fmtHours(c.wall_hours!)} wall at ${c.jobs} at a time`,
    ...(c.hours === null ? [] : [`  from ${c.basis}`]),
  ];
}

export function statusLines(s: SweepStatus, countsLine: string): string[] {
  const slurmCol = s.executor === 'slurm';
  const rows = s.runs.map((r) => [
    r.id,
    r.state,
    `${r.step}/${r.total_steps}`,
    loss(r.final_train_loss),
    loss(r.final_val_loss),
    r.exit_code === null ? '-' : String(r.exit_code),
    ...(slurmCol ? [r.slurm ? `${r.slurm.task} ${r.slurm.state ?? '?'}` : '-'] : []),
  ]);
  const lines = [
    `sweep ${s.name} (${s.executor}) in ${s.dir}: ${countsLine}`,
    ...table(['id', 'state', 'step', 'train loss', 'val loss', 'exit', ...(slurmCol ? ['slurm task'] : [])], rows).map((l) => `  ${l}`),
  ];
  if (s.slurm?.queue_error) lines.push(`slurm: the queue could not be read (${s.slurm.queue_error}); states come from the run folders alone`);
  if (s.local_pid !== null) lines.push(`local: process ${s.local_pid} is running the sweep`);
  return lines;
}
