/**
 * Progress display: a cli-progress bar (tokens, tokens/s, loss, ETA) on an interactive terminal, plain periodic
 * lines otherwise (CI logs, pipes), nothing at all when the caller wants only JSON.
 */
import { SingleBar } from 'cli-progress';

export interface ProgressSink {
  start(totalTokens: number, startTokens: number, label: string): void;
  update(tokens: number, info: { loss: number; tokensPerS: number; step: number; valLoss: number | null }): void;
  note(line: string): void;
  stop(): void;
}

export const silentProgress: ProgressSink = { start() {}, update() {}, note() {}, stop() {} };

const fmt = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)}G` : n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : `${n}`);

export function terminalProgress(stream: NodeJS.WriteStream = process.stderr, everySteps = 10): ProgressSink {
  if (stream.isTTY) {
    let bar: SingleBar | undefined;
    return {
      start(total, at, label) {
        bar = new SingleBar(
          { format: `${label} [{bar}] {percentage}% | {tok}/{totalTok} tok | {tps} tok/s | loss {loss} | val {val} | ETA {eta_formatted}`, stream, hideCursor: true },
        );
        bar.start(total, at, { tok: fmt(at), totalTok: fmt(total), tps: '-', loss: '-', val: '-' });
      },
      update(tokens, i) {
        bar?.update(tokens, { tok: fmt(tokens), tps: i.tokensPerS.toFixed(0), loss: i.loss.toFixed(4), val: i.valLoss === null ? '-' : i.valLoss.toFixed(4) });
      },
      note(line) {
        if (bar) bar.stop();
        stream.write(line + '\n');
      },
      stop() {
        bar?.stop();
      },
    };
  }
  let label = '';
  let total = 0;
  return {
    start(t, _at, l) {
      label = l;
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
}
