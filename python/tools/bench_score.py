"""Time the scoring server's work on random multiple-choice items: what `mlactl eval --engine torch` asks per item.

    python tools/bench_score.py --preset paper-400m --items 2000 --precision bf16

A randomly initialised model of the preset's shape, N items of `--choices` choices each: a shared context of
`--context` tokens (jittered +-25%) followed by each choice's continuation of `--continuation` tokens (jittered),
scored from the context's last token on as the CLI asks (score.score_sequences, the same code the server runs: a
choice's sequences packed after their shared context unless --no-pack, one host read per request, and the answer
line serialised as the server writes it), in requests of `--request` items. Prints one JSON line: items/s,
sequences/s, tokens/s, the token budget per forward pass. Warm-up requests come first (CUDA kernels, the
allocator, compilation with --compile). Logs go to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mlactl_torch.__main__ import set_thread_env  # noqa: E402

THREADS = set_thread_env(0)

import torch  # noqa: E402

torch.set_num_threads(THREADS)

from mlactl_torch.model import MLAForCausalLM, ModelSpec, compile_blocks, init_parameters  # noqa: E402
from mlactl_torch.score import can_compile_blocks, score_sequences, token_budget  # noqa: E402

# The model blocks of configs/models/*.yaml (as tools/bench_step.py).
PRESETS = {
    "demo": dict(vocab=320, d=128, L=4, H=4, dq=0, dc=64, dn=32, dr=16, dv=32, dff=352, max_seq_len=256),
    "gpu-small": dict(vocab=50304, d=512, L=8, H=8, dq=0, dc=128, dn=64, dr=32, dv=64, dff=1408, max_seq_len=1024),
    "paper-400m": dict(vocab=50304, d=1024, L=24, H=16, dq=0, dc=256, dn=64, dr=32, dv=64, dff=2816, max_seq_len=2048),
}


def preset_spec(preset: str) -> ModelSpec:
    """The preset's model with QK-norm, one key group per head (the DeepSeek-like default)."""
    p = PRESETS[preset]
    return ModelSpec(variant="qk-norm", G=p["H"], scope="full", qk_eps=1e-6, norm_eps=1e-6, rope_theta=10000.0, tied=False, init_std=0.02, **p)


def random_items(n: int, choices: int, context: int, continuation: int, vocab: int, seed: int):
    """Token sequences, `choices` per item: one context, then each choice's own continuation; and where scoring starts."""
    gen = torch.Generator().manual_seed(seed)

    def jitter(k):
        return max(1, int(k * (0.75 + 0.5 * float(torch.rand(1, generator=gen)))))

    seqs, starts = [], []
    for _ in range(n):
        ctx = torch.randint(0, vocab, (jitter(context),), generator=gen).tolist()
        for _ in range(choices):
            seqs.append(ctx + torch.randint(0, vocab, (jitter(continuation),), generator=gen).tolist())
            starts.append(len(ctx) - 1)  # the first continuation token's prediction
    return seqs, starts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="paper-400m", choices=sorted(PRESETS))
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--choices", type=int, default=4)
    ap.add_argument("--context", type=int, default=80, help="mean context tokens (HellaSwag-like)")
    ap.add_argument("--continuation", type=int, default=24, help="mean tokens per choice")
    ap.add_argument("--request", type=int, default=1024, help="items per request (the CLI fills its requests to the token budget)")
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--warmup", type=int, default=2, help="requests before timing")
    ap.add_argument("--compile", action="store_true", help="torch.compile the blocks (CUDA), as `score --compile on`")
    ap.add_argument("--no-pack", action="store_true", help="every sequence its own row (MLACTL_SCORE_PACK=0)")
    args = ap.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    dtype = torch.bfloat16 if args.precision == "bf16" and device == "cuda" else torch.float32
    spec = preset_spec(args.preset)
    model = MLAForCausalLM(spec)
    init_parameters(model, 0)
    model = model.to(device).eval()
    if args.compile:
        if not can_compile_blocks(device):
            sys.exit("bench_score: --compile needs CUDA and torch >= 2.2 (nn.Module.compile)")
        compile_blocks(model)  # as score.load_for_scoring does
    budget = token_budget(model, device, dtype)
    vocab = min(50257, spec.vocab)
    warm, warm_starts = random_items(min(args.items, args.request) * args.warmup, args.choices, args.context, args.continuation, vocab, 1)
    seqs, starts = random_items(args.items, args.choices, args.context, args.continuation, vocab, 2)
    per_request = args.request * args.choices
    print(f"bench_score: {args.preset} on {device} ({dtype}), token budget {budget} per pass, {len(seqs)} sequences", file=sys.stderr)
    for i in range(0, len(warm), per_request):
        score_sequences(model, warm[i : i + per_request], device, dtype, budget, warm_starts[i : i + per_request], not args.no_pack)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    tokens = answer_bytes = 0
    for i in range(0, len(seqs), per_request):
        chunk = seqs[i : i + per_request]
        results = score_sequences(model, chunk, device, dtype, budget, starts[i : i + per_request], not args.no_pack)  # ends in a host read
        answer_bytes += len(json.dumps({"id": i, "results": results}))  # the server's answer line, serialised as it is
        tokens += sum(len(s) for s in chunk)
    elapsed = time.perf_counter() - t0
    print(json.dumps({"bench": "score", "preset": args.preset, "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                      "precision": "bf16" if dtype == torch.bfloat16 else "fp32", "items": args.items, "choices": args.choices,
                      "items_per_s": round(args.items / elapsed, 1), "sequences_per_s": round(len(seqs) / elapsed, 1),
                      "tokens_per_s": round(tokens / elapsed), "token_budget": budget, "compile": args.compile, "pack": not args.no_pack, "answer_mb": round(answer_bytes / 1e6, 1),
                      "elapsed_s": round(elapsed, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
