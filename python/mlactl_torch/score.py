"""A long-lived scoring process for one checkpoint: `python -m mlactl_torch score --model DIR`.

The CLI's evaluation keeps its tasks, metrics and result files in TypeScript and asks this process only for what
lm-evaluation-harness asks a model (PROTOCOL.md, "Scoring"): per-token log-probabilities of whole token
sequences, and whether each token was the greedy choice. One JSON request per stdin line, one JSON answer per
stdout line, until stdin closes.

Throughput (GPU): a request's sequences are sorted by length and cut into forward passes of at most
`token_budget` padded tokens, sized to the device's free memory (the [B, T, V] logits dominate), so padding is
small and passes are as large as fit; the log-probabilities are picked on the device (logit minus logsumexp, no
[B, T, V] log-softmax kept) and every pass's results stay there until one host read per request.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import List

import torch

from .checkpoint import load_model_weights, read_config, spec_from_checkpoint_config
from .model import MLAForCausalLM, compile_blocks

CPU_TOKEN_BUDGET = 16384
MAX_TOKEN_BUDGET = 1 << 20


def load_for_scoring(folder: str, device: str) -> MLAForCausalLM:
    """The checkpoint's weights, checked strictly as for training, in float32 (bf16 only inside autocast)."""
    model = MLAForCausalLM(spec_from_checkpoint_config(read_config(folder)))
    with torch.no_grad():
        load_model_weights(folder, model)
    model = model.to(device).eval()
    if compile_for_scoring(device):
        compile_blocks(model)
    return model


def compile_for_scoring(device) -> bool:
    """
    Compile the blocks on CUDA unless MLACTL_SCORE_COMPILE=0: on an H200, paper-400m in bf16 scored 735 items/s
    compiled against 420 eager (bench/NOTES.md). Not on the CPU, where compiling costs more than a scoring run saves.
    """
    return str(device).startswith("cuda") and hasattr(torch, "compile") and os.environ.get("MLACTL_SCORE_COMPILE", "1") != "0"


