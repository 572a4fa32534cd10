import { Args, Flags } from '@oclif/core';
import { backendFlag, MlactlCommand } from '../cli/base';
import { evaluateRun, readRunConfig, type EvaluateRunResult } from '../eval/run-eval';
import { tfjsScorers } from '../inference/scoring';
import { SCORING_ENGINE_DEFAULTS, torchScorers } from '../engine/torch/scorer';
import { jsonlProgress, PROGRESS_JSONL_ENV, terminalProgress, type TaskProgress } from '../train/progress';

export default class Eval extends MlactlCommand<EvaluateRunResult> {
  static override description = 'Evaluate a run\'s checkpoints on multiple-choice and perplexity tasks (lm-evaluation-harness conventions)';

  static override examples = [
    '<%= config.bin %> eval --run runs/demo/qk-norm',
    '<%= config.bin %> eval --run runs/demo/qk-norm --all-checkpoints',
    '<%= config.bin %> eval --run runs/x --task hellaswag=data/hellaswag_val.jsonl --limit 200',
  ];

  static override args = { run: Args.string({ description: 'run folder (alternative to --run)' }) };

  static override flags = {
    run: Flags.string({ description: 'run folder' }),
    task: Flags.string({ description: 'task NAME or NAME=FILE[,LABELS] (repeatable; default: the run config\'s eval.tasks)', multiple: true, default: [] }),
    step: Flags.integer({ description: 'checkpoint step, repeatable (default: the newest)', multiple: true }),
    'all-checkpoints': Flags.boolean({ description: 'evaluate every checkpoint: an accuracy-versus-tokens table in eval/by-step.csv' }),
    limit: Flags.integer({ description: 'items per task (0: all; default: the run config\'s eval.limit)', min: 0 }),
    'batch-size': Flags.integer({ description: 'sequences per forward pass', min: 1 }),
    backend: backendFlag(),
    engine: Flags.option({ options: ['tfjs', 'torch'] as const, description: 'who scores: tfjs (default) or torch (PyTorch child process; GPU, bf16 with --precision)' })(),
    precision: Flags.option({ options: ['fp32', 'bf16'] as const, description: 'torch engine on CUDA: scoring precision (default fp32)' })(),
  };

  async run(): Promise<EvaluateRunResult> {
    const { args, flags } = await this.parse(Eval);
    const runDir = flags.run ?? args.run;
    if (!runDir) this.error('give the run folder: mlactl eval --run DIR', { exit: 2 });
    // The bar (or plain lines) on stderr; JSON lines for a parent process that draws it (the demo).
    const display: TaskProgress | undefined = process.env[PROGRESS_JSONL_ENV] ? jsonlProgress() : this.jsonEnabled() ? undefined : terminalProgress(process.stderr);
    let current: { label: string; task: ReturnType<TaskProgress['task']> } | undefined;
    const result = await evaluateRun({
      runDir,
      tasks: flags.task,
      steps: flags.step?.length ? flags.step : undefined,
      allCheckpoints: flags['all-checkpoints'],
      limit: flags.limit,
      batchSize: flags['batch-size'],
      openScorer: flags.engine === 'torch'
        ? torchScorers({ engine: { ...SCORING_ENGINE_DEFAULTS, ...readRunConfig(runDir).engine, name: 'torch', precision: flags.precision ?? 'fp32' } })
        : tfjsScorers(flags.backend ?? readRunConfig(runDir).backend),
      onProgress: (p) => {
        if (!display) return;
        const label = `step ${p.step} ${p.task}`;
        if (current?.label !== label) {
          current?.task.end();
          current = { label, task: display.task(label, p.total) };
        }
        current.task.tick(p.done);
      },
    });
    current?.task.end();
    for (const e of result.evaluations) {
      for (const t of e.tasks) {
        const m = Object.entries(t.metrics).map(([k, v]) => `${k} ${v.value?.toFixed(4)} ± ${v.stderr?.toFixed(4)}`).join(', ');
        this.say(`step ${String(e.checkpoint_step).padStart(6)}  ${t.name.padEnd(22)} n=${t.n}  ${m}  (chance ${t.chance?.toFixed(3)})`);
      }
    }
    this.say(
      `results: ${result.resultsDir}/results.json (${result.itemsPerSecond.toFixed(1)} items/s overall; ` +
        `${result.scoringItemsPerSecond.toFixed(1)} items/s scoring, after ${result.openSeconds.toFixed(1)} s opening the scorer)`,
    );
    return result;
  }
}
