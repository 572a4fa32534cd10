// The `--expect` gate language (documented in docs/compare.md):
//   gate    := sum op sum            op: <  <=  >  >=  ==
//   sum     := product (('+' | '-') product)*
//   product := unary (('*' | '/') unary)*
//   unary   := '-' unary | number | ref | '(' sum ')'
//   ref     := group '.' metric      e.g. qk-norm.val_loss, baseline@lr=3e-4.brown-cloze.acc
// Group labels may contain '-', '@', '=', ',' and '.', so references are matched against the known labels
// (longest first) before falling back to a generic name, which then fails as an unknown group.
import { UserError } from '../errors';
import { CORE_METRICS, evalMetricNames, findGroups, groupMetric, type ArmGroup } from './groups';

export type ComparisonOp = '<' | '<=' | '>' | '>=' | '==';

export type ExprNode =
  | { kind: 'number'; value: number }
  | { kind: 'ref'; group: string; metric: string; text: string }
  | { kind: 'negate'; operand: ExprNode }
  | { kind: 'binary'; op: '+' | '-' | '*' | '/'; left: ExprNode; right: ExprNode };

export interface Gate {
  text: string;
  op: ComparisonOp;
  left: ExprNode;
  right: ExprNode;
}

export interface GateResult {
  expression: string;
  passed: boolean;
  left: number | null;
  right: number | null;
  /** One line: the expression, the numbers it compared, and why it failed if it did. */
  message: string;
}

type Token =
  | { kind: 'number'; value: number; at: number }
  | { kind: 'ref'; group: string; metric: string; text: string; at: number }
  | { kind: 'op'; value: string; at: number };

const NUMBER = /^(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?/;
// A hyphen continues a name only before a letter, so `brown-cloze` is one name and `val_loss-0.01` is a subtraction.
const NAME_SEGMENT = /^[A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z_][A-Za-z0-9_]*)*/;
const GENERIC_GROUP = /^[A-Za-z_][A-Za-z0-9_\-@=,]*/;
const OPERATORS = ['<=', '>=', '==', '<', '>', '+', '-', '*', '/', '(', ')'];

function syntaxError(text: string, at: number, why: string): UserError {
  return new UserError(`--expect \`${text}\`: ${why} at column ${at + 1}`);
}

function readMetricPath(text: string, start: number): { metric: string; end: number } | null {
  let pos = start;
  const segments: string[] = [];
  for (;;) {
    const m = NAME_SEGMENT.exec(text.slice(pos));
    if (!m) break;
    segments.push(m[0]);
    pos += m[0].length;
    if (text[pos] !== '.' || !NAME_SEGMENT.test(text.slice(pos + 1))) break;
    pos += 1;
  }
  return segments.length > 0 ? { metric: segments.join('.'), end: pos } : null;
}

function tokenize(text: string, groupNames: string[]): Token[] {
  const names = [...new Set(groupNames)].sort((a, b) => b.length - a.length);
  const tokens: Token[] = [];
  let pos = 0;
  while (pos < text.length) {
    if (/\s/.test(text[pos])) {
      pos++;
      continue;
    }
    const rest = text.slice(pos);
    const previous = tokens[tokens.length - 1];
    const operandExpected = !previous || (previous.kind === 'op' && previous.value !== ')');
    if (operandExpected) {
      const number = NUMBER.exec(rest);
      if (number) {
        tokens.push({ kind: 'number', value: Number(number[0]), at: pos });
        pos += number[0].length;
        continue;
      }
      const known = names.find((n) => rest.startsWith(`${n}.`));
      const group = known ?? GENERIC_GROUP.exec(rest)?.[0];
      if (group !== undefined && text[pos + group.length] === '.') {
        const path = readMetricPath(text, pos + group.length + 1);
        if (!path) throw syntaxError(text, pos + group.length + 1, 'expected a metric name');
        tokens.push({ kind: 'ref', group, metric: path.metric, text: text.slice(pos, path.end), at: pos });
        pos = path.end;
        continue;
      }
      if (group !== undefined) throw syntaxError(text, pos, `expected \`group.metric\` but found \`${group}\``);
    }
    const op = OPERATORS.find((o) => rest.startsWith(o));
    if (!op) {
      const why = operandExpected ? `unexpected \`${text[pos]}\`` : `expected an operator (< <= > >= == + - * /) before \`${text[pos]}\``;
      throw syntaxError(text, pos, why);
    }
    tokens.push({ kind: 'op', value: op, at: pos });
    pos += op.length;
  }
  return tokens;
}