def token_budget(model: MLAForCausalLM, device: str, dtype: torch.dtype) -> int:
    """
    Padded tokens per forward pass. CUDA: half the free memory over what a token costs at the head (the logits in
    the matmul dtype, their float32 copy and the logsumexp's temporary) plus one layer's activations (no autograd
    keeps them past their layer). CPU: a fixed budget.
    """
    if not str(device).startswith("cuda"):
        return CPU_TOKEN_BUDGET
    s = model.spec
    per_token = s.vocab * (torch.tensor([], dtype=dtype).element_size() + 8) + (8 * s.d + 3 * s.dff + 4 * s.H * (s.dn + s.dr + s.dv)) * 4
    free = torch.cuda.mem_get_info(torch.device(device))[0]
    return int(max(512, min(MAX_TOKEN_BUDGET, free // 2 // per_token)))


def plan_passes(lengths: List[int], budget: int) -> List[List[int]]:
    """Indices of sequences per forward pass: longest first, each pass's count x its longest length <= budget."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    passes: List[List[int]] = []
    for i in order:
        if passes and (len(passes[-1]) + 1) * lengths[passes[-1][0]] <= budget:
            passes[-1].append(i)
        else:
            passes.append([i])
    return passes


@torch.no_grad()
def score_pass(model: MLAForCausalLM, seqs: List[List[int]], device: str, dtype: torch.dtype):
    """
    One forward pass over sequences right-padded to the longest (causal attention: padding after a sequence never
    reaches it). Returns, on the device, the log-probabilities [B, T-1] and greedy flags [B, T-1].
    """
    T = max(len(s) for s in seqs)
    rows = [s + [0] * (T - len(s)) for s in seqs]
    tokens = torch.tensor(rows, dtype=torch.long)
    if str(device).startswith("cuda"):
        tokens = tokens.pin_memory().to(device, non_blocking=True)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dtype == torch.bfloat16 else torch.autocast("cpu", enabled=False)
    with autocast:
        logits = model(tokens[:, :-1]).logits  # [B, T-1, V]
    logits = logits.float()  # log-probabilities in float32 whatever the matmul precision
    targets = tokens[:, 1:]
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # [B, T-1]
    greedy = logits.argmax(-1) == targets
    return picked, greedy


@torch.no_grad()
def score_sequences(model: MLAForCausalLM, seqs: List[List[int]], device: str, dtype: torch.dtype, budget: int) -> List[dict]:
    """Per-token log-probs and greedy flags of every sequence, in request order, with one host read in all."""
    lengths = [len(s) for s in seqs]
    picked_all, greedy_all, where = [], [], {}
    offset = 0
    for indices in plan_passes(lengths, budget):
        picked, greedy = score_pass(model, [seqs[i] for i in indices], device, dtype)
        # Keep only real positions, flattened: what the host reads is exactly the answer.
        valid = torch.arange(picked.shape[1], device=picked.device)[None, :] < torch.tensor([lengths[i] - 1 for i in indices], device=picked.device)[:, None]
        picked_all.append(picked[valid])
        greedy_all.append(greedy[valid])
        for i in indices:
            where[i] = offset
            offset += lengths[i] - 1
    flat_picked = torch.cat(picked_all).cpu().tolist()  # the one device-to-host copy of the request
    flat_greedy = torch.cat(greedy_all).cpu().tolist()
    return [{"logprobs": flat_picked[where[i] : where[i] + n - 1], "greedy": flat_greedy[where[i] : where[i] + n - 1]} for i, n in enumerate(lengths)]


def score_batch(model: MLAForCausalLM, seqs: List[List[int]], device: str, dtype: torch.dtype) -> List[dict]:
    """All sequences of a request (the test suite's entry point), passes sized to this device."""
    return score_sequences(model, seqs, device, dtype, token_budget(model, device, dtype))


def serve(folder: str, device: str, precision: str, batch_size: int = 0, window: int = 0) -> int:
    """
    Answer requests until stdin closes. `ready` reports `batch_size`: the sequences per request the caller should
    send, at least the requested `batch_size`, more on CUDA when sequences of `window` tokens fit the budget.
    With MLACTL_SCORE_TIMING=1, one line on stderr at the end says where the process's time went (loading, each
    request's computing, reading requests and writing answers), so the first requests' compilation shows apart.
    """
    started = time.perf_counter()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = load_for_scoring(folder, device)
    budget = token_budget(model, device, dtype)
    suggested = batch_size
    if str(device).startswith("cuda") and window > 0:
        suggested = max(batch_size, min(8192, budget // (window + 1)))
    out = sys.stdout
    out.write(json.dumps({"event": "ready", "device": device, "precision": "bf16" if dtype == torch.bfloat16 else "fp32", "token_budget": budget, "batch_size": suggested}) + "\n")
    out.flush()
    loaded = time.perf_counter() - started
    computing: List[float] = []
    reading = writing = 0.0
    sequences = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        t0 = time.perf_counter()
        request = json.loads(line)
        t1 = time.perf_counter()
        results = score_sequences(model, request["seqs"], device, dtype, budget)  # ends in the one host read
        t2 = time.perf_counter()
        out.write(json.dumps({"id": request["id"], "results": results}) + "\n")
        out.flush()
        reading, writing = reading + t1 - t0, writing + time.perf_counter() - t2
        computing.append(t2 - t1)
        sequences += len(request["seqs"])
    if os.environ.get("MLACTL_SCORE_TIMING") == "1":
        print(f"score timing: loading {loaded:.2f} s; {len(computing)} requests, {sequences} sequences; computing {sum(computing):.2f} s "
              f"(per request: {' '.join(f'{c:.2f}' for c in computing)}); reading requests {reading:.2f} s; writing answers {writing:.2f} s",
              file=sys.stderr, flush=True)
    return 0
