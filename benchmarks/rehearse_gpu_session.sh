#!/usr/bin/env bash
# Issue 21's device call rehearsed on the CPU, step by step as benchmarks/README.md has the session
# run it, so that what would fail on the device (a script, an import the device lacks, a file that
# would not come back) fails here first, where it costs no device time:
#   1. the working tree as a device call copies it (git's tracked and untracked-not-ignored files)
#      into REHEARSAL/repo; ignored build outputs stay behind, as they do there;
#   2. pack_imagefolder.py pack into its .gpu_pack (FULL_PACK=1: the session's own pack, all 50,000
#      training images and 200 test images a class; else 30 and 10 a class), and `travel`: whether
#      this checkout and the session's own pack (packed beside it when FULL_PACK is not 1) fit the
#      64 MiB a call carries;
#   3. run_gpu_session.sh there at CPU sizes, its console teed into $OUT/console.log as the README
#      says, with a python that imports only what the device has (benchmarks/device_env);
#   4. summarize_gpu_session.py --check on what came back: the summary, and whether a device call
#      would bring all of it back (8 files, 16 MiB each, plain names, scores gzipped).
# Exit 0 when every stage ran to rc 0, the pack would travel and $OUT would come back whole.
#   benchmarks/rehearse_gpu_session.sh [REHEARSAL]   # default: a temporary folder, removed after (KEEP=1 keeps it)
# CIFAR (../shared/data/cifar10 beside the checkout), PYTHON (python3), BUDGET_S (900: a CPU is slower) and
# SESSION_STAGES (the session's) can be set; about 8 minutes on 2 idle cores with the small pack.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
here=${1:-$(mktemp -d)}
[ -n "${1:-}" ] || [ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$here"' EXIT
src=${CIFAR:-$root/../shared/data/cifar10}
py=${PYTHON:-python3}
[ -d "$src/train" ] || { echo "rehearsal: no ImageFolder at $src (set CIFAR to one with train/ and test/)" >&2; exit 2; }
mkdir -p "$here/repo" "$here/out"
failed=()

echo "== 1. the working tree a device call copies, into $here/repo"
git -C "$root" ls-files -z --cached --others --exclude-standard \
  | tar -C "$root" --null --ignore-failed-read -T - -cf - | tar -xf - -C "$here/repo"

echo "== 2. the pack, and what a call from $root would carry with the session's own pack"
session_pack=(--test-per-class 200)  # what the README has the session carry: every training image
if [ "${FULL_PACK:-0}" = 1 ]; then
  "$py" "$root/benchmarks/pack_imagefolder.py" pack "$src" "$here/repo/.gpu_pack" "${session_pack[@]}"
  carried=$here/repo/.gpu_pack
else  # the CPU stages run on a small pack, but the call will carry the full one (~15 MiB, 5 s to pack):
  # measuring the small one said 'within' while the real call was over the limit (bench30)
  "$py" "$root/benchmarks/pack_imagefolder.py" pack "$src" "$here/session_pack" "${session_pack[@]}"
  "$py" "$root/benchmarks/pack_imagefolder.py" pack "$src" "$here/repo/.gpu_pack" --train-per-class 30 --test-per-class 10
  carried=$here/session_pack
fi
(cd "$root" && "$py" benchmarks/pack_imagefolder.py travel "$carried") || failed+=("travel")

echo "== 3. run_gpu_session.sh on the CPU, imports as on the device"
cd "$here/repo"
env PYTHONPATH="$PWD/benchmarks/device_env" PYTHON="$py" OUT="$here/out" BUDGET_S="${BUDGET_S:-900}" \
  DEVICE=cpu EXTRA="--subset 300 --epochs 2 --precision fp32" CHECKPOINT_EVERY_S=0.01 DUPLICATE_PAIRS=20 \
  FULL_NEED_S=20 DUPLICATES_NEED_S=20 \
  MEMPROX_BENCH_DEVICE=cpu MEMPROX_BENCH_N=128 MEMPROX_BENCH_ROUNDS=1 MEMPROX_BENCH_K=2 PACKING_SUBSET=100 \
  PACKING_EPOCHS=1 benchmarks/run_gpu_session.sh 2>&1 | tee "$here/out/console.log" || failed+=("session")

echo "== 4. what came back"
"$py" benchmarks/summarize_gpu_session.py "$here/out" "$here/summary.md" --check || failed+=("returned files")
sed -n '/^#### Stages/,/^#### CUDA/p' "$here/summary.md"
grep -E '\] (rc [1-9]|skipped)' "$here/out/session.log" && failed+=("stages")
if (( ${#failed[@]} )); then
  echo "rehearsal FAILED: ${failed[*]} (files under $here)" >&2
  exit 1
fi
echo "rehearsal passed: every stage rc 0, the pack travels, \$OUT comes back whole ($here/summary.md)"
