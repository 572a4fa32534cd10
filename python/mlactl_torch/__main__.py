"""Entry point: `python -m mlactl_torch train --job JOB.json` and `python -m mlactl_torch info` (PROTOCOL.md).

Exit codes of `train`: 0 completed or interrupted, 2 bad input (one `error` event naming the key or file),
3 diverged, 1 an internal error (an `error` event, and the traceback on stderr).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_thread_env(requested: int) -> int:
    """
    Threads per process: `engine.threads`, else OMP_NUM_THREADS if the caller set it, else this process's share of
    the cores less one (kept for the CLI that renders progress, and the OS). OpenMP, MKL and OpenBLAS get the same
    count before torch loads them. Why so careful: OpenMP's barriers spin, so a pool with one thread descheduled
    stalls everyone; on a busy 2-core machine the demo preset ran at 8,400 tokens/s on 1 thread and 660 on 2.
    """
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))))
    share = _cores() // local
    threads = requested or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or max(1, share - 1 if share > 1 else share)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    return threads


def info() -> dict:
    out = {"python": sys.version.split()[0], "executable": sys.executable, "cores": _cores()}
    try:
        import numpy

        out["numpy"] = numpy.__version__
    except ImportError:
        out["numpy"] = None
    try:
        import safetensors

        out["safetensors"] = getattr(safetensors, "__version__", "installed")
    except ImportError:
        out["safetensors"] = None
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # not installed, or a broken install: both mean "no torch engine here"
        out.update(torch=None, usable=False, reason=f"PyTorch is not importable: {type(e).__name__}: {e}")
        return out
    cuda = torch.cuda.is_available()
    out.update(
        torch=torch.__version__,
        usable=True,
        cuda_available=cuda,
        cuda=torch.version.cuda,
        device_count=torch.cuda.device_count() if cuda else 0,
        device_names=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        bf16_supported=bool(cuda and torch.cuda.is_bf16_supported()),
        threads=torch.get_num_threads(),
        sdpa=hasattr(F, "scaled_dot_product_attention"),
        compile=hasattr(torch, "compile"),
        distributed=torch.distributed.is_available(),
        nccl=bool(cuda and torch.distributed.is_available() and torch.distributed.is_nccl_available()),
    )
    return out


def train(job_path: str) -> int:
    # The protocol owns the real stdout; anything else printing to fd 1 (libraries, C code) lands on stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    from .events import Events
    from .job import JobError, load_job

    events = Events(protocol, enabled=os.environ.get("RANK", "0") == "0")

    def fail(message: str, code: int) -> int:
        events.emit({"event": "error", "message": message})
        if not events.enabled:
            print(f"mlactl_torch rank {os.environ.get('RANK')}: {message}", file=sys.stderr)
        return code

    try:
        job = load_job(job_path)
    except JobError as e:
        return fail(str(e), 2)
    threads = set_thread_env(job.engine.threads)
    try:
        import torch
    except Exception as e:
        return fail(f"PyTorch is not importable from {sys.executable}: {type(e).__name__}: {e}", 2)
    torch.set_num_threads(threads)
    from .checkpoint import CheckpointError
    from .data import DataError
    from .train import run

    try:
        return run(job, events)
    except (JobError, DataError, CheckpointError) as e:
        return fail(str(e), 2)
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        first = (str(e).splitlines() or [""])[0]
        return fail(f"internal error: {type(e).__name__}: {first}", 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlactl_torch", description="mlactl's torch engine")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="run one training job (JSON-line events on stdout)")
    t.add_argument("--job", required=True, help="path to JOB.json (format mlactl-torch-job/1)")
    sub.add_parser("info", help="print this interpreter's torch, numpy, safetensors and devices as JSON")
    s = sub.add_parser("score", help="serve per-token log-probs of one checkpoint: JSON requests on stdin (PROTOCOL.md)")
    s.add_argument("--model", required=True, help="a model folder (model.safetensors + config.json)")
    s.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    s.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    s.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "info":
        print(json.dumps(info()))
        return 0
    if args.command == "score":
        return score(args)
    return train(args.job)


def score(args) -> int:
    threads = set_thread_env(args.threads)
    import torch

    torch.set_num_threads(threads)
    from .checkpoint import CheckpointError
    from .score import serve

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        return serve(args.model, device, args.precision if device == "cuda" else "fp32")
    except CheckpointError as e:
        sys.stdout.write(json.dumps({"event": "error", "message": str(e).splitlines()[0]}) + "\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
