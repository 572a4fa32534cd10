import * as path from 'path';
import { UserError } from '../../src/errors';
import { cleanHellaswagText, pythonCapitalize, RAW_FORMATS, readRawTask } from '../../src/eval/formats';
import { loadTask } from '../../src/eval/tasks';

const fixture = (name: string) => path.join(__dirname, 'fixtures', name);

/** The error thrown by `fn`, which must be a UserError. */
function userError(fn: () => unknown): UserError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UserError);
    return err as UserError;
  }
  throw new Error('expected a UserError');
}

describe('HellaSwag', () => {
  it('builds the context from activity label, ctx_a and capitalised ctx_b, cleaning WikiHow markup', () => {
    const task = loadTask({ name: 'hellaswag', file: fixture('hellaswag.jsonl') });
    expect(task.items).toEqual([
      {
        kind: 'multiple_choice',
        context: 'Roof shingle removal: A man is sitting on a roof. He',
        choices: ['is using wrap to wrap a pair of skis.', 'is ripping level tiles off.', "is holding a rubik's cube.", 'starts pulling up roofing on a roof.'],
        gold: 3,
      },
      {
        kind: 'multiple_choice',
        // " [title]" became ". ", [header] dropped, double spaces collapsed; ctx_b capitalised Python-style.
        context: 'Home and Garden: How to clean a grill. Heat the grill. Brush the grates',
        // Tags are removed after the strip, so a leading tag leaves a leading space (as in lm-evaluation-harness).
        choices: [' Scrub them well.', ' Use a wire brush. Rinse.', 'Leave it.', 'Paint it.'],
        gold: 1,
      },
    ]);
    expect(task.definition).toMatchObject({ name: 'hellaswag', version: 1, delimiter: ' ', metrics: ['acc', 'acc_norm', 'acc_bytes'] });
  });

  it('helpers', () => {
    expect(pythonCapitalize('the OLYMPICS')).toBe('The olympics');
    expect(pythonCapitalize('')).toBe('');
    expect(cleanHellaswagText('  a [title] b [step] c  ')).toBe('a. b c');
  });

  it('keeps only the first `limit` items', () => {
    expect(loadTask({ name: 'hellaswag', file: fixture('hellaswag.jsonl') }, { limit: 1 }).items).toHaveLength(1);
  });
});

describe('ARC', () => {
  it('reads the nested release with letter and digit answer keys', () => {
    const { items } = loadTask({ name: 'arc-easy', file: fixture('arc-nested.jsonl') });
    expect(items[0]).toEqual({
      kind: 'multiple_choice',
      context: 'Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect of this increase in rotation?\nAnswer:',
      choices: ['Planetary density will decrease.', 'Planetary years will become longer.', 'Planetary days will become shorter.', 'Planetary gravity will become stronger.'],
      gold: 2,
    });
    expect(items[1]).toEqual({ kind: 'multiple_choice', context: 'Question: Which object is a conductor?\nAnswer:', choices: ['rubber band', 'iron nail', 'plastic cup'], gold: 1 });
  });

  it('reads the flattened form and matches a digit key to letter labels and back', () => {
    const { items } = loadTask({ name: 'arc-challenge', file: fixture('arc-flat.jsonl') });
    expect(items[0]).toEqual({ kind: 'multiple_choice', context: 'Question: Which gas do plants take in?\nAnswer:', choices: ['oxygen', 'carbon dioxide', 'helium', 'neon'], gold: 1 });
    expect(items[1]).toMatchObject({ choices: ['salt', 'sand'], gold: 0 });
  });
});

describe('PIQA', () => {
  it('takes labels from the labels file next to the data', () => {
    const task = loadTask({ name: 'piqa', file: fixture('piqa.jsonl') });
    expect(task.items).toEqual([
      { kind: 'multiple_choice', context: 'Question: To open a jar\nAnswer:', choices: ['twist the lid counterclockwise.', 'twist the lid clockwise.'], gold: 0 },
      { kind: 'multiple_choice', context: 'Question: Keep bread fresh\nAnswer:', choices: ['leave it in the sun.', 'store it in a sealed bag.'], gold: 1 },
    ]);
    expect(task.source).toContain('piqa-labels.lst');
  });

  it('takes labels from a `label` field', () => {
    expect(loadTask(`piqa=${fixture('piqa-inline.jsonl')}`).items).toEqual([
      { kind: 'multiple_choice', context: 'Question: Dry wet shoes\nAnswer:', choices: ['stuff them with newspaper.', 'put them in the freezer.'], gold: 0 },
    ]);
  });

  it('names the labels file and line of a bad label', () => {
    const bad = userError(() => loadTask(`piqa=${fixture('piqa.jsonl')},${fixture('piqa-bad-labels.lst')}`));
    expect(bad.message).toBe(`${fixture('piqa-bad-labels.lst')}:2: label 2 is not in 0..1`);
  });

  it('refuses a labels file with more or fewer labels than the data has records, naming both files and counts', () => {
    const data = fixture('piqa.jsonl');
    for (const [labels, count] of [[fixture('piqa-long-labels.lst'), 3], [fixture('piqa-short-labels.lst'), 1]] as const) {
      const expected = `${labels}: ${count} label${count === 1 ? '' : 's'} for the 2 records of ${data} (one label per record, in order)`;
      expect(userError(() => loadTask(`piqa=${data},${labels}`)).message).toBe(expected);
      // Also when only the first item is wanted: a labels file that does not match its data is the wrong file.
      expect(userError(() => loadTask(`piqa=${data},${labels}`, { limit: 1 })).message).toBe(expected);
    }
  });
});

