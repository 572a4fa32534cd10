import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ts from 'typescript';
import { isMap, isScalar, parseDocument, YAMLMap } from 'yaml';
import {
  BASE_CONFIG_PATH,
  baseConfig,
  configToYaml,
  effectiveKeyGroups,
  effectiveVocab,
  loadConfig,
  resolveConfigObject,
  setConfigValue,
} from '../../src/config/load';
import { schemaKeyPaths } from '../../src/config/schema';
import { editDistance } from '../../src/config/validate';
import { userErrorOf } from '../user-error';

const REPO = path.resolve(__dirname, '../..');
const MODELS = path.join(REPO, 'configs/models');
const PRESETS = ['tiny', 'demo', 'gpu-small', 'paper-400m'];

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-config-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function write(name: string, text: string): string {
  const file = path.join(tmp, name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return file;
}

/** `extends:` line pointing from a file in `dir` to the repo's base.yaml. */
function extendsBase(dir = tmp): string {
  return `extends: ${path.relative(dir, BASE_CONFIG_PATH)}\n`;
}

/** Leaf key paths of a parsed YAML object: mappings are walked, lists and scalars are leaves. */
function leafPaths(value: unknown, prefix = ''): string[] {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return [prefix];
  return Object.entries(value).flatMap(([k, v]) => leafPaths(v, prefix ? `${prefix}.${k}` : k));
}

/** Leaf key paths of the `Config` interface, read from types.ts with the TypeScript parser. */
function interfaceKeyPaths(): string[] {
  const file = path.join(REPO, 'src/config/types.ts');
  const source = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true);
  const interfaces = new Map<string, ts.InterfaceDeclaration>();
  source.forEachChild((node) => {
    if (ts.isInterfaceDeclaration(node)) interfaces.set(node.name.text, node);
  });
  const walk = (members: ts.NodeArray<ts.TypeElement>, prefix: string): string[] =>
    members.flatMap((member) => {
      if (!ts.isPropertySignature(member) || !member.type || !ts.isIdentifier(member.name)) {
        throw new Error(`types.ts: cannot read member ${member.getText(source)}`);
      }
      const keyPath = prefix ? `${prefix}.${member.name.text}` : member.name.text;
      const type = member.type;
      if (ts.isTypeLiteralNode(type)) return walk(type.members, keyPath);
      if (ts.isTypeReferenceNode(type) && interfaces.has(type.typeName.getText(source))) {
        return walk(interfaces.get(type.typeName.getText(source))!.members, keyPath);
      }
      return [keyPath];
    });
  const config = interfaces.get('Config');
  if (!config) throw new Error('types.ts: no Config interface');
  return walk(config.members, '');
}

/** Key paths in a YAML text with no comment above them or at the end of their line. */
function undocumentedKeys(text: string): string[] {
  const undocumented: string[] = [];
  const walk = (map: YAMLMap, prefix: string): void => {
    map.items.forEach((pair, index) => {
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      const keyPath = prefix ? `${prefix}.${key}` : key;
      const value = pair.value as { comment?: string | null } | null;
      // The yaml parser files a comment above a mapping's first key under the mapping itself.
      const above = (isScalar(pair.key) && pair.key.commentBefore) || (index === 0 && map.commentBefore);
      const inline = !isMap(pair.value) && value?.comment;
      if (!above && !inline) undocumented.push(keyPath);
      if (isMap(pair.value)) walk(pair.value, keyPath);
    });
  };
  walk(parseDocument(text).contents as YAMLMap, '');
  return undocumented;
}

describe('base.yaml documents the Config interface', () => {
  const baseText = fs.readFileSync(BASE_CONFIG_PATH, 'utf8');

  test('holds exactly the leaf keys of Config, and the runtime schema agrees', () => {
    const fromInterface = interfaceKeyPaths().sort();
    // Guards the walk itself: Config has 8 top-level keys and nests model.qk_norm and train.qk_clip.
    expect(fromInterface).toContain('model.qk_norm.key_groups');
    expect(fromInterface).toContain('train.qk_clip.alpha');
    expect(fromInterface.length).toBeGreaterThan(50);
    expect(leafPaths(parseDocument(baseText).toJS()).sort()).toEqual(fromInterface);
    expect(schemaKeyPaths().sort()).toEqual(fromInterface);
  });

  test('every key carries a comment (above it, or at the end of its line)', () => {
    expect(undocumentedKeys(baseText)).toEqual([]);
  });

  test('baseConfig has the documented defaults and returns a fresh copy each call', () => {
    const cfg = baseConfig();
    expect(cfg.name).toBe('run');
    expect(cfg.backend).toBe('auto');
    expect(cfg.seed).toBe(0);
    expect(cfg.model.variant).toBe('baseline');
    expect(cfg.model.qk_norm).toEqual({ scope: 'full', key_groups: 0, eps: 1e-6 });
    expect(cfg.model.norm_eps).toBe(1e-6);
    expect(cfg.model.rope_theta).toBe(10000);
    expect(cfg.model.init_std).toBe(0.02);
    expect(cfg.model.tie_embeddings).toBe(false);
    expect(cfg.model.vocab_size).toBe(0);
    expect(cfg.data).toMatchObject({ source: 'brown', tokenizer: 'byte', seed: 1234, val_fraction: 0.05, test_fraction: 0.1 });
    expect(cfg.train.qk_clip).toEqual({ tau: 100, alpha: 0.5 });
    expect(cfg.train).toMatchObject({
      optimizer: 'adamw', schedule: 'cosine', decay_fraction: 0.2, min_lr_ratio: 0.1, weight_decay: 0.1,
      beta1: 0.9, beta2: 0.95, adam_eps: 1e-8, muon_momentum: 0.95, grad_clip: 1, z_loss: 0, grad_accum: 1,
      log_every_steps: 10, maxlogit_every_steps: 50,
    });
    expect(cfg.eval).toEqual({ tasks: ['brown-word-order', 'brown-cloze', 'brown-next-sentence'], batch_size: 16, limit: 0 });
    expect(cfg.experiment).toEqual({ variants: [], seeds: [], lrs: [] });

    cfg.model.d_model = 7;
    cfg.eval.tasks.push('mutated');
    expect(baseConfig().model.d_model).toBe(256);
    expect(baseConfig().eval.tasks).toEqual(['brown-word-order', 'brown-cloze', 'brown-next-sentence']);
  });
});

