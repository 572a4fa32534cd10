"""Two small tools around `mlactl sweep` for the result ladders (docs/results/), Python's standard library only, so
they run on a GPU machine that has PyTorch but no Node.js packages.

  python3 scripts/ladder.py derive SWEEP.yaml --out FILE [--base CONFIG] [--data DIR] [--lrs 1e-3 3e-3] [--set k=v ...]
      A copy of a sweep file with `base:` made absolute (or replaced), `data.source` and the `train.lr` axis replaced,
      and `--set` keys put in `set:` (taken off `axes:` when they were an axis). The sweep files this is meant for keep
      one key per line (`  key.path: value`); the copy is checked by `mlactl sweep plan` like any sweep file.

  python3 scripts/ladder.py table DIR... [--markdown]
      One row per run folder found under the given folders (a sweep folder, a folder of sweep folders): status, steps,
      tokens, final validation loss, peak max attention logit, heads clipped, tokens/s over the engine's whole training
      time (compilation and validation included), that time, and the wall time from the run's manifest.

(Checking a carried shard set against its manifest is `mlactl data verify DIR`.)

Bad input: one line on stderr naming the file or key, exit 2.
"""
import argparse
import datetime
import json
import os
import re
import sys

TOP_KEY = re.compile(r"^([A-Za-z_][\w]*):(.*)$")
ENTRY = re.compile(r"^  ([A-Za-z_][\w.]*):(.*)$")


def fail(message: str) -> None:
    print(f"ladder.py: {message}", file=sys.stderr)
    sys.exit(2)


def derive(sweep: str, out: str, base: str | None, data: str | None, lrs: list[str] | None, sets: list[str]) -> None:
    if not os.path.isfile(sweep):
        fail(f"sweep file not found: {sweep}")
    lines = open(sweep, encoding="utf8").read().splitlines()
    overrides: dict[str, str] = {}
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not ENTRY.match(f"  {key}:") or not value.strip():
            fail(f"--set {item!r}: expected key.path=value")
        overrides[key] = value.strip()
    if data is not None:
        overrides["data.source"] = data

    # Which top-level section each line belongs to, and where each section's entries are.
    section = None
    sections: dict[str, int] = {}
    entries: dict[tuple[str, str], int] = {}
    for i, line in enumerate(lines):
        top = TOP_KEY.match(line)
        if top:
            section = top.group(1)
            sections[section] = i
            continue
        entry = ENTRY.match(line)
        if entry and section is not None:
            entries[(section, entry.group(1))] = i
    for needed in ("base", "set", "axes"):
        if needed not in sections:
            fail(f"{sweep}: no top-level `{needed}:` line")

    base_line = sections["base"]
    if base is not None:
        if not os.path.isfile(base):
            fail(f"--base: config not found: {base}")
        base_path = os.path.abspath(base)
    else:
        value = TOP_KEY.match(lines[base_line]).group(2).split("#", 1)[0].strip().strip("'\"")
        base_path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(sweep)), value))
        if not os.path.isfile(base_path):
            fail(f"{sweep}: base config not found: {base_path}")
    lines[base_line] = f"base: {base_path}"

    drop: set[int] = set()
    if lrs is not None:
        if ("axes", "train.lr") not in entries:
            fail(f"{sweep}: --lrs needs a `  train.lr: [...]` line under axes:")
        for lr in lrs:
            try:
                float(lr)
            except ValueError:
                fail(f"--lrs: {lr!r} is not a number")
        lines[entries[("axes", "train.lr")]] = f"  train.lr: [{', '.join(lrs)}]"
    added = []
    for key, value in overrides.items():
        if ("axes", key) in entries:
            drop.add(entries[("axes", key)])  # a fixed value replaces the axis
        if ("set", key) in entries:
            lines[entries[("set", key)]] = f"  {key}: {value}"
        else:
            added.append(f"  {key}: {value}")
    set_line = sections["set"]
    result = [line for i, line in enumerate(lines[: set_line + 1]) if i not in drop] + added
    result += [line for i, line in enumerate(lines[set_line + 1 :], start=set_line + 1) if i not in drop]
    header = f"# Derived from {os.path.abspath(sweep)} by scripts/ladder.py derive"
    with open(out, "w", encoding="utf8") as f:
        f.write("\n".join([header, *result]) + "\n")