/** Parse one gate. `groupNames` are the labels and variant names that references may use. */
export function parseGate(text: string, groupNames: string[]): Gate {
  const tokens = tokenize(text, groupNames);
  let index = 0;
  const peekOp = (): string | null => {
    const t = tokens[index];
    return t && t.kind === 'op' ? t.value : null;
  };
  const position = (): number => (tokens[index] ? tokens[index].at : text.length);

  const parseUnary = (): ExprNode => {
    const t = tokens[index];
    if (!t) throw syntaxError(text, text.length, 'expression ends early');
    if (t.kind === 'number') {
      index++;
      return { kind: 'number', value: t.value };
    }
    if (t.kind === 'ref') {
      index++;
      return { kind: 'ref', group: t.group, metric: t.metric, text: t.text };
    }
    if (t.value === '-') {
      index++;
      return { kind: 'negate', operand: parseUnary() };
    }
    if (t.value === '(') {
      index++;
      const inner = parseSum();
      if (peekOp() !== ')') throw syntaxError(text, position(), 'expected `)`');
      index++;
      return inner;
    }
    throw syntaxError(text, t.at, `unexpected \`${t.value}\``);
  };
  const parseProduct = (): ExprNode => {
    let node = parseUnary();
    for (let op = peekOp(); op === '*' || op === '/'; op = peekOp()) {
      index++;
      node = { kind: 'binary', op, left: node, right: parseUnary() };
    }
    return node;
  };
  const parseSum = (): ExprNode => {
    let node = parseProduct();
    for (let op = peekOp(); op === '+' || op === '-'; op = peekOp()) {
      index++;
      node = { kind: 'binary', op, left: node, right: parseProduct() };
    }
    return node;
  };

  const left = parseSum();
  const op = peekOp();
  if (op !== '<' && op !== '<=' && op !== '>' && op !== '>=' && op !== '==') {
    throw syntaxError(text, position(), 'expected one of < <= > >= ==');
  }
  index++;
  const right = parseSum();
  if (index < tokens.length) throw syntaxError(text, position(), 'unexpected text after the expression');
  return { text, op, left, right };
}

function refs(node: ExprNode): Extract<ExprNode, { kind: 'ref' }>[] {
  switch (node.kind) {
    case 'ref': return [node];
    case 'negate': return refs(node.operand);
    case 'binary': return [...refs(node.left), ...refs(node.right)];
    default: return [];
  }
}

/** Unknown groups and metrics are input errors (exit 2), reported before anything is compared. */
export function checkGateNames(gate: Gate, groups: ArmGroup[]): void {
  const evalNames = evalMetricNames(groups);
  const known = new Set<string>([...CORE_METRICS, ...evalNames]);
  for (const ref of [...refs(gate.left), ...refs(gate.right)]) {
    const found = findGroups(ref.group, groups);
    if (found.length === 0) {
      throw new UserError(`--expect \`${gate.text}\`: unknown arm group \`${ref.group}\` (groups: ${groups.map((g) => g.label).join(', ')})`);
    }
    if (found.length > 1) {
      throw new UserError(`--expect \`${gate.text}\`: \`${ref.group}\` matches several arm groups (${found.map((g) => g.label).join(', ')}); use one of those labels`);
    }
    if (!known.has(ref.metric)) {
      throw new UserError(`--expect \`${gate.text}\`: unknown metric \`${ref.metric}\` (metrics: ${[...known].join(', ')})`);
    }
  }
}

function evaluate(node: ExprNode, groups: ArmGroup[], missing: string[]): number | null {
  switch (node.kind) {
    case 'number': return node.value;
    case 'ref': {
      const value = groupMetric(findGroups(node.group, groups)[0], node.metric);
      if (value === null || value === undefined) {
        missing.push(node.text);
        return null;
      }
      return value;
    }
    case 'negate': {
      const v = evaluate(node.operand, groups, missing);
      return v === null ? null : -v;
    }
    case 'binary': {
      const a = evaluate(node.left, groups, missing), b = evaluate(node.right, groups, missing);
      if (a === null || b === null) return null;
      switch (node.op) {
        case '+': return a + b;
        case '-': return a - b;
        case '*': return a * b;
        case '/': return a / b;
      }
    }
  }
}

/** `==` allows a relative difference of 1e-9: the numbers went through text files and averaging. */
function compare(a: number, op: ComparisonOp, b: number): boolean {
  switch (op) {
    case '<': return a < b;
    case '<=': return a <= b;
    case '>': return a > b;
    case '>=': return a >= b;
    case '==': return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));
  }
}

function formatValue(v: number): string {
  return Number.isInteger(v) ? String(v) : Number(v.toPrecision(6)).toString();
}

export function evaluateGate(gate: Gate, groups: ArmGroup[]): GateResult {
  const missing: string[] = [];
  const left = evaluate(gate.left, groups, missing);
  const right = evaluate(gate.right, groups, missing);
  if (left === null || right === null || !Number.isFinite(left) || !Number.isFinite(right)) {
    const why = missing.length > 0 ? `no value for ${missing.join(', ')}` : 'the arithmetic gave no finite number';
    return { expression: gate.text, passed: false, left, right, message: `${gate.text}: ${why}` };
  }
  const passed = compare(left, gate.op, right);
  const message = `${gate.text}: ${formatValue(left)} ${gate.op} ${formatValue(right)} is ${passed ? 'true' : 'false'}`;
  return { expression: gate.text, passed, left, right, message };
}

/** Parse and name-check every gate first (exit 2 on any problem), then evaluate them all. */
export function evaluateGates(texts: string[], groups: ArmGroup[]): GateResult[] {
  const names = [...groups.map((g) => g.label), ...groups.map((g) => g.variant)];
  const gates = texts.map((t) => parseGate(t, names));
  for (const gate of gates) checkGateNames(gate, groups);
  return gates.map((gate) => evaluateGate(gate, groups));
}
