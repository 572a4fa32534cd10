/**
 * Progress display: cli-progress bars (one per run, or per experiment arm and evaluation) on an interactive
 * terminal, plain periodic lines otherwise (CI logs, pipes), nothing at all when the caller wants only JSON.
 * Child processes (experiment arms with --jobs, an engine's trainer) report in JSON lines that the parent renders
 * with its own display, so parallel arms show as parallel bars rather than interleaved text.
 */
import { MultiBar, type SingleBar } from 'cli-progress';

export interface StepInfo {
  loss: number;
  tokensPerS: number;
  step: number;
  valLoss: number | null;
}

export interface ProgressSink {
  start(totalTokens: number, startTokens: number, label: string): void;
  update(tokens: number, info: StepInfo): void;
  note(line: string): void;
  stop(): void;
  /** A sink for one of several things running at once (an arm, an evaluation), shown beside the others. */
  lane?(label: string): ProgressSink & Partial<TaskProgress>;
}

/** A counted task that is not training (evaluation items, decode contexts): `done` of `total` units. */
export interface TaskProgress {
  task(label: string, total: number): { tick(done: number): void; end(): void };
}

export const silentProgress: ProgressSink = { start() {}, update() {}, note() {}, stop() {} };

const fmt = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)}G` : n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : `${n}`);

const TRAIN_FORMAT = '{label} [{bar}] {percentage}% | {tok}/{totalTok} tok | {tps} tok/s | loss {loss} | val {val} | ETA {eta_formatted}';

export function terminalProgress(stream: NodeJS.WriteStream = process.stderr, everySteps = 10): ProgressSink & TaskProgress {
  return stream.isTTY ? barProgress(stream) : lineProgress(stream, everySteps);
}

/** Bars on a terminal: one MultiBar for everything this process shows, so lanes stack instead of overwriting. */
function barProgress(stream: NodeJS.WriteStream): ProgressSink & TaskProgress {
  let multi: MultiBar | undefined;
  const bars = () => (multi ??= new MultiBar({ stream, hideCursor: true, clearOnComplete: false, format: TRAIN_FORMAT }));
  const lane = (fixedLabel?: string): ProgressSink => {
    let bar: SingleBar | undefined;
    return {
      start(total, at, label) {
        bar = bars().create(total, at, { label: fixedLabel ?? label, tok: fmt(at), totalTok: fmt(total), tps: '-', loss: '-', val: '-' });
      },
      update(tokens, i) {
        bar?.update(tokens, { tok: fmt(tokens), tps: i.tokensPerS.toFixed(0), loss: i.loss.toFixed(4), val: i.valLoss === null ? '-' : i.valLoss.toFixed(4) });
      },
      note(line) {
        if (multi) multi.log(line + '\n');
        else stream.write(line + '\n');
      },
      stop() {
        bar?.stop();
      },
    };
  };
  const task: TaskProgress['task'] = (label, total) => {
    const bar = bars().create(total, 0, {}, { format: `${label} [{bar}] {value}/{total} | ETA {eta_formatted}` });
    return { tick: (done) => bar.update(done), end: () => bar.stop() };
  };
  const main = lane();
  return {
    ...main,
    stop() {
      main.stop();
      multi?.stop();
      multi = undefined;
    },
    lane: (label) => ({ ...lane(label), task: (l, total) => task(`${label} ${l}`, total) }),
    task,
  };
}

/** Plain lines for logs: a training line every `everySteps` steps, a task line at each tenth. */
function lineProgress(stream: NodeJS.WriteStream, everySteps: number): ProgressSink & TaskProgress {
  const lane = (fixedLabel?: string): ProgressSink => {
    let label = fixedLabel ?? '';
    let total = 0;
    return {
      start(t, _at, l) {
        label = fixedLabel ?? l;
        total = t;
      },
      update(tokens, i) {
        if (i.step % everySteps === 0 || tokens >= total || i.valLoss !== null) {
          const val = i.valLoss === null ? '' : ` val ${i.valLoss.toFixed(4)}`;
          stream.write(`${label} step ${i.step} ${fmt(tokens)}/${fmt(total)} tok loss ${i.loss.toFixed(4)}${val} ${i.tokensPerS.toFixed(0)} tok/s\n`);
        }
      },
      note(line) {
        stream.write(line + '\n');
      },
      stop() {},
    };
  };
  const task: TaskProgress['task'] = (label, total) => {
    let shown = -1;
    return {
      tick(done) {
        const tenth = Math.floor((10 * done) / Math.max(1, total));
        if (tenth > shown) {
          shown = tenth;
          stream.write(`${label} ${done}/${total}\n`);
        }
      },
      end() {},
    };
  };
  return {
    ...lane(),
    lane: (label) => ({ ...lane(label), task: (l, total) => task(`${label} ${l}`, total) }),
    task,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Across processes

/** Set in a child's environment: report progress as JSON lines on stderr for the parent to render. */
export const PROGRESS_JSONL_ENV = 'MLACTL_PROGRESS_JSONL';

type ProgressMessage =
  | { progress: 'start'; total: number; at: number; label: string }
  | { progress: 'update'; tokens: number; info: StepInfo }
  | { progress: 'note'; line: string }
  | { progress: 'stop' }
  | { progress: 'task'; label: string; total: number }
  | { progress: 'tick'; done: number }
  | { progress: 'end' };

export function jsonlProgress(stream: NodeJS.WritableStream = process.stderr): ProgressSink & TaskProgress {
  const send = (m: ProgressMessage) => stream.write(JSON.stringify(m) + '\n');
  return {
    start: (total, at, label) => send({ progress: 'start', total, at, label }),
    update: (tokens, info) => send({ progress: 'update', tokens, info }),
    note: (line) => send({ progress: 'note', line }),
    stop: () => send({ progress: 'stop' }),
    task(label, total) {
      send({ progress: 'task', label, total });
      return { tick: (done) => send({ progress: 'tick', done }), end: () => send({ progress: 'end' }) };
    },
  };
}

/** Replays a child's messages into `sink`, remembering the child's current task between lines. */
export function progressReplayer(sink: ProgressSink & Partial<TaskProgress>): (line: string) => void {
  let task: ReturnType<TaskProgress['task']> | undefined;
  return (line) => {
    if (line.startsWith('{"progress":')) {
      let m: ProgressMessage | undefined;
      try {
        m = JSON.parse(line) as ProgressMessage;
      } catch {
        m = undefined; // a torn line: shown as text below
      }
      if (m) {
        if (m.progress === 'start') sink.start(m.total, m.at, m.label);
        else if (m.progress === 'update') sink.update(m.tokens, m.info);
        else if (m.progress === 'note') sink.note(m.line);
        else if (m.progress === 'stop') sink.stop();
        else if (m.progress === 'task') task = sink.task?.(m.label, m.total);
        else if (m.progress === 'tick') task?.tick(m.done);
        else task?.end();
        return;
      }
    }
    if (line.trim()) sink.note(line);
  };
}
