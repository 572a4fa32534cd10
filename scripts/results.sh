#!/usr/bin/env bash
# Regenerate docs/results/ from the ladders' sweep folders (docs/results/README.md): for each ladder whose folder
# exists under RUNS, `mlactl compare --baseline baseline`, of which docs/results/<ladder>/ keeps compare.md,
# compare.csv, sensitivity.csv, config-diff.md and plots/*.png, and runs.md, one row per run with its wall time
# (scripts/ladder.py table). Reports and metrics only: checkpoints stay in the run folders, which git ignores.
# report.html and the SVGs are left out: they embed every logged point (megabytes for a GPU ladder) and
# report.html a timestamp; `mlactl compare runs/<ladder>` writes them beside the runs.
#
# Usage, from anywhere in the checkout, after `npm run build`:
#   scripts/results.sh [LADDER...]      default: every ladder below whose sweep folder exists
#     RUNS=dir      where the sweep folders are (default: runs/ in the checkout)
#     MLACTL=cmd    the CLI (default: node bin/run.js)
# Ladders: lr-ladder (CPU, configs/sweeps/lr-ladder.yaml), gpu-small-ladder and paper-400m-variants (GPU, run by
# bench/gpu-ladder.sh, their tarballs unpacked into RUNS).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
caller=$PWD
cd "$root"
die() { echo "results.sh: $*" >&2; exit 2; }

RUNS=${RUNS:-runs}
# Relative to where the script was started, except the default, which is the checkout's runs/.
[[ $RUNS == /* || $RUNS == runs ]] || RUNS=$caller/$RUNS
read -r -a mlactl <<< "${MLACTL:-node bin/run.js}"
known=(lr-ladder gpu-small-ladder paper-400m-variants)
[[ -f dist/commands/compare.js ]] || [[ -n ${MLACTL:-} ]] || die "dist/ not built: run npm run build first"
command -v python3 >/dev/null || die "python3 not found (scripts/ladder.py needs it)"

if [[ $# -gt 0 ]]; then
  ladders=("$@")
  for ladder in "${ladders[@]}"; do
    [[ " ${known[*]} " == *" $ladder "* ]] || die "unknown ladder $ladder (one of: ${known[*]})"
    [[ -d $RUNS/$ladder ]] || die "$RUNS/$ladder: sweep folder not found"
  done
else
  ladders=()
  for ladder in "${known[@]}"; do [[ -d $RUNS/$ladder ]] && ladders+=("$ladder"); done
  [[ ${#ladders[@]} -gt 0 ]] || die "no sweep folder of ${known[*]} under $RUNS"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ladder in "${ladders[@]}"; do
  out=docs/results/$ladder
  echo "== $ladder: $RUNS/$ladder -> $out"
  "${mlactl[@]}" compare "$RUNS/$ladder" --out "$tmp/$ladder" --baseline baseline | sed '/^report: /d'
  # A fresh folder each time, so a plot that is no longer drawn does not linger from an older run.
  rm -rf "$out"
  mkdir -p "$out/plots"
  sed -e '/^SVG: \[plots\/.*\.svg\]/d' -e 's/ Full report: \[report.html\](report.html)\.//' "$tmp/$ladder/compare.md" | cat -s > "$out/compare.md"
  for f in compare.csv sensitivity.csv config-diff.md; do [[ ! -f $tmp/$ladder/$f ]] || cp "$tmp/$ladder/$f" "$out/"; done
  cp "$tmp/$ladder"/plots/*.png "$out/plots/" 2>/dev/null || true
  python3 scripts/ladder.py table "$RUNS/$ladder" --markdown > "$out/runs.md"
  du -sh "$out"
done
