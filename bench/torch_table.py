"""Print the tokens/s table of bench/gpu-torch.sh from the peer's log lines and mlactl's run folders.

mlactl's figure: tokens over the engine's own elapsed time (metrics.jsonl `elapsed_s`, taken after each step's host
read, so GPU work is finished) between step --skip and the step before the last. The first steps hold compilation;
the last one also runs the max-logit pass and validation. Ratios are against the peer and the baseline arm.
"""
import argparse
import json
import os
import sys


def mlactl_rate(folder: str, skip: int):
    rows = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl")) if line.strip()]
    steps = {r["step"]: r for r in rows}
    last = max(steps)
    a, b = steps.get(skip), steps.get(last - 1)
    if a is None or b is None or b["step"] <= a["step"]:
        return None, last
    return (b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"]), last


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip", type=int, default=20)
    ap.add_argument("inputs", nargs="+")
    args = ap.parse_args()
    rows = []
    for item in args.inputs:
        if not os.path.exists(item):
            continue  # an unmatched shell glob: that step did not run
        if item.endswith(".log"):
            for line in open(item):
                if line.startswith('{"peer"'):
                    p = json.loads(line)
                    rows.append(("peer (plain PyTorch, AdamW)", p["tokens_per_s"], f"{p['batch']} x seq, {p['ms_per_step']} ms/step"))
        elif os.path.exists(os.path.join(item, "metrics.jsonl")):
            rate, last = mlactl_rate(item, args.skip)
            summary = json.load(open(os.path.join(item, "summary.json"))) if os.path.exists(os.path.join(item, "summary.json")) else {}
            manifest = json.load(open(os.path.join(item, "manifest.json"))) if os.path.exists(os.path.join(item, "manifest.json")) else {}
            engine = manifest.get("engine") or {}
            note = f"steps {args.skip}..{last - 1} of {last}, status {summary.get('status')}, {engine.get('device')} {engine.get('precision')}"
            rows.append((os.path.basename(item.rstrip("/")), rate, note))
    base = next((r for n, r, _ in rows if n.endswith("-baseline") and r), None)
    peer = next((r for n, r, _ in rows if n.startswith("peer") and r), None)
    print("| run | tokens/s | vs peer | vs baseline | notes |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, rate, note in rows:
        fmt = lambda ref: f"{rate / ref:.3f}" if rate and ref else "-"
        print(f"| {name} | {round(rate) if rate else 'n/a'} | {fmt(peer)} | {fmt(base)} | {note} |")


if __name__ == "__main__":
    sys.exit(main())
