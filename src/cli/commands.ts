// Every command class by its id, imported statically. oclif itself finds commands by globbing dist/commands;
// this table exists for the single-file bundle (src/cli/bundle.ts), which has no dist folder to glob.
import type { Command } from '@oclif/core';
import BenchDecode from '../commands/bench/decode';
import BenchPlot from '../commands/bench/plot';
import Compare from '../commands/compare';
import DataPrepare from '../commands/data/prepare';
import DataVerify from '../commands/data/verify';
import Demo from '../commands/demo';
import Doctor from '../commands/doctor';
import Eval from '../commands/eval';
import Generate from '../commands/generate';
import ModelInfoCommand from '../commands/model/info';
import Score from '../commands/score';
import SweepPlan from '../commands/sweep/plan';
import SweepResume from '../commands/sweep/resume';
import SweepRun from '../commands/sweep/run';
import SweepStatus from '../commands/sweep/status';
import Train from '../commands/train';
import Verify from '../commands/verify';

export const COMMANDS: Record<string, Command.Class> = {
  'bench:decode': BenchDecode,
  'bench:plot': BenchPlot,
  compare: Compare,
  'data:prepare': DataPrepare,
  'data:verify': DataVerify,
  demo: Demo,
  doctor: Doctor,
  eval: Eval,
  generate: Generate,
  'model:info': ModelInfoCommand,
  score: Score,
  'sweep:plan': SweepPlan,
  'sweep:resume': SweepResume,
  'sweep:run': SweepRun,
  'sweep:status': SweepStatus,
  train: Train,
  verify: Verify,
};

/** The command named by the leading words of argv (`bench decode ...` -> bench:decode) and the rest of argv. */
export function resolveCommand(argv: string[]): { id: string; rest: string[] } | undefined {
  for (const words of [2, 1]) {
    const id = argv.slice(0, words).join(':');
    if (argv.length >= words && id in COMMANDS) return { id, rest: argv.slice(words) };
  }
  return undefined;
}
