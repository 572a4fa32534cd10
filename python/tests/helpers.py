"""Shared test fixtures: tiny specs, the float64 NumPy reference forward, the TS engine via node, jobs on disk."""
from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_ROOT = os.path.dirname(HERE)
REPO = os.path.dirname(PYTHON_ROOT)
sys.path.insert(0, PYTHON_ROOT)

from mlactl_torch.model import ModelSpec  # noqa: E402

torch.set_num_threads(1)
# Subprocesses (train jobs, gloo workers) inherit one thread each: two shared cores must not be oversubscribed.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def tiny_spec(**over) -> ModelSpec:
    """Every dimension different, so a transposed or mis-split weight cannot go unnoticed (as test/helpers.ts)."""
    base = dict(variant="baseline", vocab=37, d=24, L=2, H=4, dq=0, dc=12, dn=6, dr=4, dv=5, dff=40, G=4, scope="full",
                qk_eps=1e-6, norm_eps=1e-6, rope_theta=10000.0, max_seq_len=32, tied=False, init_std=0.25)
    base.update(over)
    return ModelSpec(**base)


def variant_cases():
    """Every variant; for qk-norm both scopes and G in {1, 2, H}; each with and without the query low-rank."""
    for dq in (0, 7):
        yield tiny_spec(variant="baseline", dq=dq)
        yield tiny_spec(variant="qk-clip", dq=dq)
        for scope, G in itertools.product(("full", "nope"), (1, 2, 4)):
            yield tiny_spec(variant="qk-norm", scope=scope, G=G, dq=dq)


def spec_json(spec: ModelSpec) -> dict:
    return {k: getattr(spec, k) for k in ("variant", "vocab", "d", "L", "H", "dq", "dc", "dn", "dr", "dv", "dff", "G", "scope",
                                          "qk_eps", "norm_eps", "rope_theta", "max_seq_len", "tied", "init_std")}


def randomize(model, seed: int = 1) -> None:
    """Random matrices (the init) and norm gains uniform in [0.5, 1.5], so every gain matters."""
    from mlactl_torch.model import init_parameters

    init_parameters(model, seed)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)


# ---------------------------------------------------------------------------------------------------------------
# The float64 NumPy forward of docs/checkpoint-format.md ("A NumPy transcription"), on a dict of arrays.


