"""Entry point (PROTOCOL.md): `python -m mlactl_torch train --job JOB.json`, `info`, `score`, and the decode
commands `generate`, `verify`, `bench-decode` and `selftest-decode`.

Exit codes of `train`: 0 completed or interrupted, 2 bad input (one `error` event naming the key or file),
3 diverged, 1 an internal error (an `error` event, and the traceback on stderr). The decode commands print one JSON
object on stdout (`{"event": "result", ...}` or `{"event": "error", "message"}` with exit 2; bench-decode exits 1
when a cache fails its check against the float64 reference).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

STARTED = time.perf_counter()  # before torch is imported: `score` reports how long its imports took


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
    s.add_argument("--compile", default="off", choices=("on", "off"), help="torch.compile the decoder blocks on CUDA (pays off only for large task sets)")
    g = sub.add_parser("generate", help="greedy tokens from a checkpoint through a decode cache: one JSON result on stdout")
    g.add_argument("--model", required=True, help="a model folder (model.safetensors + config.json)")
    g.add_argument("--prompt", required=True, help="prompt token ids, comma-separated")
    g.add_argument("--max-tokens", type=int, required=True)
    g.add_argument("--cache", default=None, help="latent, latent+invrms or full-key (default: the variant's cheapest)")
    g.add_argument("--eos", type=int, default=None, help="stop after this id")
    g.add_argument("--vocab-limit", type=int, default=None, help="ids at or above this are never chosen (the tokenizer's size)")
    g.add_argument("--attention", default="auto", choices=("auto", "torch", "fused"), help="single-token steps: the fused Triton kernel or PyTorch (auto: the fused kernel for a 16-bit model on CUDA when it passes its check)")
    v = sub.add_parser("verify", help="every decode cache against the training form and a float64 reference: one JSON report on stdout")
    v.add_argument("--model", help="a model folder (model.safetensors + config.json)")
    v.add_argument("--spec", help="instead of --model: a ModelSpec as JSON; weights from --seed, norm gains in [0.5, 1.5]")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--tokens", required=True, help="the test sequence's token ids, comma-separated")
    v.add_argument("--tolerance", type=float, default=1e-5)
    v.add_argument("--reference-param-limit", type=int, default=500_000_000)
    b = sub.add_parser("bench-decode", help="time one attention layer's decode step per cache (mlactl bench decode --engine torch)")
    b.add_argument("--dims", required=True, help="the attention dims as a ModelSpec JSON object")
    b.add_argument("--contexts", required=True, help="cached tokens per sequence, comma-separated integers")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--repeats", type=int, default=10)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--inner", type=int, default=5, help="CUDA: timed replays per step and round")
    b.add_argument("--caches", default="latent,latent+invrms,full-key")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    b.add_argument("--tolerance", type=float, default=None)
    sub.add_parser("selftest-decode", help="CUDA: the fused Triton decode kernel against float64 and the PyTorch path")
    for p in (g, v, b):
        p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
        p.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "info":
        print(json.dumps(info()))
        return 0
    if args.command == "score":
        return score(args)
    if args.command in ("generate", "verify", "bench-decode", "selftest-decode"):
        return decode_command(args)
    return train(args.job)


def score(args) -> int:
    threads = set_thread_env(args.threads)
    import torch

    torch.set_num_threads(threads)
    from .checkpoint import CheckpointError
    from .score import serve

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        return serve(args.model, device, args.precision if device == "cuda" else "fp32", args.compile == "on", STARTED)
    except CheckpointError as e:
        sys.stdout.write(json.dumps({"event": "error", "message": str(e).splitlines()[0]}) + "\n")
        return 2
    except (KeyboardInterrupt, BrokenPipeError):
        # The user's Ctrl-C reaches this process with the CLI, which stops reading: end quietly, not with a
        # traceback under the CLI's own message (stdout to /dev/null, so exiting does not flush into the closed pipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 130


def _ids(text: str, flag: str):
    try:
        return [int(t) for t in text.split(",") if t.strip() != ""]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def decode_command(args) -> int:
    """generate, verify, bench-decode, selftest-decode: one JSON object on stdout, or an error event and exit 2."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library prints land on stderr; stdout carries the result

    def emit(obj: dict) -> None:
        protocol.write(json.dumps(obj) + "\n")
        protocol.flush()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.command == "selftest-decode":
        import torch  # noqa: F401

        from .decode_triton import selftest

        return selftest(log=lambda m: (protocol.write(m + "\n"), protocol.flush()))
    threads = set_thread_env(args.threads)
    import torch

    torch.set_num_threads(threads)
    from .bench_decode import BenchError, CheckFailed
    from .checkpoint import CheckpointError
    from .decode import DecodeError
    from .job import JobError

    try:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise DecodeError("--device: cuda was asked for, but torch sees no CUDA device")
        device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) or args.device == "cuda" else "cpu")
        if device.type == "cuda":
            torch.set_float32_matmul_precision("highest")  # fp32 products in fp32: the checks compare to float64
        if args.command == "bench-decode":
            from .bench_decode import dims_from_json, run_bench

            dims = dims_from_json(json.loads(args.dims))
            contexts = _ids(args.contexts, "--contexts")
            caches = [c for c in args.caches.split(",") if c]
            emit(run_bench(dims, contexts, args.batch, args.repeats, args.warmup, caches, args.seed, device, args.dtype,
                           inner=args.inner, log=log, tolerance=args.tolerance))
            return 0
        from .decode import default_cache, fused_attention_for, greedy_generate, verify_model

        model = _decode_model(args, device, torch)
        dtype = next(model.parameters()).dtype
        # verify checks the fused kernel too, where it runs. generate takes it when asked (--attention fused) and, by
        # default, only where it is the fast path: for 16-bit caches. In float32 its products run as 3xTF32 and the
        # step is several times slower than the PyTorch path's (bench/NOTES.md, H200).
        wants_fused = args.command == "verify" or args.attention == "fused" or (args.attention == "auto" and torch.finfo(dtype).bits == 16)
        fused = fused_attention_for(device, dtype, model.spec, log) if wants_fused else None
        if args.command == "generate":
            if fused is None and args.attention == "fused":
                raise DecodeError("--attention fused: the fused Triton kernel does not run here (CUDA and Triton needed, and its self-check)")
            prompt = _ids(args.prompt, "--prompt")
            vocab_limit = args.vocab_limit if args.vocab_limit is not None else model.spec.vocab
            result = greedy_generate(model, prompt, args.max_tokens, args.cache or default_cache(model.spec), args.eos, vocab_limit, fused)
            emit({"event": "result", "device": str(device), **result})
            return 0
        report = verify_model(model, _ids(args.tokens, "--tokens"), args.tolerance, args.reference_param_limit, fused)
        emit({"event": "result", "device": str(device), **report})
        return 0
    except (DecodeError, CheckpointError, JobError, BenchError, ValueError) as e:
        emit({"event": "error", "message": (str(e).splitlines() or [""])[0]})
        return 2
    except CheckFailed as e:
        emit({"event": "error", "message": str(e)})
        return 1


def _decode_model(args, device, torch):
    """The model of --model (checked strictly, as scoring loads it) or of --spec and --seed, float32, eval mode."""
    from .model import MLAForCausalLM, ModelSpec, init_parameters

    if getattr(args, "spec", None):
        from .job import parse_spec

        model = MLAForCausalLM(ModelSpec(**parse_spec(json.loads(args.spec))))
        init_parameters(model, args.seed)
        gen = torch.Generator().manual_seed(args.seed * 7727 + 5)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 1:  # norm gains of 1 would hide a missing or misplaced fold (src/inference/verify.ts)
                    p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
        return model.to(device).eval()
    if not getattr(args, "model", None):
        raise ValueError("verify: give --model DIR or --spec JSON")
    from .score import load_for_scoring

    return load_for_scoring(args.model, str(device))


if __name__ == "__main__":
    sys.exit(main())