describe('presets', () => {
  test.each(PRESETS)('%s extends base, lists only changed keys, each with a comment', (preset) => {
    const text = fs.readFileSync(path.join(MODELS, `${preset}.yaml`), 'utf8');
    const doc = parseDocument(text);
    const raw = doc.toJS() as Record<string, unknown>;
    expect(raw.extends).toBe('../base.yaml');
    const base = baseConfig() as unknown as Record<string, unknown>;
    const lookup = (obj: unknown, keyPath: string): unknown =>
      keyPath.split('.').reduce<unknown>((node, k) => (node as Record<string, unknown>)[k], obj);
    const keys = leafPaths(raw).filter((p) => p !== 'extends');
    expect(keys.length).toBeGreaterThan(0);
    for (const keyPath of keys) {
      expect({ keyPath, same: JSON.stringify(lookup(raw, keyPath)) === JSON.stringify(lookup(base, keyPath)) }).toEqual({ keyPath, same: false });
    }
    // Sections (model:, train:) need no reason of their own in a preset; each changed value does.
    expect(undocumentedKeys(text).filter((k) => keys.includes(k))).toEqual([]);
  });

  test('tiny has the sizes the tests rely on', () => {
    const cfg = loadConfig(path.join(MODELS, 'tiny.yaml'));
    expect(cfg.model).toMatchObject({
      d_model: 32, n_layers: 2, n_heads: 4, q_lora_rank: 0, kv_lora_rank: 16, qk_nope_head_dim: 8,
      qk_rope_head_dim: 4, v_head_dim: 8, d_ff: 64, max_seq_len: 64,
    });
    expect(cfg.data.seq_len).toBe(32);
    expect(cfg.data.tokenizer).toBe('byte');
  });

  test('demo is a short CPU run on Brown', () => {
    const cfg = loadConfig(path.join(MODELS, 'demo.yaml'));
    expect(cfg.model).toMatchObject({
      d_model: 128, n_layers: 4, n_heads: 4, kv_lora_rank: 64, qk_nope_head_dim: 32, qk_rope_head_dim: 16,
      v_head_dim: 32, d_ff: 352, max_seq_len: 256,
    });
    expect(cfg.data).toMatchObject({ seq_len: 128, tokenizer: 'byte', source: 'brown' });
    expect(cfg.train).toMatchObject({ batch_size: 16, lr: 3e-3, optimizer: 'adamw' });
    expect(cfg.train.tokens).toBeGreaterThanOrEqual(350_000);
    expect(cfg.train.tokens).toBeLessThanOrEqual(450_000);
    expect(cfg.train.warmup_tokens / cfg.train.tokens).toBeCloseTo(0.05, 2);
  });

  test('gpu-small and paper-400m have their sizes', () => {
    const small = loadConfig(path.join(MODELS, 'gpu-small.yaml'));
    expect(small.model).toMatchObject({
      d_model: 512, n_layers: 8, n_heads: 8, kv_lora_rank: 128, qk_nope_head_dim: 64, qk_rope_head_dim: 32,
      v_head_dim: 64, d_ff: 1408, vocab_size: 50304, max_seq_len: 1024,
    });
    expect(small.data).toMatchObject({ tokenizer: 'gpt2', seq_len: 512 });

    const paper = loadConfig(path.join(MODELS, 'paper-400m.yaml'));
    expect(paper.model).toMatchObject({
      d_model: 1024, n_layers: 24, n_heads: 16, q_lora_rank: 0, kv_lora_rank: 256, qk_nope_head_dim: 64,
      qk_rope_head_dim: 32, v_head_dim: 64, d_ff: 2816, vocab_size: 50304, tie_embeddings: false, max_seq_len: 2048,
    });
    expect(paper.data).toMatchObject({ tokenizer: 'gpt2', seq_len: 2048 });
    expect(paper.train).toMatchObject({ optimizer: 'muon', tokens: 8_000_000_000, batch_size: 64, grad_accum: 8 });
  });
});