describe('WinoGrande', () => {
  it('makes one context per option and a shared continuation', () => {
    const { items, definition } = loadTask({ name: 'winogrande', file: fixture('winogrande.jsonl') });
    expect(items).toEqual([
      {
        kind: 'partial',
        contexts: ["The trophy doesn't fit into the brown suitcase because the trophy", "The trophy doesn't fit into the brown suitcase because the suitcase"],
        continuation: 'is too large.',
        gold: 0,
      },
      {
        kind: 'partial',
        contexts: ['Sarah was a much better surgeon than Maria so Sarah', 'Sarah was a much better surgeon than Maria so Maria'],
        continuation: 'always got the harder cases.',
        gold: 1,
      },
    ]);
    expect(definition.metrics).toEqual(['acc']);
  });
});

describe('BoolQ', () => {
  it('writes passage, question and "Answer:" with no/yes choices', () => {
    const { items } = loadTask({ name: 'boolq', file: fixture('boolq.jsonl') });
    expect(items[0]).toEqual({
      kind: 'multiple_choice',
      context: 'At the Liberation of France in the summer of 1944, Metropolitan France kept GMT+2.\nQuestion: is france the same timezone as the uk?\nAnswer:',
      choices: ['no', 'yes'],
      gold: 0,
    });
    expect(items[1]).toMatchObject({ gold: 1 });
    expect(loadTask({ name: 'boolq', file: fixture('boolq-superglue.jsonl') }).items[0]).toMatchObject({ gold: 1, context: 'The sky appears blue.\nQuestion: is the sky blue?\nAnswer:' });
  });
});

describe('LAMBADA', () => {
  it('predicts the last word, its space part of the target', () => {
    const { items, definition } = loadTask({ name: 'lambada', file: fixture('lambada.jsonl') });
    expect(items).toEqual([
      { kind: 'target', context: 'She handed him the key and said, open the', target: ' door' },
      { kind: 'target', context: 'He waited by the river for his', target: ' friend' },
    ]);
    expect(definition.delimiter).toBe('');
  });
});

describe('malformed files', () => {
  it('names the file and line of invalid JSON (blank lines count)', () => {
    const err = userError(() => readRawTask(RAW_FORMATS.lambada, fixture('bad-json.jsonl')));
    expect(err.message).toMatch(new RegExp(`^${fixture('bad-json.jsonl').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:3: not valid JSON`));
    // The first record alone is fine.
    expect(readRawTask(RAW_FORMATS.lambada, fixture('bad-json.jsonl'), { limit: 1 })).toHaveLength(1);
  });

  it('names the file, line and field of a missing field', () => {
    const err = userError(() => loadTask({ name: 'piqa', file: fixture('missing-field.jsonl') }));
    expect(err.message).toBe(`${fixture('missing-field.jsonl')}:2: missing field "sol1"`);
  });

  it('names the file and line of a label out of range', () => {
    const err = userError(() => loadTask({ name: 'hellaswag', file: fixture('label-out-of-range.jsonl') }));
    expect(err.message).toBe(`${fixture('label-out-of-range.jsonl')}:2: field "label" = 4 is not a label in 0..3`);
  });

  it('rejects a WinoGrande answer outside 1..2 and a missing file', () => {
    expect(() => RAW_FORMATS.winogrande.parse({ sentence: 'a _ b', option1: 'x', option2: 'y', answer: '3' }, { file: 'w.jsonl', line: 9 }, {})).toThrow(
      'w.jsonl:9: field "answer" = "3" is not a label in 1..2',
    );
    expect(userError(() => loadTask({ name: 'boolq', file: fixture('nope.jsonl') })).message).toMatch(/cannot read task data file .*nope.jsonl: ENOENT/);
  });
});