def numpy_forward(cfg: dict, W: dict, tokens) -> np.ndarray:
    H, dn, dr, dv, dc = (cfg[k] for k in ("num_attention_heads", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "kv_lora_rank"))
    eps, qk = cfg["rms_norm_eps"], cfg["qk_norm"]
    f = lambda name: np.asarray(W[name], dtype=np.float64)  # noqa: E731
    rms = lambda z, g, e: g * z / np.sqrt((z * z).mean(-1, keepdims=True) + e)  # noqa: E731
    T = len(tokens)
    pos = np.arange(T)[:, None]
    ang = pos * cfg["rope_theta"] ** (-2 * np.arange(dr // 2) / dr)

    def rope(z):
        z0, z1 = z[..., 0::2], z[..., 1::2]
        out = np.empty_like(z)
        out[..., 0::2] = z0 * np.cos(ang) - z1 * np.sin(ang)
        out[..., 1::2] = z0 * np.sin(ang) + z1 * np.cos(ang)
        return out

    def qknorm(z, g):
        G = qk["key_groups"]
        zg = z.reshape(G, H // G, T, -1)
        r = 1 / np.sqrt((zg * zg).mean(axis=(1, 3), keepdims=True) + qk["eps"])
        return (zg * r).reshape(z.shape) * g

    x = f("model.embed_tokens.weight")[tokens]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    scores_max = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        h = rms(x, f(p + "input_layernorm.weight"), eps)
        if cfg["q_lora_rank"]:
            q = rms(h @ f(a + "q_a_proj.weight").T, f(a + "q_a_layernorm.weight"), eps) @ f(a + "q_b_proj.weight").T
        else:
            q = h @ f(a + "q_proj.weight").T
        q = q.reshape(T, H, dn + dr).transpose(1, 0, 2)
        akp = h @ f(a + "kv_a_proj_with_mqa.weight").T
        c, kp = rms(akp[:, :dc], f(a + "kv_a_layernorm.weight"), eps), akp[:, dc:]
        kv = (c @ f(a + "kv_b_proj.weight").T).reshape(T, H, dn + dv).transpose(1, 0, 2)
        k = np.concatenate([kv[..., :dn], np.broadcast_to(kp, (H, T, dr))], -1)
        v = kv[..., dn:]
        if cfg["variant"] == "qk-norm":
            gq, gk = f(a + "q_norm.weight"), f(a + "k_norm.weight")
            if qk["scope"] == "full":
                q, k = qknorm(q, gq), qknorm(k, gk)
            else:
                q = np.concatenate([qknorm(q[..., :dn], gq), q[..., dn:]], -1)
                k = np.concatenate([qknorm(k[..., :dn], gk), k[..., dn:]], -1)
        q = np.concatenate([q[..., :dn], rope(q[..., dn:])], -1)
        k = np.concatenate([k[..., :dn], rope(k[..., dn:])], -1)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(dn + dr) + mask
        scores_max.append(s.max(axis=(1, 2)))  # [H]: masked entries are -inf
        prob = np.exp(s - s.max(-1, keepdims=True))
        prob /= prob.sum(-1, keepdims=True)
        o = (prob @ v).transpose(1, 0, 2).reshape(T, H * dv)
        x = x + o @ f(a + "o_proj.weight").T
        u = rms(x, f(p + "post_attention_layernorm.weight"), eps)
        g = u @ f(p + "mlp.gate_proj.weight").T
        x = x + (g / (1 + np.exp(-g)) * (u @ f(p + "mlp.up_proj.weight").T)) @ f(p + "mlp.down_proj.weight").T
    head = f("lm_head.weight") if "lm_head.weight" in W else f("model.embed_tokens.weight")
    numpy_forward.last_max_logits = np.stack(scores_max)  # [L, H] of this sequence
    return rms(x, f("model.norm.weight"), eps) @ head.T


# ---------------------------------------------------------------------------------------------------------------
# The TypeScript engine


def node_available() -> str:
    """'' when node and the built dist/ are usable, else the reason to skip."""
    if shutil.which("node") is None:
        return "node is not on the PATH"
    if not os.path.isfile(os.path.join(REPO, "dist", "data", "batches.js")):
        return "dist/ is not built (npm run build)"
    if not os.path.isdir(os.path.join(REPO, "node_modules", "@tensorflow", "tfjs")):
        return "node_modules/@tensorflow/tfjs is missing (npm ci)"
    return ""


def ts_reference(*tasks: dict) -> list:
    """Run tasks in one node process (tests/ts_reference.js); skips the test when node or dist/ is missing."""
    reason = node_available()
    if reason:
        print(f"skipping TypeScript cross-check: {reason}", file=sys.stderr)
        raise unittest.SkipTest(reason)
    proc = subprocess.run(["node", os.path.join(HERE, "ts_reference.js")], input=json.dumps({"tasks": list(tasks)}), capture_output=True, text=True, cwd=REPO, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"ts_reference.js failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)["results"]


# ---------------------------------------------------------------------------------------------------------------
# Jobs


def base_config() -> dict:
    """The resolved config keys the engine reads (configs/base.yaml defaults; train sized per test)."""
    return {
        "name": "test", "backend": "auto", "seed": 0,
        "model": {"variant": "baseline"},
        "data": {"source": "test", "tokenizer": "byte", "seq_len": 16, "seed": 1234, "val_fraction": 0.05, "test_fraction": 0.1},
        "train": {"tokens": 0, "batch_size": 4, "grad_accum": 2, "optimizer": "adamw", "lr": 3e-3, "min_lr_ratio": 0.1,
                  "warmup_tokens": 0, "schedule": "cosine", "decay_fraction": 0.2, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95,
                  "adam_eps": 1e-8, "muon_momentum": 0.95, "grad_clip": 1.0, "z_loss": 0.0, "eval_every_tokens": 0, "eval_tokens": 0,
                  "ckpt_every_tokens": 0, "log_every_steps": 1, "maxlogit_every_steps": 1, "qk_clip": {"tau": 100, "alpha": 0.5}},
        "engine": {"device": "cpu", "precision": "fp32", "compile": False, "threads": 1},
    }


def write_tokens(path: str, tokens, dtype=np.uint16) -> dict:
    np.asarray(tokens, dtype=dtype).astype(np.dtype(dtype).newbyteorder("<")).tofile(path)
    return {"path": path, "dtype": np.dtype(dtype).name, "offset_tokens": 0, "tokens": len(tokens)}


def make_job(folder: str, spec: ModelSpec, total_steps: int = 6, warmup_steps: int = 2, config=None, val_windows: int = 4, **over) -> dict:
    """A complete JOB.json object with token files under `folder` (tokens from a fixed generator)."""
    cfg = copy.deepcopy(config or base_config())
    cfg["model"]["variant"] = spec.variant
    T, B, A = cfg["data"]["seq_len"], cfg["train"]["batch_size"], cfg["train"]["grad_accum"]
    rng = np.random.default_rng(7)
    train = write_tokens(os.path.join(folder, "train.bin"), rng.integers(0, spec.vocab, 4000))
    val = write_tokens(os.path.join(folder, "val.bin"), rng.integers(0, spec.vocab, 600))
    job = {
        "format": "mlactl-torch-job/1", "config": cfg, "spec": spec_json(spec), "run_dir": os.path.join(folder, "run"),
        "resume_from": None, "stop_after_steps": None,
        "plan": {"total_steps": total_steps, "warmup_steps": warmup_steps, "tokens_per_step": B * A * T},
        "data": {"train": [train], "val": [val]}, "val_starts": [i * T for i in range(val_windows)],
        "tokenizer": {"name": "byte", "hash": "test", "eos": 256}, "every": {"eval_steps": 3, "ckpt_steps": 0, "maxlogit_steps": 2},
    }
    job.update(over)
    return job


def write_job(folder: str, job: dict, name: str = "job.json") -> str:
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        json.dump(job, f)
    return path


def run_train(job_path: str, env_extra=None, timeout: int = 120):
    """Run `python -m mlactl_torch train --job ...`; returns (exit code, events, stderr)."""
    env = {**CHILD_ENV, **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-m", "mlactl_torch", "train", "--job", job_path], cwd=PYTHON_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, parse_events(proc.stdout), proc.stderr


def parse_events(stdout: str) -> list:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def temp_dir(test: unittest.TestCase) -> str:
    d = tempfile.mkdtemp(prefix="mlactl-torch-test-")
    test.addCleanup(shutil.rmtree, d, True)
    return d


class CollectedEvents:
    """An Events stand-in for in-process runs: keeps the events instead of printing them."""

    enabled = True

    def __init__(self):
        self.events = []

    def emit(self, event: dict) -> None:
        self.events.append(json.loads(json.dumps(event, default=str)))


def run_in_process(job: dict):
    """train.run on a JOB object in this process (no torch import per run); returns (exit code, events)."""
    from mlactl_torch.job import parse_job
    from mlactl_torch.train import run

    events = CollectedEvents()
    code = run(parse_job(job), events)
    return code, events.events


def steps_of(events: list) -> list:
    return [e for e in events if e["event"] == "step"]


def choice_sets(gen, n_items: int = 6, vocab: int = 37):
    """
    Scoring requests shaped like multiple-choice items: a context, then 1-4 continuations of 1-6 tokens scored from
    the context's last token; between items, a lone sequence scored from a random position. Returns (seqs, starts).
    """
    seqs, starts = [], []
    for _ in range(n_items):
        ctx = torch.randint(0, vocab, (int(torch.randint(1, 14, (1,), generator=gen)),), generator=gen).tolist()
        for _ in range(int(torch.randint(1, 5, (1,), generator=gen))):
            cont = torch.randint(0, vocab, (int(torch.randint(1, 7, (1,), generator=gen)),), generator=gen).tolist()
            seqs.append(ctx + cont)
            starts.append(max(0, len(ctx) - 1))
        lone = torch.randint(0, vocab, (int(torch.randint(2, 30, (1,), generator=gen)),), generator=gen).tolist()
        seqs.append(lone)
        starts.append(int(torch.randint(0, len(lone) - 1, (1,), generator=gen)))
    return seqs, starts


def sequence_scores(model, seq):
    """log p(seq[k+1] | seq[..k]) and greedy flags of one sequence scored alone by `model` (on the CPU)."""
    import torch.nn.functional as F

    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([seq[:-1]])).logits[0], -1)
    return logp.gather(-1, torch.tensor(seq[1:])[:, None])[:, 0], logp.argmax(-1) == torch.tensor(seq[1:])
