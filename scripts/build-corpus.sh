#!/usr/bin/env bash
# Build a corpus of over 100M GPT-2 tokens from text that Debian packages ship (docs/corpus.md): fetch the pinned
# .debs with apt-get download (no root needed, nothing installed), unpack them, write one JSONL document per source
# file, tokenize it into shards with `mlactl data prepare`, check every shard's sha256 and record inputs and
# outputs in corpus-manifest.json.
#
# Usage, from anywhere in the checkout (after `npm ci`):
#   scripts/build-corpus.sh [--out DIR] [--max-tokens N] [--latest] [--keep-work]
#     --out DIR        where the corpus goes (default: data/debian-corpus in the checkout, which git ignores)
#     --max-tokens N   a smaller corpus of at least N tokens, drawn from every source alike (a fixed shuffle)
#     --latest         apt's current versions instead of the pinned ones (the manifest records which were used)
#     --keep-work      keep the .debs and unpacked files in DIR/work
# Then train with: --set data.source=DIR/shards --set data.tokenizer=gpt2
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
caller=$PWD
cd "$root"

die() { echo "build-corpus.sh: $*" >&2; exit 2; }

out=data/debian-corpus
max_tokens=
latest=
keep_work=
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) [[ $# -ge 2 && -n $2 ]] || die "--out needs a folder"; out=$2; [[ $out == /* ]] || out=$caller/$out; shift 2 ;;
    --max-tokens) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "--max-tokens needs a positive integer"; max_tokens=$2; shift 2 ;;
    --latest) latest=1; shift ;;
    --keep-work) keep_work=1; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

for tool in apt-get dpkg-deb tar xz sha256sum node; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (the build needs Debian's apt-get and dpkg-deb, xz-utils and Node.js)"
done
[[ -f dist/data/debian-corpus.js && -f dist/commands/data/prepare.js ]] || npm run build >/dev/null

# Only a folder this script made (or an empty one) is written over.
if [[ -e $out ]]; then
  [[ -d $out ]] || die "$out exists and is not a folder"
  for entry in "$out"/* "$out"/.[!.]*; do
    [[ -e $entry ]] || continue
    case $(basename "$entry") in
      corpus-manifest.json|corpus.jsonl|documents.tsv|shards|work) ;;
      *) die "$out holds $(basename "$entry"), which this script did not write; refusing to build into it" ;;
    esac
  done
fi
out=$(mkdir -p "$out" && cd "$out" && pwd)
work=$out/work
rm -rf "$work" "$out/corpus-manifest.json"
mkdir -p "$work/debs" "$work/pkg" "$work/kernel"

started=$(date +%s)
phase_start=$started
phase() {
  local now; now=$(date +%s)
  echo "build-corpus: $1 ($((now - phase_start)) s)"
  phase_start=$now
}

mapfile -t specs < <(node scripts/corpus.js packages ${latest:+--latest})
apt_opts=(-q)
# As root, apt would warn that its sandbox user cannot write here; the download is the same either way.
[[ $(id -u) == 0 ]] && apt_opts+=(-o APT::Sandbox::User=root)
if ! (cd "$work/debs" && apt-get download "${apt_opts[@]}" "${specs[@]}" >/dev/null 2>"$work/apt.log"); then
  # Stale package lists are the usual cause; only root may refresh them.
  if [[ $(id -u) == 0 ]] && apt-get update -qq >/dev/null 2>&1 && (cd "$work/debs" && apt-get download "${apt_opts[@]}" "${specs[@]}" >/dev/null 2>"$work/apt.log"); then
    :
  else
    die "apt-get download ${specs[*]} failed ($(grep -m1 '^E:' "$work/apt.log" || tail -n1 "$work/apt.log")); a pinned version may have left the archive: --latest takes the current ones"
  fi
fi
: > "$work/debs.tsv"
for spec in "${specs[@]}"; do
  name=${spec%%=*}
  debs=("$work/debs/${name}_"*.deb)
  [[ ${#debs[@]} == 1 && -f ${debs[0]} ]] || die "expected one .deb for $name in $work/debs"
  deb=${debs[0]}
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$(dpkg-deb -f "$deb" Version)" "$(basename "$deb")" "$(sha256sum "$deb" | cut -d' ' -f1)" "$(stat -c %s "$deb")" >> "$work/debs.tsv"
done
phase "downloaded ${#specs[@]} packages"

while IFS=$'\t' read -r name _ deb _ _; do
  dpkg-deb -x "$work/debs/$deb" "$work/pkg/$name"
done < "$work/debs.tsv"
tarball=$work/$(node scripts/corpus.js kernel-tarball)
mapfile -t kernel_folders < <(node scripts/corpus.js kernel-folders)
tar -xJf "$tarball" -C "$work/kernel" "${kernel_folders[@]}"
phase "unpacked"

node scripts/corpus.js documents --work "$work" --out "$out" ${max_tokens:+--max-tokens "$max_tokens"}
phase "wrote corpus.jsonl"

# The whole corpus is held in memory while it is tokenized: give V8 room beyond its default heap. Run from the
# output folder so the shard manifest names its source `corpus.jsonl`, the same wherever the corpus is built.
prepare_start=$(date +%s.%N)
(cd "$out" && NODE_OPTIONS="--max-old-space-size=8192 ${NODE_OPTIONS:-}" node "$root/bin/run.js" data prepare --source corpus.jsonl --tokenizer gpt2 --out shards >/dev/null)
prepare_seconds=$(awk -v a="$prepare_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
phase "tokenized"

commit=$(git rev-parse HEAD 2>/dev/null || true)
host="Debian $(cat /etc/debian_version 2>/dev/null || echo unknown)"
node scripts/corpus.js manifest --work "$work" --out "$out" --prepare-seconds "$prepare_seconds" \
  ${max_tokens:+--max-tokens "$max_tokens"} ${commit:+--commit "$commit"} --host "$host"
phase "checked the shards and wrote corpus-manifest.json"

[[ -n $keep_work ]] || rm -rf "$work"
echo "build-corpus: done in $(( $(date +%s) - started )) s: $out (train with --set data.source=$out/shards --set data.tokenizer=gpt2)"