def find_runs(folder: str, depth: int = 4) -> list[str]:
    """Run folders (those with a config.resolved.yaml) at most `depth` levels below `folder`, checkpoints skipped."""
    if os.path.isfile(os.path.join(folder, "config.resolved.yaml")):
        return [folder]
    if depth == 0 or not os.path.isdir(folder):
        return []
    found = []
    for name in sorted(os.listdir(folder)):
        if name.startswith(".") or name in ("ckpt", "compare", "logs", "exits", "slurm"):
            continue
        found += find_runs(os.path.join(folder, name), depth - 1)
    return found


def load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        fail(f"{path}: invalid JSON ({err})")


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    parse = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return (parse(end) - parse(start)).total_seconds()


def run_row(folder: str) -> dict:
    summary = load_json(os.path.join(folder, "summary.json"))
    manifest = load_json(os.path.join(folder, "manifest.json"))
    peak = summary.get("max_logit_peak")
    metrics = os.path.join(folder, "metrics.jsonl")
    last = {}
    if os.path.exists(metrics):
        for line in open(metrics, encoding="utf8"):
            if line.strip():
                row = json.loads(line)
                last = row
                # The summary's peak is the engine's; without a summary (a run still going) read the metrics.
                if not summary:
                    values = [v for layer in (row.get("max_logit") or []) for v in (layer if isinstance(layer, list) else [layer]) if isinstance(v, (int, float))]
                    if values:
                        peak = max(values) if peak is None else max(peak, max(values))
    return {
        "run": summary.get("arm") or os.path.basename(folder),
        "variant": summary.get("variant"),
        "lr": summary.get("lr"),
        "seed": summary.get("seed"),
        "status": summary.get("status", "no summary"),
        "step": summary.get("step", last.get("step")),
        "total_steps": summary.get("total_steps"),
        "tokens": summary.get("tokens", last.get("tokens")),
        "final_val_loss": summary.get("final_val_loss"),
        "max_logit_peak": peak,
        "heads_clipped": summary.get("heads_clipped_total"),
        # Over the whole run (compilation and validation included), not the last window's rate the summary keeps.
        "tokens_per_s": summary["tokens"] / summary["elapsed_s"] if summary.get("tokens") and summary.get("elapsed_s") else None,
        "train_s": summary.get("elapsed_s"),
        "wall_s": seconds_between(manifest.get("started_at"), manifest.get("ended_at")),
        "device": manifest.get("device"),
    }


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(folders: list[str], markdown: bool) -> None:
    runs = []
    for folder in folders:
        if not os.path.isdir(folder):
            fail(f"not a folder: {folder}")
        runs += find_runs(folder)
    if not runs:
        fail(f"no run folders under {' '.join(folders)}")
    head = ["run", "status", "steps", "tokens", "val loss", "peak logit", "clipped", "avg tok/s", "train s", "wall s"]
    rows = []
    ordered = sorted(map(run_row, runs), key=lambda r: (str(r["variant"] or r["run"]), r["lr"] or 0, r["seed"] or 0, r["run"]))
    for r in ordered:
        steps = f"{fmt(r['step'], 'd')}/{fmt(r['total_steps'], 'd')}"
        rows.append([r["run"], r["status"], steps, fmt(r["tokens"], ",d"), fmt(r["final_val_loss"], ".4f"), fmt(r["max_logit_peak"], ".1f"),
                     fmt(r["heads_clipped"], "d"), fmt(r["tokens_per_s"], ",.0f"), fmt(r["train_s"], ".0f"), fmt(r["wall_s"], ".0f")])
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("| " + " | ".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + " |")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
        for row in [head, *rows]:
            print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("derive")
    d.add_argument("sweep")
    d.add_argument("--out", required=True)
    d.add_argument("--base")
    d.add_argument("--data")
    d.add_argument("--lrs", nargs="+")
    d.add_argument("--set", dest="sets", action="append", default=[])
    t = sub.add_parser("table")
    t.add_argument("folders", nargs="+")
    t.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if args.command == "derive":
        derive(args.sweep, args.out, args.base, args.data, args.lrs, args.sets)
    else:
        table(args.folders, args.markdown)


if __name__ == "__main__":
    main()