describe('extends and merging', () => {
  test('a chain merges root to leaf: mappings key by key, lists replaced whole', () => {
    write('chain/a.yaml', `${extendsBase(path.join(tmp, 'chain'))}model:\n  d_model: 64\n  n_heads: 4\neval:\n  tasks: [one, two]\n`);
    write('chain/sub/b.yaml', 'extends: ../a.yaml\nmodel:\n  n_heads: 2\n  qk_norm:\n    scope: nope\neval:\n  tasks: [three]\n');
    const leaf = write('chain/sub/c.yaml', 'extends: b.yaml\ntrain:\n  lr: 0.01\n');
    const cfg = loadConfig(leaf);
    expect(cfg.model.d_model).toBe(64); // from a
    expect(cfg.model.n_heads).toBe(2); // b overrides a
    expect(cfg.model.qk_norm).toEqual({ scope: 'nope', key_groups: 0, eps: 1e-6 }); // b's key, base's siblings
    expect(cfg.model.n_layers).toBe(6); // base
    expect(cfg.eval.tasks).toEqual(['three']); // replaced, not concatenated
    expect(cfg.train.lr).toBe(0.01); // c
    expect(cfg.train.beta2).toBe(0.95); // base sibling of c's key
  });

  test('a file without extends is merged over base; an empty file is base', () => {
    const partial = write('plain.yaml', 'name: plain\ndata:\n  seq_len: 64\n');
    const cfg = loadConfig(partial);
    expect(cfg.name).toBe('plain');
    expect(cfg.data.seq_len).toBe(64);
    expect(cfg.data.tokenizer).toBe('byte');
    expect(loadConfig(write('empty.yaml', ''))).toEqual(baseConfig());
    expect(loadConfig(BASE_CONFIG_PATH)).toEqual(baseConfig());
  });

  test('a user file can extend a preset', () => {
    const file = write('on-tiny.yaml', `extends: ${path.relative(tmp, path.join(MODELS, 'tiny.yaml'))}\nmodel:\n  variant: qk-norm\n`);
    const cfg = loadConfig(file);
    expect(cfg.model.variant).toBe('qk-norm');
    expect(cfg.model.d_model).toBe(32);
  });

  test('cycles are an error naming the files', () => {
    write('cycle/x.yaml', 'extends: y.yaml\n');
    write('cycle/y.yaml', 'name: y\nextends: x.yaml\n');
    const message = userErrorOf(() => loadConfig(path.join(tmp, 'cycle/x.yaml')));
    expect(message).toMatch(/^config error at extends: cycle .*x\.yaml -> .*y\.yaml -> .*x\.yaml \[.*y\.yaml:2\]$/);
    const self = write('cycle/self.yaml', 'extends: ./self.yaml\n');
    expect(userErrorOf(() => loadConfig(self))).toMatch(/cycle .*self\.yaml -> .*self\.yaml/);
  });

  test('a missing extends target names the referring file and line', () => {
    const file = write('dangling.yaml', 'name: d\nextends: nowhere.yaml\n');
    expect(userErrorOf(() => loadConfig(file))).toMatch(/^config error at extends: cannot read nowhere\.yaml \(no such file: .*nowhere\.yaml\) \[.*dangling\.yaml:2\]$/);
    const wrongType = write('extends-number.yaml', 'extends: 3\n');
    expect(userErrorOf(() => loadConfig(wrongType))).toMatch(/config error at extends: expected a path .* got number 3 \[.*extends-number\.yaml:1\]/);
  });

  test('extends reads only regular .yaml/.yml files of bounded size, and never echoes what it refused', () => {
    const secret = write('secrets/shadow', 'root:$6$SECRETHASH:19000:0:99999:7:::\nuser: SECRETVALUE\n');
    const toSecret = write('ext-secret.yaml', `name: x\nextends: ${secret}\n`);
    const refused = userErrorOf(() => loadConfig(toSecret));
    expect(refused).toMatch(/^config error at extends: cannot read .*shadow \(not a \.yaml or \.yml file: .*shadow\) \[.*ext-secret\.yaml:2\]$/);
    expect(refused).not.toMatch(/SECRET/);
    // A link named .yaml to another file is judged by the file it reaches.
    const link = path.join(tmp, 'secrets/link.yaml');
    fs.symlinkSync(secret, link);
    expect(userErrorOf(() => loadConfig(write('ext-link.yaml', 'extends: secrets/link.yaml\n')))).toMatch(/cannot read secrets\/link\.yaml \(not a \.yaml or \.yml file: /);
    expect(userErrorOf(() => loadConfig(secret))).toMatch(/^config error: cannot read config file .*shadow: not a \.yaml or \.yml file$/);
    // Devices and FIFOs are refused without being read (or opened: a FIFO's open waits for a writer).
    expect(userErrorOf(() => loadConfig(write('ext-zero.yaml', 'extends: /dev/zero\n')))).toMatch(/cannot read \/dev\/zero \(not a regular file: \/dev\/zero\) \[.*ext-zero\.yaml:1\]$/);
    const fifo = path.join(tmp, 'secrets/pipe.yaml');
    execFileSync('mkfifo', [fifo]);
    expect(userErrorOf(() => loadConfig(write('ext-fifo.yaml', 'extends: secrets/pipe.yaml\n')))).toMatch(/cannot read secrets\/pipe\.yaml \(not a regular file: /);
    expect(userErrorOf(() => loadConfig(fifo))).toMatch(/cannot read config file .*pipe\.yaml: not a regular file$/);
    // Config files are small: a large one is refused from its size, before it is read.
    const big = write('big.yaml', `name: big\n# ${'x'.repeat(2 ** 20)}\n`);
    expect(userErrorOf(() => loadConfig(write('ext-big.yaml', 'extends: big.yaml\n')))).toMatch(/cannot read big\.yaml \(larger than 1 MiB: .*big\.yaml\)/);
    expect(userErrorOf(() => loadConfig(big))).toMatch(/cannot read config file .*big\.yaml: larger than 1 MiB$/);
    expect(loadConfig(write('just-under.yaml', `name: under\n#${'x'.repeat(2 ** 20 - 20)}\n`)).name).toBe('under');
    const binary = path.join(tmp, 'binary.yml');
    fs.writeFileSync(binary, Buffer.from([0x6e, 0x3a, 0x20, 0xff, 0xfe, 0x0a]));
    expect(userErrorOf(() => loadConfig(binary))).toMatch(/cannot read config file .*binary\.yml: not UTF-8 text$/);
    expect(loadConfig(write('short.yml', 'name: yml\n')).name).toBe('yml');
  });

  test('YAML errors name the file, line and column, never the text', () => {
    const escapeSeq = write('dq.yaml', 'name: ok\n"a\\qSECRET": 1\n');
    const m1 = userErrorOf(() => loadConfig(escapeSeq));
    expect(m1).toMatch(/^config error in .*dq\.yaml:2:\d+: invalid YAML: invalid escape sequence in a double-quoted string$/);
    const alias = write('alias.yaml', 'name: *SECRETANCHOR\n');
    expect(userErrorOf(() => loadConfig(alias))).toMatch(/^config error in .*alias\.yaml: invalid YAML: an alias names no anchor before it$/);
    const scalar = write('scalar.yaml', 'SECRET-TEXT:line\n');
    expect(userErrorOf(() => loadConfig(scalar))).toMatch(/^config error in .*scalar\.yaml: the top level must be a mapping of config keys, got a string$/);
    const flow = write('flow.yaml', 'a: [1, SECRETX\n');
    expect(userErrorOf(() => loadConfig(flow))).toMatch(/^config error in .*flow\.yaml:2:1: invalid YAML: [^S]*$/);
    const bomb = write('bomb.yaml', ['a: &a [x, x, x, x, x, x, x, x, x, x]', ...'bcdefgh'.split('').map((k, i) => `${k}: &${k} [${Array(10).fill(`*${'abcdefgh'[i]}`).join(', ')}]`)].join('\n') + '\n');
    expect(userErrorOf(() => loadConfig(bomb))).toMatch(/^config error in .*bomb\.yaml: invalid YAML: too many aliases/);
    for (const m of [m1]) expect(m).not.toMatch(/SECRET/);
  });

  test('resolveConfigObject merges an object over base and rejects extends', () => {
    const cfg = resolveConfigObject({ model: { variant: 'qk-clip' } });
    expect(cfg.model.variant).toBe('qk-clip');
    expect(cfg.model.d_model).toBe(256);
    expect(resolveConfigObject(undefined)).toEqual(baseConfig());
    expect(userErrorOf(() => resolveConfigObject({ extends: 'x.yaml' }, [], 'arm 3'))).toMatch(/extends.*\[arm 3\]/);
    expect(userErrorOf(() => resolveConfigObject([1, 2], [], 'arm 3'))).toMatch(/^config error in arm 3: expected a mapping/);
    expect(userErrorOf(() => resolveConfigObject({ model: { d_model: -1 } }, [], 'arm 3'))).toMatch(/model\.d_model.*\[arm 3\]$/);
  });

  test('a complete config round-trips through configToYaml', () => {
    const cfg = loadConfig(path.join(MODELS, 'paper-400m.yaml'), ['experiment.lrs=[1e-3, 3e-4]', 'train.adam_eps=1e-12']);
    const yamlText = configToYaml(cfg);
    expect(resolveConfigObject(parseDocument(yamlText).toJS())).toEqual(cfg);
  });
});

describe('--set overrides', () => {
  test('values are parsed as YAML scalars and flow collections', () => {
    const cfg = loadConfig(BASE_CONFIG_PATH, [
      'train.lr=3e-4',
      'model.tie_embeddings=true',
      'name=my-run',
      'experiment.variants=[baseline,qk-norm]',
      'experiment.seeds=[0, 1, 2]',
      'train.tokens=2e7',
      'model.qk_norm={scope: nope, key_groups: 2}',
      'data.source=/tmp/corpus dir/a=b.jsonl',
    ]);
    expect(cfg.train.lr).toBe(0.0003);
    expect(cfg.model.tie_embeddings).toBe(true);
    expect(cfg.name).toBe('my-run');
    expect(cfg.experiment.variants).toEqual(['baseline', 'qk-norm']);
    expect(cfg.experiment.seeds).toEqual([0, 1, 2]);
    expect(cfg.train.tokens).toBe(20_000_000);
    expect(cfg.model.qk_norm).toEqual({ scope: 'nope', key_groups: 2, eps: 1e-6 }); // merged, eps kept
    expect(cfg.data.source).toBe('/tmp/corpus dir/a=b.jsonl'); // split at the first '=' only
  });

  test('sets apply after the file, and a later set wins', () => {
    const cfg = loadConfig(path.join(MODELS, 'demo.yaml'), ['train.lr=1e-2', 'train.lr=5e-3']);
    expect(cfg.train.lr).toBe(0.005);
    expect(cfg.model.d_model).toBe(128);
    expect(resolveConfigObject({ train: { lr: 1 } }, ['train.lr=2']).train.lr).toBe(2);
  });

  test('malformed sets are errors', () => {
    expect(userErrorOf(() => loadConfig(BASE_CONFIG_PATH, ['train.lr']))).toMatch(/^config error in --set train\.lr: expected key\.path=value/);
    expect(userErrorOf(() => loadConfig(BASE_CONFIG_PATH, ['train..lr=1']))).toMatch(/expected key\.path=value/);
    expect(userErrorOf(() => loadConfig(BASE_CONFIG_PATH, ['experiment.seeds=[1,']))).toMatch(/^config error at experiment\.seeds: invalid YAML value .*\[--set experiment\.seeds=\[1,\]$/);
    expect(userErrorOf(() => loadConfig(BASE_CONFIG_PATH, ['model.n_head=4']))).toBe(
      'config error at model.n_head: unknown key (did you mean model.n_heads?) [--set model.n_head=4]',
    );
  });

  test('setConfigValue creates mappings on the way and refuses to walk through a value', () => {
    const obj: Record<string, unknown> = { a: { keep: 1 }, s: 5 };
    setConfigValue(obj, 'a.b.c', [1]);
    expect(obj).toEqual({ a: { keep: 1, b: { c: [1] } }, s: 5 });
    expect(userErrorOf(() => setConfigValue(obj, 's.x', 1))).toMatch(/s is number 5, not a mapping/);
    setConfigValue(obj, '__proto__', 1);
    expect(Object.getPrototypeOf(obj)).toBe(Object.prototype);
    expect(Object.keys(obj)).toContain('__proto__');
  });
});

describe('validation', () => {
  const withSet = (...sets: string[]) => () => loadConfig(BASE_CONFIG_PATH, sets);

  test('unknown keys suggest the nearest key, or the same key in another section', () => {
    const file = write('typo.yaml', 'model:\n  d_model: 64\n  n_head: 4\n');
    expect(userErrorOf(() => loadConfig(file))).toMatch(/^config error at model\.n_head: unknown key \(did you mean model\.n_heads\?\) \[.*typo\.yaml:3\]$/);
    expect(userErrorOf(withSet('lr=1'))).toMatch(/^config error at lr: unknown key \(did you mean train\.lr\?\)/);
    expect(userErrorOf(withSet('train.qk_clip.tua=1'))).toMatch(/at train\.qk_clip\.tua: unknown key \(did you mean train\.qk_clip\.tau\?\)/);
    expect(userErrorOf(withSet('model.zzzzzz=1'))).toMatch(/at model\.zzzzzz: unknown key \(known keys in model: vocab_size, d_model, .*qk_norm\)/);
    expect(userErrorOf(() => resolveConfigObject({ extra: 1 }))).toMatch(/at extra: unknown key \(known keys: name, backend/);
  });

  test('edit distance counts insertions, deletions, substitutions and adjacent swaps', () => {
    expect(editDistance('kitten', 'sitting')).toBe(3); // k->s, e->i, +g
    expect(editDistance('tua', 'tau')).toBe(1); // one swap
    expect(editDistance('ca', 'abc')).toBe(3); // optimal string alignment: no edits inside a swapped pair
    expect(editDistance('n_head', 'n_heads')).toBe(1);
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('same', 'same')).toBe(0);
  });

  test('wrong types name the key, the expectation and the value', () => {
    expect(userErrorOf(withSet('model.d_model=wide'))).toBe(
      'config error at model.d_model: expected a positive integer, got string "wide" [--set model.d_model=wide]',
    );
    expect(userErrorOf(withSet('model.tie_embeddings=yes'))).toMatch(/at model\.tie_embeddings: expected true or false, got string "yes"/);
    expect(userErrorOf(withSet('name=5'))).toMatch(/at name: expected a run name .* got number 5 \(quote it/);
    expect(userErrorOf(withSet('train.lr=fast'))).toMatch(/at train\.lr: expected a positive number, got string "fast"/);
    expect(userErrorOf(withSet('experiment.seeds=3'))).toMatch(/at experiment\.seeds: expected a list, each item a non-negative integer; got number 3 \(write \[3\]\)/);
    expect(userErrorOf(withSet('experiment.lrs=[1e-3, x]'))).toMatch(/at experiment\.lrs\[1\]: expected a positive number, got string "x"/);
    expect(userErrorOf(withSet('eval.tasks=[[a]]'))).toMatch(/at eval\.tasks\[0\]: expected a non-empty string, got a list \[\"a\"\]/);
    expect(userErrorOf(withSet('model=3'))).toMatch(/at model: expected a mapping of keys, got number 3/);
    expect(userErrorOf(withSet('train.qk_clip=[1]'))).toMatch(/at train\.qk_clip: expected a mapping of keys, got a list/);
    const nullSection = write('null-section.yaml', 'data:\n');
    expect(userErrorOf(() => loadConfig(nullSection))).toMatch(/at data: expected a mapping of keys, got an empty value \[.*null-section\.yaml:1\]/);
  });

  test('integers must be integers and sizes positive', () => {
    expect(userErrorOf(withSet('model.n_layers=2.5'))).toMatch(/at model\.n_layers: expected a positive integer, got number 2\.5/);
    expect(userErrorOf(withSet('model.d_model=0'))).toMatch(/at model\.d_model: expected a positive integer, got number 0/);
    expect(userErrorOf(withSet('model.n_heads=-4'))).toMatch(/at model\.n_heads: expected a positive integer, got number -4/);
    expect(userErrorOf(withSet('train.batch_size=0'))).toMatch(/at train\.batch_size: expected a positive integer/);
    expect(userErrorOf(withSet('seed=-1'))).toMatch(/at seed: expected a non-negative integer, got number -1/);
    expect(userErrorOf(withSet('model.norm_eps=.inf'))).toMatch(/at model\.norm_eps: expected a positive number, got number Infinity/);
    // 0 is meaningful where documented (vocab size from the tokenizer, no query compression, all examples).
    expect(loadConfig(BASE_CONFIG_PATH, ['model.vocab_size=0', 'model.q_lora_rank=0', 'eval.limit=0']).model.q_lora_rank).toBe(0);
  });

  test('enums list their values and suggest the nearest', () => {
    expect(userErrorOf(withSet('model.variant=qknorm'))).toMatch(/at model\.variant: expected one of baseline\|qk-clip\|qk-norm, got string "qknorm" \(did you mean qk-norm\?\)/);
    expect(userErrorOf(withSet('backend=gpu'))).toMatch(/at backend: expected one of auto\|tensorflow\|wasm\|cpu\|webgpu, got string "gpu"/);
    expect(userErrorOf(withSet('data.tokenizer=bpe'))).toMatch(/at data\.tokenizer: expected one of byte\|gpt2/);
    expect(userErrorOf(withSet('train.optimizer=adam'))).toMatch(/at train\.optimizer: expected one of adamw\|muon, got string "adam" \(did you mean adamw\?\)/);
    expect(userErrorOf(withSet('train.schedule=linear'))).toMatch(/at train\.schedule: expected one of cosine\|wsd/);
    expect(userErrorOf(withSet('model.qk_norm.scope=rope'))).toMatch(/at model\.qk_norm\.scope: expected one of full\|nope, got string "rope" \(did you mean nope\?\)/);
    expect(userErrorOf(withSet('experiment.variants=[baseline, qk_clip]'))).toMatch(/at experiment\.variants\[1\]: .*\(did you mean qk-clip\?\)/);
  });

  test('the RoPE slice must be even', () => {
    expect(userErrorOf(withSet('model.qk_rope_head_dim=5'))).toBe(
      'config error at model.qk_rope_head_dim: must be even (RoPE rotates pairs), got 5 [--set model.qk_rope_head_dim=5]',
    );
    expect(loadConfig(BASE_CONFIG_PATH, ['model.qk_rope_head_dim=6']).model.qk_rope_head_dim).toBe(6);
  });

  test('key groups must divide the heads', () => {
    expect(userErrorOf(withSet('model.qk_norm.key_groups=3'))).toMatch(/at model\.qk_norm\.key_groups: must divide model\.n_heads \(8\) or be 0, got 3/);
    expect(userErrorOf(withSet('model.qk_norm.key_groups=16'))).toMatch(/key_groups: must divide/);
    for (const groups of [0, 1, 2, 4, 8]) {
      expect(loadConfig(BASE_CONFIG_PATH, [`model.qk_norm.key_groups=${groups}`]).model.qk_norm.key_groups).toBe(groups);
    }
    // The check uses the merged n_heads, not base's.
    expect(userErrorOf(withSet('model.n_heads=6', 'model.qk_norm.key_groups=4'))).toMatch(/must divide model\.n_heads \(6\)/);
  });

  test('fractions, learning rate, sequence length and QK-clip ranges', () => {
    expect(userErrorOf(withSet('data.val_fraction=1'))).toMatch(/at data\.val_fraction: expected a number in \[0, 1\), got number 1/);
    expect(userErrorOf(withSet('data.test_fraction=-0.1'))).toMatch(/at data\.test_fraction: expected a number in \[0, 1\)/);
    expect(userErrorOf(withSet('data.val_fraction=0.5', 'data.test_fraction=0.5'))).toMatch(
      /at data\.test_fraction: data\.val_fraction \+ data\.test_fraction must be < 1 .*got 0\.5 \+ 0\.5/,
    );
    expect(loadConfig(BASE_CONFIG_PATH, ['data.val_fraction=0.4', 'data.test_fraction=0.5']).data.test_fraction).toBe(0.5);
    expect(userErrorOf(withSet('train.lr=0'))).toMatch(/at train\.lr: expected a positive number, got number 0/);
    expect(userErrorOf(withSet('train.lr=-1e-3'))).toMatch(/at train\.lr: expected a positive number/);
    expect(userErrorOf(withSet('data.seq_len=1024'))).toMatch(/at data\.seq_len: 1024 exceeds model\.max_seq_len \(512\)/);
    expect(loadConfig(BASE_CONFIG_PATH, ['data.seq_len=512']).data.seq_len).toBe(512);
    expect(userErrorOf(withSet('train.qk_clip.tau=0'))).toMatch(/at train\.qk_clip\.tau: expected a positive number, got number 0/);
    expect(userErrorOf(withSet('train.qk_clip.alpha=1.5'))).toMatch(/at train\.qk_clip\.alpha: expected a number in \[0, 1\], got number 1\.5/);
    expect(loadConfig(BASE_CONFIG_PATH, ['train.qk_clip.alpha=1']).train.qk_clip.alpha).toBe(1);
    expect(userErrorOf(withSet('train.beta2=1'))).toMatch(/at train\.beta2: expected a number in \[0, 1\)/);
  });

  test('training budget must hold the warmup and at least one step', () => {
    expect(userErrorOf(withSet('train.warmup_tokens=20000000'))).toMatch(/at train\.warmup_tokens: 20000000 exceeds train\.tokens \(10000000\)/);
    // base: 32 sequences x 1 micro-batch x 256 tokens = 8192 tokens per optimizer step.
    expect(userErrorOf(withSet('train.tokens=8000', 'train.warmup_tokens=0'))).toMatch(/at train\.tokens: 8000 is less than one optimizer step .* 8192 tokens/);
  });

  test('sizes are bounded: int32 token ids and dimensions, 2^24 positions, RoPE tables within this machine', () => {
    expect(userErrorOf(withSet('model.vocab_size=1e12'))).toBe(
      'config error at model.vocab_size: 1000000000000 is beyond 2^31 - 1 (token ids are int32) [--set model.vocab_size=1e12]',
    );
    expect(userErrorOf(withSet('model.vocab_size=2147483648'))).toMatch(/^config error at model\.vocab_size: 2147483648 is beyond 2\^31 - 1/);
    expect(userErrorOf(withSet('model.d_model=2147483648'))).toMatch(/^config error at model\.d_model: 2147483648 is beyond 2\^31 - 1 \(tensor dimensions are int32\)/);
    expect(userErrorOf(withSet('train.batch_size=1e10', 'train.tokens=1e15'))).toMatch(/^config error at train\.batch_size: 10000000000 is beyond 2\^31 - 1/);
    expect(userErrorOf(withSet('eval.batch_size=1e10'))).toMatch(/^config error at eval\.batch_size: 10000000000 is beyond 2\^31 - 1/);
    expect(userErrorOf(withSet('model.max_seq_len=1e9'))).toBe(
      'config error at model.max_seq_len: 1000000000 positions are beyond the limit of 16777216 (2^24; see configs/base.yaml) [--set model.max_seq_len=1e9]',
    );
    expect(loadConfig(BASE_CONFIG_PATH, ['model.max_seq_len=16777216', 'model.qk_rope_head_dim=2', 'model.qk_nope_head_dim=2']).model.max_seq_len).toBe(16777216);
    // Under the position cap, the tables (cos and sin of every position) must still fit this machine's memory.
    expect(userErrorOf(withSet('model.max_seq_len=16777216', 'model.qk_rope_head_dim=65536'))).toMatch(
      /^config error at model\.max_seq_len: RoPE tables of 16777216 positions x 65536 rotary features need about [\d.]+ TiB, more than this machine's memory \([\d.]+ GiB\) \[--set model\.max_seq_len=16777216\]$/,
    );
  });

  test('user text in config errors is escaped: no raw control bytes reach the terminal', () => {
    const raw = /[\x00-\x1f\x7f-\x9f]/;
    const keyFile = write('esc-key.yaml', 'model:\n  "\\e[2Jd_model\\x9b": 4\n');
    const k = userErrorOf(() => loadConfig(keyFile));
    expect(k).toMatch(/^config error at model\.\\x1b\[2Jd_model\\x9b: unknown key/);
    expect(k).not.toMatch(raw);
    const valueFile = write('esc-value.yaml', 'name: "\\e]0;owned\\a\\x9b31m"\n');
    const v = userErrorOf(() => loadConfig(valueFile));
    expect(v).toMatch(/^config error at name: expected a run name/);
    expect(v).not.toMatch(raw);
    const listFile = write('esc-list.yaml', 'eval:\n  tasks: "\\x9b2J"\n');
    expect(userErrorOf(() => loadConfig(listFile))).not.toMatch(raw);
    const nameFile = write('esc-\x1b[31m-name.yaml', 'model: 3\n');
    const n = userErrorOf(() => loadConfig(nameFile));
    expect(n).toMatch(/esc-\\x1b\[31m-name\.yaml:1\]$/);
    expect(n).not.toMatch(raw);
    expect(userErrorOf(() => loadConfig(path.join(tmp, 'missing-\x07\x9b.yaml')))).not.toMatch(raw);
    const extendsFile = write('esc-extends.yaml', 'extends: "\\e[31mnowhere.yaml"\n');
    const e = userErrorOf(() => loadConfig(extendsFile));
    expect(e).toMatch(/cannot read \\x1b\[31mnowhere\.yaml/);
    expect(e).not.toMatch(raw);
    expect(userErrorOf(withSet('name=\x1b[31mred\x9b'))).not.toMatch(raw);
    expect(userErrorOf(withSet('model.variant=\x9bqk-norm'))).not.toMatch(raw);
    expect(userErrorOf(() => resolveConfigObject({ ['\x1b[1mx']: 1 }, [], 'arm \x1b'))).not.toMatch(raw);
    expect(userErrorOf(() => resolveConfigObject({ extends: 'x' }, [], 'arm \x1b'))).not.toMatch(raw);
    expect(userErrorOf(() => setConfigValue({ s: '\x1b' }, 's.\x1b', 1))).not.toMatch(raw);
  });

  test('errors from files name the file and the line of the key', () => {
    const file = write('lines.yaml', '# a comment\nname: lines\n\nmodel:\n  d_model: 64\n  qk_rope_head_dim: 7\n');
    expect(userErrorOf(() => loadConfig(file))).toMatch(/at model\.qk_rope_head_dim: must be even .*\[.*lines\.yaml:6\]$/);
    const seqFile = write('seq.yaml', 'data:\n  seq_len: 600\n');
    expect(userErrorOf(() => loadConfig(seqFile))).toMatch(/at data\.seq_len: 600 exceeds model\.max_seq_len \(512\) \[.*seq\.yaml:2\]$/);
    // A value inherited from base points into base.yaml.
    expect(userErrorOf(() => loadConfig(BASE_CONFIG_PATH, ['model.max_seq_len=128']))).toMatch(/at data\.seq_len: 256 exceeds .*\[.*base\.yaml:\d+\]$/);
  });

  test('missing, unreadable and malformed files name the file', () => {
    expect(userErrorOf(() => loadConfig(path.join(tmp, 'does-not-exist.yaml')))).toMatch(/^config error: cannot read config file .*does-not-exist\.yaml: no such file$/);
    expect(userErrorOf(() => loadConfig(tmp))).toMatch(/cannot read config file .*: is a directory$/);
    const bad = write('bad.yaml', 'name: ok\nmodel:\n  d_model: [1, 2\n  n_heads: 4\n');
    expect(userErrorOf(() => loadConfig(bad))).toMatch(/^config error in .*bad\.yaml:\d+:\d+: invalid YAML: /);
    const dup = write('dup.yaml', 'name: a\nseed: 1\nname: b\n');
    expect(userErrorOf(() => loadConfig(dup))).toMatch(/^config error in .*dup\.yaml:3:1: invalid YAML: Map keys must be unique$/);
    const list = write('list.yaml', '- name: a\n');
    expect(userErrorOf(() => loadConfig(list))).toMatch(/^config error in .*list\.yaml: the top level must be a mapping of config keys, got a list/);
  });
});

describe('derived sizes', () => {
  test('effectiveKeyGroups: 0 means one group per head', () => {
    const model = baseConfig().model; // 8 heads
    expect(effectiveKeyGroups(model)).toBe(8);
    expect(effectiveKeyGroups({ ...model, qk_norm: { ...model.qk_norm, key_groups: 2 } })).toBe(2);
  });

  test('effectiveVocab: 0 rounds the tokenizer up to a multiple of 64; a fixed size must cover it', () => {
    const model = baseConfig().model;
    expect(effectiveVocab(model, 256)).toBe(256);
    expect(effectiveVocab(model, 257)).toBe(320);
    expect(effectiveVocab(model, 50257)).toBe(50304); // 786 x 64
    expect(effectiveVocab({ ...model, vocab_size: 50304 }, 50257)).toBe(50304);
    expect(effectiveVocab({ ...model, vocab_size: 300 }, 256)).toBe(300);
    expect(userErrorOf(() => effectiveVocab({ ...model, vocab_size: 256 }, 50257))).toMatch(
      /^config error at model\.vocab_size: 256 is smaller than the tokenizer's vocabulary \(50257\)/,
    );
  });
});
