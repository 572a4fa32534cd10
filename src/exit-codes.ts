/** mlactl's exit codes beyond 0 (done) and 2 (bad input, UserError): one home, for commands, engines and sweeps. */
import * as os from 'os';

/** A training run diverged (non-finite loss): its status is `diverged` and no checkpoint holds the bad state. */
export const EXIT_DIVERGED = 3;

/** The shell's convention, 128 + signal number, so scripts and schedulers see how the run ended. */
export const SIGNAL_EXIT_CODES: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

/** A child process's end as one exit code: its own, else 128 + the signal that ended it, else 1. */
export function childExitCode(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return signal ? 128 + (os.constants.signals[signal] ?? 0) : 1;
}
