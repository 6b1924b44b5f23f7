#!/usr/bin/env bash
# Issue 21 in one device call: the GPU checks of run_gpu_checks.sh and the full-CIFAR experiment of
# run_gpu_full_cifar.sh, stage by stage inside a time budget (BUDGET_S, default 450 s), so a call
# that runs short of time still brings back every stage that finished. Device time is scarce and
# a machine is warm only seconds after a call, so one prepared call does all of it:
#   python benchmarks/pack_imagefolder.py pack ../shared/data/cifar10 .gpu_pack --test-per-class 200
#   device run: BUDGET_S=450 PYTHON=python3 benchmarks/run_gpu_session.sh   (carry .gpu_pack)
# Stages, in order of what the issue needs most: CUDA correctness tests (the dataset is unpacked and
# decoded into the cache meanwhile, on the CPU), full CIFAR-10 at 10 % noise with the gpu preset,
# the bf16 loop benchmarks (the gpu preset's precision), the conv-net stability ensembles, fp32
# throughput and loop, compiled throughput. A stage that would get less than 20 s is skipped, and
# The loop benchmarks run 2 epochs (bf16) and 1 (fp32) instead of 3 to fit. `session.log` says what ran, its exit status and seconds. $OUT gets session.log, checks.tgz
# (logs and JSON of the checks, nvidia-smi) and full-cifar10.tgz (leaderboard, summary, figures,
# gzipped per-sample scores, log); the run store stays on the device.
# CPU rehearsal: DEVICE=cpu EXTRA="--subset 300 --epochs 1 --precision fp32" MEMPROX_BENCH_DEVICE=cpu \
#   MEMPROX_BENCH_N=128 MEMPROX_BENCH_ROUNDS=1 MEMPROX_BENCH_K=2 OUT=/tmp/o benchmarks/run_gpu_session.sh
set -uo pipefail
: "${OUT:?set OUT to the folder whose files come back}"
export PYTHON=${PYTHON:-python3} PYTHONUNBUFFERED=1 MEMPROX_CACHE=${MEMPROX_CACHE:-$PWD/.gpu_cache}
work=${WORK:-gpu-work}
end=$((SECONDS + ${BUDGET_S:-450}))
checks=$work/checks
mkdir -p "$checks" "$work/full" "$OUT"
log=$OUT/session.log

stage() {  # NAME CAP_S CMD...: CMD with at most CAP_S seconds (less if the budget has less left)
  local name=$1 cap=$2 left=$((end - SECONDS)) t0=$SECONDS rc
  shift 2
  (( cap > left )) && cap=$left
  if (( cap < 20 )); then echo "[$name] skipped: ${left} s of the budget left" | tee -a "$log"; return; fi
  echo "[$name] start, cap ${cap} s" | tee -a "$log"
  timeout -k 10 "$cap" "$@"
  rc=$?
  echo "[$name] rc $rc in $((SECONDS - t0)) s" | tee -a "$log"
  tar czf "$OUT/checks.tgz" -C "$work" checks
}

{ nvidia-smi; nproc; free -g; uptime; } > "$checks/machine.txt" 2>&1
# the CPU decodes the 50,000 JPEGs into the dataset cache while the GPU runs the CUDA tests
( "$PYTHON" benchmarks/pack_imagefolder.py unpack "${PACK:-.gpu_pack}" .gpu_data/cifar10 \
  && "$PYTHON" -c "from harness.data import load_dataset; print(load_dataset('imagefolder:.gpu_data/cifar10'))" \
) > "$checks/decode.log" 2>&1 &
decode=$!
stage cuda_tests 120 env OUT="$checks" STAGES=cuda benchmarks/run_gpu_checks.sh
wait "$decode" || echo "[decode] failed: see checks/decode.log" | tee -a "$log"
stage full_cifar ${FULL_CAP_S:-280} env -u OUT WORK="$work/full" benchmarks/run_gpu_full_cifar.sh
tar czf "$OUT/full-cifar10.tgz" -C "$work" full
stage bench_bf16 75 env OUT="$checks" STAGES=bf16 MEMPROX_BENCH_EPOCHS=2 benchmarks/run_gpu_checks.sh
stage conv_ensemble 75 env OUT="$checks" STAGES=conv_ensemble benchmarks/run_gpu_checks.sh
stage bench_fp32 60 env OUT="$checks" STAGES=fp32 FP32_K="loop_vs or images" MEMPROX_BENCH_EPOCHS=1 benchmarks/run_gpu_checks.sh
stage bench_compiled 90 env OUT="$checks" STAGES=bf16_compiled COMPILED_K=images benchmarks/run_gpu_checks.sh
echo "[session] $((SECONDS)) s in all" | tee -a "$log"
