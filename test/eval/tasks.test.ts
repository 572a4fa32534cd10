import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { UserError } from '../../src/errors';
import { RAW_FORMATS } from '../../src/eval/formats';
import { BROWN_GENERATORS } from '../../src/eval/brown-tasks';
import { listTaskDefinitions, loadTask, parseTaskSpec, readTaskDefinition } from '../../src/eval/tasks';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-tasks-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function writeYaml(name: string, text: string): string {
  const file = path.join(dir, `${name}.yaml`);
  fs.writeFileSync(file, text);
  return file;
}

describe('task definitions', () => {
  it('every shipped task YAML is valid, versioned and names a known format', () => {
    const definitions = listTaskDefinitions();
    expect(definitions.map((d) => d.name)).toEqual([
      'arc-challenge', 'arc-easy', 'boolq', 'brown-cloze', 'brown-next-sentence', 'brown-word-order', 'hellaswag', 'lambada', 'piqa', 'winogrande',
    ]);
    for (const d of definitions) {
      expect(d.version).toBeGreaterThanOrEqual(1);
      expect(d.prompt.length).toBeGreaterThan(0);
      const format = RAW_FORMATS[d.format] ?? BROWN_GENERATORS[d.format];
      expect(format).toBeDefined();
      // The documented fields are the ones the parser reads.
      if (RAW_FORMATS[d.format]) expect(d.fields).toEqual(RAW_FORMATS[d.format].fields);
    }
  });

  const base = 'name: t\nversion: 1\nformat: boolq\ndelimiter: " "\nmetrics: [acc]\n';

  it.each([
    ['name: other\nversion: 1\nformat: boolq\ndelimiter: " "\nmetrics: [acc]\n', 'key "name" must match the file name (t.yaml)'],
    [base.replace('version: 1', 'version: 1.5'), 'key "version" must be a positive integer'],
    [base.replace('format: boolq', 'format: squad'), 'key "format" must be one of hellaswag, arc, piqa, winogrande, boolq, lambada, brown-cloze, brown-next-sentence'],
    [base.replace('[acc]', '[acc, f1]'), 'key "metrics" has unknown metric "f1"'],
    [base.replace('[acc]', '[perplexity]'), 'key "metrics" has perplexity, which format boolq does not produce (it gives acc, acc_norm, acc_bytes)'],
    [base.replace('delimiter: " "\n', ''), 'key "delimiter" must be a string'],
  ])('rejects a bad definition naming file and key (%#)', (text, message) => {
    const file = writeYaml('t', text);
    expect(() => readTaskDefinition(file)).toThrow(UserError);
    expect(() => readTaskDefinition(file)).toThrow(`${file}: ${message}`);
  });

  it('parses task specs', () => {
    expect(parseTaskSpec('brown-cloze')).toEqual({ name: 'brown-cloze' });
    expect(parseTaskSpec('hellaswag=data/hs.jsonl')).toEqual({ name: 'hellaswag', file: 'data/hs.jsonl' });
    expect(parseTaskSpec('piqa=valid.jsonl,valid-labels.lst')).toEqual({ name: 'piqa', file: 'valid.jsonl', labelsFile: 'valid-labels.lst' });
    expect(() => parseTaskSpec('piqa=')).toThrow(UserError);
  });

  it('explains what a task needs', () => {
    expect(() => loadTask('hellaswag')).toThrow('eval task hellaswag reads a data file: give it as hellaswag=PATH.jsonl');
    expect(() => loadTask('brown-cloze')).toThrow('eval task brown-cloze needs the run\'s data split (data.seed, data.val_fraction, data.test_fraction)');
    expect(() => loadTask('squad=x.jsonl')).toThrow(/^unknown eval task "squad" \(known: arc-challenge, /);
    expect(() => loadTask('lambada=x.jsonl', { limit: -1 })).toThrow('eval.limit must be a non-negative integer');
  });
});
