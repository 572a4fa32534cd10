"""A long-lived scoring process for one checkpoint: `python -m mlactl_torch score --model DIR`.

The CLI's evaluation keeps its tasks, metrics and result files in TypeScript and asks this process only for what
lm-evaluation-harness asks a model (PROTOCOL.md, "Scoring"): per-token log-probabilities of whole token
sequences, and whether each token was the greedy choice. One JSON request per stdin line, one JSON answer per
stdout line, until stdin closes.
"""
from __future__ import annotations

import json
import sys
from typing import List

import torch
import torch.nn.functional as F

from .checkpoint import load_model_weights, read_config, spec_from_checkpoint_config
from .model import MLAForCausalLM


def load_for_scoring(folder: str, device: str) -> MLAForCausalLM:
    """The checkpoint's weights, checked strictly as for training, in float32 (bf16 only inside autocast)."""
    model = MLAForCausalLM(spec_from_checkpoint_config(read_config(folder)))
    with torch.no_grad():
        load_model_weights(folder, model)
    return model.to(device).eval()


@torch.no_grad()
def score_batch(model: MLAForCausalLM, seqs: List[List[int]], device: str, dtype: torch.dtype) -> List[dict]:
    """Sequences right-padded to one length (causal attention: padding after a sequence never reaches it)."""
    T = max(len(s) for s in seqs)
    tokens = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    tokens = tokens.to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dtype == torch.bfloat16 else torch.autocast("cpu", enabled=False)
    with autocast:
        logits = model(tokens[:, :-1]).logits  # [B, T-1, V]
    logp = F.log_softmax(logits.float(), dim=-1)  # log-softmax in float32 whatever the matmul precision
    targets = tokens[:, 1:]
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, T-1]
    greedy = logp.argmax(-1) == targets
    picked, greedy = picked.cpu().tolist(), greedy.cpu().tolist()
    return [{"logprobs": picked[i][: len(s) - 1], "greedy": greedy[i][: len(s) - 1]} for i, s in enumerate(seqs)]


def serve(folder: str, device: str, precision: str) -> int:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = load_for_scoring(folder, device)
    out = sys.stdout
    out.write(json.dumps({"event": "ready", "device": device, "precision": "bf16" if dtype == torch.bfloat16 else "fp32"}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        results = score_batch(model, request["seqs"], device, dtype)
        out.write(json.dumps({"id": request["id"], "results": results}) + "\n")
        out.flush()
    return 0
