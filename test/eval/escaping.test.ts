// Error messages quote task files, task names and paths; a terminal must never receive their control bytes.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { printable, UserError } from '../../src/errors';
import { loglikelihood } from '../../src/eval/loglikelihood';
import { loadTask, readTaskDefinition, taskDefinition } from '../../src/eval/tasks';
import { bigramModel, characterPieces, pieceTokenizer } from './helpers';

/** C0 controls, DEL and C1 controls: what a terminal acts on instead of printing. */
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-escape-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

/** The message of the UserError `fn` throws. */
function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UserError);
    return (err as Error).message;
  }
  throw new Error('expected a UserError');
}

describe('printable', () => {
  it('writes C0 controls, DEL and C1 controls as \\xHH and keeps everything else', () => {
    expect(printable('a\x1b[31mb\x7f\x85\x9b\x00\n\t')).toBe('a\\x1b[31mb\\x7f\\x85\\x9b\\x00\\x0a\\x09');
    expect(printable('café \u00a0 ü → 😀 \\x1b')).toBe('café \u00a0 ü → 😀 \\x1b');
    expect(printable(printable('\x1b'))).toBe('\\x1b');
  });
});

describe('error messages from task files', () => {
  it.each([
    // JSON.parse quotes the start of the text it could not parse.
    ['a record that is not JSON', 'hellaswag', '\x1b]0;pwned\x07{"ctx_a": "x"}\n'],
    ['a label value with C1 bytes', 'hellaswag', JSON.stringify({ activity_label: 'a', ctx_a: 'b', ctx_b: 'c', endings: ['d', 'e'], label: '\x9b31m\x9d' }) + '\n'],
    ['choice labels', 'arc-easy', JSON.stringify({ question: 'q', choices: { text: ['a', 'b'], label: ['A\x1b[2J', 'B\x7f'] }, answerKey: 'Z' }) + '\n'],
    ['an answer key', 'arc-easy', JSON.stringify({ question: 'q', choices: { text: ['a', 'b'], label: ['A', 'B'] }, answerKey: 'Z\x9b' }) + '\n'],
  ])('%s', (_what, task, record) => {
    const file = write('data.jsonl', record);
    const message = messageOf(() => loadTask(`${task}=${file}`));
    expect(message).not.toMatch(CONTROL);
    expect(message).toMatch(/\\x(1b|9b|7f)/);
    expect(message.split('\n')).toHaveLength(1);
  });

  it('a labels file line', () => {
    const data = write('piqa.jsonl', JSON.stringify({ goal: 'g', sol1: 'a', sol2: 'b' }) + '\n');
    const labels = write('labels.lst', '\x1b[31m\x9b\n');
    const message = messageOf(() => loadTask(`piqa=${data},${labels}`));
    expect(message).not.toMatch(CONTROL);
    expect(message).toContain('"\\u001b[31m\\x9b"');
  });

  it('a path with control characters', () => {
    const message = messageOf(() => loadTask(`boolq=${path.join(dir, 'no\x1b[2Jsuch.jsonl')}`));
    expect(message).not.toMatch(CONTROL);
    expect(message).toContain('no\\x1b[2Jsuch.jsonl');
  });

  it('a task name', () => {
    const message = messageOf(() => taskDefinition('evil\x1b]0;pwned\x07'));
    expect(message).toMatch(/^unknown eval task "evil\\x1b\]0;pwned\\x07"/);
    expect(message).not.toMatch(CONTROL);
    expect(messageOf(() => loadTask('a\x1b=b=c,d,e'))).not.toMatch(CONTROL);
  });

  it('a task YAML', () => {
    const metric = write('t.yaml', 'name: t\nversion: 1\nformat: boolq\ndelimiter: " "\nmetrics: ["acc\x9b\x85"]\n');
    expect(messageOf(() => readTaskDefinition(metric))).toContain('acc\\x9b\\x85');
    const broken = write('u.yaml', 'name: u\nversion: [\x1b[31m\n');
    expect(messageOf(() => readTaskDefinition(broken))).not.toMatch(CONTROL);
  });

  it('a continuation quoted by the scorer', async () => {
    // A tokenizer that gives no tokens for "\x1b" makes the scorer quote the continuation back.
    const base = pieceTokenizer(characterPieces('xy '));
    const tokenizer = { ...base, encode: (text: string) => base.encode(text.replace(/\x1b/g, '')) };
    const failure = loglikelihood(bigramModel(tokenizer, () => 0.5), [{ context: 'x', continuation: '\x1b', id: 'item\x1b' }]);
    await expect(failure).rejects.toThrow(UserError);
    await expect(failure).rejects.toThrow(/^item\\x1b: continuation "\\u001b" encodes to no tokens$/);
  });
});
