"""Time the torch engine's training step on the shapes of a preset, and what the max-logit pass costs.

    python tools/bench_step.py --preset paper-400m --batch 16 --variants baseline,qk-clip,qk-norm

Runs the engine's own Trainer.run_step (the same code as `python -m mlactl_torch train`, host read included) on
random tokens, after warm-up steps that absorb torch.compile. For each variant it prints one JSON line: tokens/s
and ms per step; for baseline and qk-norm also the step time with the max-logit pass forced on, whose difference
is the pass's cost (qk-clip always runs it). Results go to stdout; logs to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mlactl_torch.__main__ import set_thread_env  # noqa: E402

THREADS = set_thread_env(0)  # as the engine does, before torch starts its pools

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(THREADS)

from mlactl_torch.job import parse_job  # noqa: E402
from mlactl_torch.model import init_parameters  # noqa: E402
from mlactl_torch.train import Distributed, Precision, Trainer  # noqa: E402

# The model blocks of configs/models/*.yaml (only what the step needs).
PRESETS = {
    "demo": dict(vocab=320, d=128, L=4, H=4, dq=0, dc=64, dn=32, dr=16, dv=32, dff=352, max_seq_len=256, seq_len=128, optimizer="adamw"),
    "gpu-small": dict(vocab=50304, d=512, L=8, H=8, dq=0, dc=128, dn=64, dr=32, dv=64, dff=1408, max_seq_len=1024, seq_len=512, optimizer="adamw"),
    "paper-400m": dict(vocab=50304, d=1024, L=24, H=16, dq=0, dc=256, dn=64, dr=32, dv=64, dff=2816, max_seq_len=2048, seq_len=2048, optimizer="muon"),
}


def build_job(preset: str, variant: str, batch: int, accum: int, steps: int, folder: str, precision: str, compile_: str, optimizer: str = "") -> dict:
    p = dict(PRESETS[preset])
    T, preset_optimizer = p.pop("seq_len"), p.pop("optimizer")
    optimizer = optimizer or preset_optimizer
    spec = dict(p, variant=variant, G=p["H"], scope="full", qk_eps=1e-6, norm_eps=1e-6, rope_theta=10000.0, tied=False, init_std=0.02)
    tokens_path = os.path.join(folder, "tokens.bin")
    if not os.path.exists(tokens_path):
        np.random.default_rng(0).integers(0, min(50257, PRESETS[preset]["vocab"]), batch * accum * T * (steps + 2) + T + 1, dtype=np.uint16).tofile(tokens_path)
    n = os.path.getsize(tokens_path) // 2
    train = {"tokens": 0, "batch_size": batch, "grad_accum": accum, "optimizer": optimizer, "lr": 3e-4, "min_lr_ratio": 0.1, "warmup_tokens": 0,
             "schedule": "cosine", "decay_fraction": 0.2, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "adam_eps": 1e-8, "muon_momentum": 0.95,
             "grad_clip": 1.0, "z_loss": 0.0, "qk_clip": {"tau": 100, "alpha": 0.5}}
    return {
        "format": "mlactl-torch-job/1", "run_dir": os.path.join(folder, "run"), "spec": spec,
        "config": {"seed": 0, "model": {"variant": variant}, "data": {"seq_len": T, "seed": 1234}, "train": train,
                   "engine": {"precision": precision, "compile": compile_}},
        "plan": {"total_steps": 10**6, "warmup_steps": 10, "tokens_per_step": batch * accum * T},
        "data": {"train": [{"path": tokens_path, "dtype": "uint16", "offset_tokens": 0, "tokens": n}], "val": []},
        "every": {"eval_steps": 0, "ckpt_steps": 0, "maxlogit_steps": 0},
    }


def time_steps(trainer: Trainer, first: int, count: int, force_maxlogits=None) -> float:
    if force_maxlogits is not None:
        trainer.maxlogits_due = lambda step: force_maxlogits
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for s in range(first, first + count):
        trainer.run_step(s)
    sync()
    return (time.perf_counter() - t0) / count


def profile_step(trainer: Trainer, step: int, label: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        trainer.run_step(step)
        torch.cuda.synchronize()
    print(f"--- {label}: one step", file=sys.stderr)
    for key in ("self_device_time_total", "self_cuda_time_total"):  # renamed in torch 2.x
        try:
            print(prof.key_averages().table(sort_by=key, row_limit=12, max_name_column_width=70), file=sys.stderr)
            return
        except (AttributeError, KeyError, ValueError):
            continue


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="gpu-small", choices=sorted(PRESETS))
    ap.add_argument("--variants", default="baseline,qk-clip,qk-norm")
    ap.add_argument("--optimizers", default="", help="comma list (adamw,muon); default: the preset's")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", default="auto", choices=["auto", "true", "false"])
    ap.add_argument("--profile", action="store_true", help="also print the 12 costliest GPU kernels of one step (stderr)")
    args = ap.parse_args()
    compile_ = {"auto": "auto", "true": True, "false": False}[args.compile]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as folder:
        arms = [(v, o) for o in (args.optimizers.split(",") if args.optimizers else [""]) for v in args.variants.split(",")]
        for variant, optimizer in arms:
            job = parse_job(build_job(args.preset, variant, args.batch, args.accum, args.steps + args.warmup, folder, args.precision, compile_, optimizer))
            precision = Precision(job.engine.precision, device)
            use_compile = hasattr(torch, "compile") and (compile_ is True or (compile_ == "auto" and device.type == "cuda"))
            trainer = Trainer(job, Distributed(0, 1, 0, 1), device, precision, use_compile)
            init_parameters(trainer.model, 0)
            t_start = time.perf_counter()
            time_steps(trainer, 0, args.warmup, force_maxlogits=variant == "qk-clip")
            row = {"preset": args.preset, "variant": variant, "optimizer": job.train["optimizer"], "batch": args.batch, "accum": args.accum, "seq_len": job.seq_len,
                   "precision": precision.name, "compile": use_compile, "maxlogit_pass": trainer.maxlogit_pass, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                   "warmup_s": round(time.perf_counter() - t_start, 1)}
            per_step = time_steps(trainer, args.warmup, args.steps, force_maxlogits=variant == "qk-clip")
            row.update(ms_per_step=round(per_step * 1e3, 2), tokens_per_s=round(job.tokens_per_step / per_step))
            if variant != "qk-clip":
                time_steps(trainer, 0, 1, force_maxlogits=True)  # compile the graph that keeps q and k
                with_pass = time_steps(trainer, args.warmup, args.steps, force_maxlogits=True)
                row.update(ms_per_step_with_maxlogit_pass=round(with_pass * 1e3, 2), maxlogit_pass_share=round(with_pass / per_step - 1, 4))
            if args.profile and device.type == "cuda":
                profile_step(trainer, args.warmup, variant)
            if device.type == "cuda":
                row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
                torch.cuda.reset_peak_memory_stats()
            print(json.dumps(row), flush=True)
            del trainer
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
