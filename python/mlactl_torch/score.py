"""A long-lived scoring process for one checkpoint: `python -m mlactl_torch score --model DIR`.

The CLI's evaluation keeps its tasks, metrics and result files in TypeScript and asks this process only for what
lm-evaluation-harness asks a model (PROTOCOL.md, "Scoring"): per-token log-probabilities of token sequences from a
given position on (a continuation's tokens, or a rolling window's new ones), and whether each token was the greedy
choice. One JSON request per stdin line, one JSON answer per stdout line, until stdin closes.

Throughput (GPU), three things:
- Sequences that share a prefix (a multiple-choice item's choices after one context) are packed into one row: the
  prefix once, then each sequence's own tokens at their own positions, each attending to the prefix and to itself
  only (a block mask). For HellaSwag-sized items that feeds about 170 tokens per item instead of about 420.
- The output head runs only at the positions asked for, so the [*, V] logits of context tokens are never formed.
- Rows are sorted by length and cut into forward passes of at most `token_budget` padded tokens, sized to the
  device's free memory; every pass's results stay on the device until one host read per request.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F

from .checkpoint import load_model_weights, read_config, spec_from_checkpoint_config
from .model import MLAForCausalLM, build_for_loading, compile_blocks

CPU_TOKEN_BUDGET = 16384
MAX_TOKEN_BUDGET = 1 << 20
# Sequences share a row when their common prefix is at least this long, and at least half of each one's tokens,
# and packing saves at least this many fed tokens: less saves too little to pay for a longer row and a masked
# attention instead of the plain causal one.
MIN_SHARED = 4
# Packed rows stay this short, so the [B, 1, T, T] mask stays small beside the activations.
PACKED_ROW_LIMIT = 512
# Logits per output-head chunk (paper-400m: 5,336 positions x 50,304, 1.6 GB in bf16 and float32 together).
HEAD_ELEMENTS = 1 << 28


def load_for_scoring(folder: str, device: str, compile: bool = False) -> MLAForCausalLM:
    """
    The checkpoint's weights, checked strictly as for training, in float32 (bf16 only inside autocast). `compile`
    compiles the decoder blocks in place where it can (CUDA, torch >= 2.2: `can_compile_blocks`).
    """
    model = build_for_loading(spec_from_checkpoint_config(read_config(folder)), device)
    with torch.no_grad():
        load_model_weights(folder, model)
    model.eval()
    if compile and can_compile_blocks(device):
        compile_blocks(model)
    return model


def can_compile_blocks(device) -> bool:
    """Block-by-block compilation needs nn.Module.compile (torch >= 2.2); scoring calls the blocks, not the model."""
    return str(device).startswith("cuda") and hasattr(torch.nn.Module, "compile")


def token_budget(model: MLAForCausalLM, device: str, dtype: torch.dtype) -> int:
    """
    Padded tokens per forward pass. CUDA: half the free memory over what a token costs at the head (the logits in
    the matmul dtype, their float32 copy and the logsumexp's temporary: as if every position were scored at once)
    plus one layer's activations (no autograd keeps them past their layer). The head now runs in chunks, so this
    over-counts; it is kept because it also sizes the CLI's requests (about 1,400 HellaSwag-sized sequences at
    paper-400m), which keeps progress and the two requests in flight fine-grained. CPU: a fixed budget.
    """
    if not str(device).startswith("cuda"):
        return CPU_TOKEN_BUDGET
    s = model.spec
    per_token = s.vocab * (torch.tensor([], dtype=dtype).element_size() + 8) + (8 * s.d + 3 * s.dff + 4 * s.H * (s.dn + s.dr + s.dv)) * 4
    free = torch.cuda.mem_get_info(torch.device(device))[0]
    return int(max(512, min(MAX_TOKEN_BUDGET, free // 2 // per_token)))


class Row(NamedTuple):
    """
    One row of a forward pass: `members` (sequence indices) share their first `shared` tokens, fed once; then each
    member's own tokens up to its second-to-last (the last is only a target). A lone sequence is a row whose
    shared part is all it feeds.
    """
    members: List[int]
    shared: int
    length: int  # tokens fed


def pack_rows(seqs: Sequence[Sequence[int]], limit: int = PACKED_ROW_LIMIT) -> List[Row]:
    """
    Rows in request order. A sequence joins the row before it when the prefix that the row's first sequence
    shares with every member, itself included, stays at least max(MIN_SHARED, half of each member's n - 1), the
    join feeds at least MIN_SHARED fewer tokens than the row and the sequence apart, and the row stays within
    `limit`. A join may shorten the prefix for every member; the conditions count that. Callers that send a
    prefix's sequences next to each other (the CLI does) get them packed; any order is still scored correctly.
    """
    rows: List[Row] = []
    for i, seq in enumerate(seqs):
        if rows and len(seq) > MIN_SHARED:
            row = rows[-1]
            first = seqs[row.members[0]]
            p = min(row.shared, len(seq) - 1)
            if first[:p] != list(seq[:p]):
                p = 0
                while p < min(len(first), len(seq)) - 1 and first[p] == seq[p]:
                    p += 1
            own = sum(len(seqs[m]) - 1 for m in row.members) + len(seq) - 1  # fed tokens if nothing were shared
            length = own - len(row.members) * p  # the prefix fed once instead of once per member
            saved = row.length + len(seq) - 1 - length  # against the row as it is and this sequence alone
            longest = max(len(seq), max(len(seqs[m]) for m in row.members)) - 1
            if p >= max(MIN_SHARED, longest / 2) and saved >= MIN_SHARED and length <= limit:
                rows[-1] = Row(row.members + [i], p, length)
                continue
        rows.append(Row([i], len(seq) - 1, len(seq) - 1))
    return rows


def plan_passes(lengths: List[int], budget: int, packed: Optional[List[bool]] = None) -> List[List[int]]:
    """
    Indices of rows per forward pass: longest first, each pass's count x its longest length <= budget. With
    `packed`, packed rows and lone sequences go to separate passes, so lone ones keep the plain causal attention.
    The pass with the most padded tokens comes first, so running out of memory shows on the first.
    """
    kinds = packed or [False] * len(lengths)
    passes: List[List[int]] = []
    for kind in sorted(set(kinds), reverse=True):
        order = sorted((i for i in range(len(lengths)) if kinds[i] == kind), key=lambda i: (-lengths[i], i))
        start = len(passes)
        for i in order:
            if len(passes) > start and (len(passes[-1]) + 1) * lengths[passes[-1][0]] <= budget:
                passes[-1].append(i)
            else:
                passes.append([i])
    return sorted(passes, key=lambda rows: -len(rows) * lengths[rows[0]])


@torch.no_grad()
def score_pass(model: MLAForCausalLM, seqs: Sequence[Sequence[int]], starts: Sequence[int], rows: List[Row], device: str, dtype: torch.dtype):
    """
    One forward pass over `rows`, right-padded to the longest. Returns, on the device, the log-probabilities and
    greedy flags of every scored position, flattened in the order of the rows' members (each member's positions
    starts[i]..n-2 in order), so the host reads exactly the answer.
    """
    T = max(r.length for r in rows)
    packed = any(len(r.members) > 1 for r in rows)
    tokens = [[0] * T for _ in rows]
    # Packed rows only: each token's position in its own sequence, and its segment (-1 the shared prefix, j member
    # j's own tokens, -2 padding).
    positions = [[0] * T for _ in rows] if packed else None
    segments = [[-2] * T for _ in rows] if packed else None
    pick_row: List[int] = []
    pick_col: List[int] = []
    targets: List[int] = []
    for b, row in enumerate(rows):
        p = row.shared
        first = seqs[row.members[0]]
        tokens[b][:p] = first[:p]
        if packed:
            positions[b][:p] = range(p)
            segments[b][:p] = [-1] * p
        at = p  # where the next member's own tokens start in the row
        for j, i in enumerate(row.members):
            seq, n, f = seqs[i], len(seqs[i]), starts[i]
            own = n - 1 - p
            tokens[b][at : at + own] = seq[p : n - 1]
            if packed:
                positions[b][at : at + own] = range(p, n - 1)
                segments[b][at : at + own] = [j] * own
            # Position k's prediction sits in the prefix for k < p and at at + k - p after it.
            cols = list(range(f, p)) + list(range(at + max(f, p) - p, at + own))
            pick_col.extend(cols)
            pick_row.extend([b] * len(cols))
            targets.extend(seq[f + 1 : n])
            at += own
    on_cuda = str(device).startswith("cuda")

    def put(values):
        t = torch.tensor(values, dtype=torch.long)
        return t.pin_memory().to(device, non_blocking=True) if on_cuda else t

    fed = put(tokens)  # [B, T]
    mask = where = None
    if packed:
        where = put(positions)  # [B, T]
        seg = put(segments)
        T_ = torch.arange(T, device=fed.device)
        causal = T_[None, :] <= T_[:, None]  # [T(query), T(key)]
        # A token sees the shared prefix and its own member's tokens, causally (padding: the prefix and earlier
        # padding), so no softmax row is empty.
        mask = causal[None] & ((seg[:, None, :] == -1) | (seg[:, None, :] == seg[:, :, None]))  # [B, T, T]
        mask = mask[:, None]  # [B, 1, T, T], broadcast over heads
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dtype == torch.bfloat16 else torch.autocast("cpu", enabled=False)
    rows_t, cols_t, target = put(pick_row), put(pick_col), put(targets)
    with autocast:
        h, _ = model.model(fed, positions=where, mask=mask)  # [B, T, d]
    wanted = h[rows_t, cols_t]  # [N, d]: the output head runs only where asked
    # The head in chunks of a fixed size: the [chunk, V] logits then take the same allocator blocks every pass,
    # however many positions a request asks for.
    chunk = max(1, HEAD_ELEMENTS // model.spec.vocab)
    picked, greedy = [], []
    for at in range(0, wanted.shape[0], chunk):
        with autocast:
            logits = F.linear(wanted[at : at + chunk], model.head_weight())  # [chunk, V]
        logits = logits.float()  # log-probabilities in float32 whatever the matmul precision
        t = target[at : at + chunk]
        picked.append(logits.gather(-1, t[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1))
        greedy.append(logits.argmax(-1) == t)
    return torch.cat(picked), torch.cat(greedy)  # [N], [N]


def check_starts(seqs: Sequence[Sequence[int]], starts: Optional[Sequence[int]]) -> List[int]:
    """`from` of a request: one position per sequence in 0..n-2 (default all 0: every position scored)."""
    for i, s in enumerate(seqs):
        if len(s) < 2:
            raise ValueError(f"sequence {i} has {len(s)} tokens; at least 2 are needed (one to predict)")
    if starts is None:
        return [0] * len(seqs)
    if len(starts) != len(seqs):
        raise ValueError(f"request has {len(starts)} values in 'from' for {len(seqs)} sequences")
    for i, (f, s) in enumerate(zip(starts, seqs)):
        if not isinstance(f, int) or isinstance(f, bool) or not 0 <= f <= len(s) - 2:
            raise ValueError(f"'from' of sequence {i} is {f!r}; expected an integer in 0..{len(s) - 2}")
    return list(starts)


@torch.no_grad()
def score_sequences(model: MLAForCausalLM, seqs: List[List[int]], device: str, dtype: torch.dtype, budget: int,
                    starts: Optional[Sequence[int]] = None, pack: bool = True) -> List[dict]:
    """
    Log-probs and greedy flags of every sequence's positions starts[i]..n-2 (log p(seq[k+1] | seq[..k])), in request
    order, with one host read in all. `pack=False` gives every sequence its own row (for side-by-side timing).
    """
    starts = check_starts(seqs, starts)
    rows = pack_rows(seqs) if pack else [Row([i], len(s) - 1, len(s) - 1) for i, s in enumerate(seqs)]
    picked_all, greedy_all, where = [], [], {}
    offset = 0
    for indices in plan_passes([r.length for r in rows], budget, [len(r.members) > 1 for r in rows]):
        batch = [rows[i] for i in indices]
        picked, greedy = score_pass(model, seqs, starts, batch, device, dtype)
        picked_all.append(picked)
        greedy_all.append(greedy)
        for row in batch:
            for i in row.members:
                where[i] = offset
                offset += len(seqs[i]) - 1 - starts[i]
    flat_picked = torch.cat(picked_all).cpu().tolist()  # the one device-to-host copy of the request
    flat_greedy = torch.cat(greedy_all).int().cpu().tolist()
    return [{"logprobs": flat_picked[where[i] : where[i] + len(s) - 1 - starts[i]], "greedy": flat_greedy[where[i] : where[i] + len(s) - 1 - starts[i]]}
            for i, s in enumerate(seqs)]


def score_batch(model: MLAForCausalLM, seqs: List[List[int]], device: str, dtype: torch.dtype, starts: Optional[Sequence[int]] = None) -> List[dict]:
    """All sequences of a request (the test suite's entry point), passes sized to this device."""
    return score_sequences(model, seqs, device, dtype, token_budget(model, device, dtype), starts)


def serve(folder: str, device: str, precision: str, compile: bool = False, since: Optional[float] = None) -> int:
    """
    Answer requests until stdin closes. `ready` reports `token_budget`, the padded tokens of one forward pass: the
    caller fills its requests to it. A request this process cannot score (a bad `from`) gets `{"id", "error"}` and the process goes on.
    `compile` compiles the decoder blocks (CUDA): on an H200 it pays off only past about 50k items (bench/NOTES.md).
    With MLACTL_SCORE_TIMING=1, one line on stderr at the end says where the process's time went (loading, each
    request's computing, reading requests and writing answers), so the first requests' compilation shows apart;
    `since` (a perf_counter reading at the process's start) adds the time its imports took.
    MLACTL_SCORE_PACK=0 gives every sequence its own row (no shared prefixes), to time packing side by side.
    """
    started = time.perf_counter()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = load_for_scoring(folder, device, compile)
    loaded = time.perf_counter() - started
    budget = token_budget(model, device, dtype)
    pack = os.environ.get("MLACTL_SCORE_PACK", "1") != "0"
    out = sys.stdout
    out.write(json.dumps({"event": "ready", "device": device, "precision": "bf16" if dtype == torch.bfloat16 else "fp32", "token_budget": budget,
                          "compile": bool(compile and can_compile_blocks(device)), "packs_prefixes": pack,
                          # The caller may be busy (tokenizing) when this line arrives: its own clock says when it was written.
                          "ready_at": time.time()}) + "\n")
    out.flush()
    opened = time.perf_counter() - started
    computing: List[float] = []
    reading = writing = 0.0
    sequences = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        t0 = time.perf_counter()
        request = json.loads(line)
        t1 = time.perf_counter()
        try:
            answer = {"id": request["id"], "results": score_sequences(model, request["seqs"], device, dtype, budget, request.get("from"), pack)}
        except ValueError as e:
            answer = {"id": request["id"], "error": str(e)}
        t2 = time.perf_counter()
        out.write(json.dumps(answer) + "\n")
        out.flush()
        reading, writing = reading + t1 - t0, writing + time.perf_counter() - t2
        computing.append(t2 - t1)
        sequences += len(request["seqs"])
    if os.environ.get("MLACTL_SCORE_TIMING") == "1":
        imports = f"imports {started - since:.2f} s, " if since is not None else ""
        print(f"score timing: {imports}loading {loaded:.2f} s (model and weights), ready after {opened:.2f} s; {len(computing)} requests, {sequences} sequences; computing {sum(computing):.2f} s "
              f"(per request: {' '.join(f'{c:.2f}' for c in computing)}); reading requests {reading:.2f} s; writing answers {writing:.2f} s",
              file=sys.stderr, flush=True)
    return 0
