#!/usr/bin/env bash
# Issue 21 in one device call: the GPU checks of run_gpu_checks.sh, the full-CIFAR experiment of
# run_gpu_full_cifar.sh and the --gpus-per-run packing grid, stage by stage inside a time budget
# (BUDGET_S, default 450 s), so a call that runs short of time still brings back every stage that
# finished. Device time is scarce and a machine is warm only seconds after a call, so one prepared
# call does all of it (the device's bare python3 has torch, pytest and pytest-benchmark; the
# scripts run from the repository root, nothing is installed):
#   python benchmarks/pack_imagefolder.py pack ../shared/data/cifar10 .gpu_pack --test-per-class 200
#   python benchmarks/pack_imagefolder.py travel .gpu_pack     # must print 'within' the 64 MiB
#   device run: BUDGET_S=445 PYTHON=python3 benchmarks/run_gpu_session.sh   (carry .gpu_pack)
# Stages, in order of what the issue needs most: CUDA correctness tests (the dataset is unpacked and
# decoded into the cache meanwhile, on the CPU), full CIFAR-10 at 10 % noise with the gpu preset,
# the bf16 loop benchmarks (the gpu preset's precision), the conv-net stability ensembles, fp32
# throughput and loop, the packing grid (16 small runs one at a time vs four sharing the GPU, local
# executor: the device has no Ray), compiled throughput. A stage that would get less than 20 s is
# skipped (MIN_STAGE_S). The loop benchmarks run 2 epochs (bf16) and 1 (fp32) instead of 3 to fit.
# $OUT gets session.log (what ran, its exit status and seconds), summary.md (the figures as
# markdown for benchmarks/README.md, rewritten after every stage), checks.tgz (logs and JSON of the
# checks, nvidia-smi) and full-cifar10.tgz (leaderboard, summary, gzipped per-sample scores, log);
# the run store stays on the device; bench_recording re-measures what the training-pass recorders
# cost on the digits MLP since they record held batches (benchmarks/README.md's H200 table predates
# them). SESSION_STAGES picks and orders the stages (also
# full_cifar_duplicates: the duplicates task with the proxies that need no input gradients;
# bench_bf16_long: one 10-epoch round of the bf16 loop comparison).
# CPU rehearsal (a pack of a few hundred images, e.g. --train-per-class 30 --test-per-class 10):
#   DEVICE=cpu EXTRA="--subset 300 --epochs 1 --precision fp32" MEMPROX_BENCH_DEVICE=cpu \
#   MEMPROX_BENCH_N=128 MEMPROX_BENCH_ROUNDS=1 MEMPROX_BENCH_K=2 PACKING_SUBSET=100 PACKING_EPOCHS=1 \
#   DUPLICATE_PAIRS=20 PACK=/tmp/pack OUT=/tmp/o benchmarks/run_gpu_session.sh
set -uo pipefail
: "${OUT:?set OUT to the folder whose files come back}"
export PYTHON=${PYTHON:-python3} PYTHONUNBUFFERED=1 MEMPROX_CACHE=${MEMPROX_CACHE:-$PWD/.gpu_cache}
work=${WORK:-gpu-work}
end=$((SECONDS + ${BUDGET_S:-450}))
SESSION_STAGES=${SESSION_STAGES:-cuda_tests,full_cifar,bench_bf16,conv_ensemble,bench_fp32,gpu_packing,bench_recording,bench_compiled}
known=" cuda_tests full_cifar full_cifar_duplicates bench_bf16 bench_bf16_long conv_ensemble bench_fp32 gpu_packing"
known+=" bench_recording bench_compiled "
for name in ${SESSION_STAGES//,/ }; do  # refuse a typo before any device time is spent
  [[ $known == *" $name "* ]] || { echo "unknown session stage $name; valid:$known" >&2; exit 2; }
done
checks=$work/checks
mkdir -p "$checks" "$work/full" "$OUT"
log=$OUT/session.log

stage() {  # NAME CAP_S CMD...: CMD with at most CAP_S seconds (less if the budget has less left)
  local name=$1 cap=$2 left=$((end - SECONDS)) t0=$SECONDS rc
  shift 2
  (( cap > left )) && cap=$left
  if (( cap < ${MIN_STAGE_S:-20} )); then echo "[$name] skipped: ${left} s of the budget left" | tee -a "$log"; return; fi
  echo "[$name] start, cap ${cap} s" | tee -a "$log"
  timeout -k 10 "$cap" "$@"
  rc=$?
  echo "[$name] rc $rc in $((SECONDS - t0)) s" | tee -a "$log"
  tar czf "$OUT/checks.tgz" -C "$work" checks
}
summarize() {  # the figures so far, from what $OUT holds: a call cut short still brings them back
  timeout 30 "$PYTHON" benchmarks/summarize_gpu_session.py "$OUT" "$OUT/summary.md" \
    || echo "[summary] failed" | tee -a "$log"
}

{ nvidia-smi; nproc; free -g; uptime; } > "$checks/machine.txt" 2>&1
# the CPU decodes the 50,000 JPEGs into the dataset cache while the GPU runs the CUDA tests
( "$PYTHON" benchmarks/pack_imagefolder.py unpack "${PACK:-.gpu_pack}" .gpu_data/cifar10 \
  && "$PYTHON" -c "from harness.data import load_dataset; print(load_dataset('imagefolder:.gpu_data/cifar10'))" \
) > "$checks/decode.log" 2>&1 &
decode=$!
data_ready() {  # wait once for the background decode
  if [ -n "${decode:-}" ]; then
    wait "$decode" || echo "[decode] failed: see checks/decode.log" | tee -a "$log"
    decode=
  fi
}
for name in ${SESSION_STAGES//,/ }; do
  case $name in
    cuda_tests) stage cuda_tests 120 env OUT="$checks" STAGES=cuda benchmarks/run_gpu_checks.sh ;;
    full_cifar)
      data_ready
      stage full_cifar "${FULL_CAP_S:-280}" env -u OUT WORK="$work/full" benchmarks/run_gpu_full_cifar.sh
      tar czf "$OUT/full-cifar10.tgz" -C "$work" full ;;
    full_cifar_duplicates)  # the single-run proxies that need no input gradients
      data_ready
      stage full_cifar_duplicates "${FULL_CAP_S:-280}" env -u OUT WORK="$work/full" EXPERIMENTS=duplicates \
        PROXIES=csl,csl_eval,final_loss,in_confidence,forgetting,threshold_lt,aum,el2n,variability \
        benchmarks/run_gpu_full_cifar.sh
      tar czf "$OUT/full-cifar10.tgz" -C "$work" full ;;
    bench_bf16) stage bench_bf16 75 env OUT="$checks" STAGES=bf16 MEMPROX_BENCH_EPOCHS=2 benchmarks/run_gpu_checks.sh ;;
    bench_bf16_long)  # one round at 10 epochs: the fixed costs of a call weigh as in a real run
      stage bench_bf16_long 90 env OUT="$checks/long" STAGES=bf16 BF16_K=loop_vs MEMPROX_BENCH_EPOCHS=10 \
        MEMPROX_BENCH_ROUNDS=1 benchmarks/run_gpu_checks.sh ;;
    conv_ensemble) stage conv_ensemble 75 env OUT="$checks" STAGES=conv_ensemble benchmarks/run_gpu_checks.sh ;;
    bench_fp32) stage bench_fp32 60 env OUT="$checks" STAGES=fp32 FP32_K="loop_vs or images" MEMPROX_BENCH_EPOCHS=1 \
      benchmarks/run_gpu_checks.sh ;;
    gpu_packing)  # issue 21 item 3: 16 small runs, one at a time vs four sharing the GPU
      data_ready
      stage gpu_packing "${PACKING_CAP_S:-130}" bash -o pipefail -c '"$@" 2>&1 | tee "$0"' \
        "$checks/gpu_packing.log" "$PYTHON" benchmarks/bench_ray.py --configs local_gpu1,local_gpu025 --no-overhead \
        --epochs "${PACKING_EPOCHS:-10}" --json "$checks/gpu_packing.json" --grid "--dataset imagefolder:.gpu_data/cifar10 \
--subset ${PACKING_SUBSET:-4000} --tasks mislabeled --proxies csl --seeds 4 --device ${DEVICE:-cuda} --no-progress" ;;
    bench_recording)  # the digits MLP with and without the training-pass recorders (held batches), 3 rounds
      stage bench_recording 60 bash -o pipefail -c '"$@" 2>&1 | tee "$0"' "$checks/recording.log" \
        env MEMPROX_BENCH_DEVICE="${DEVICE:-cuda}" MEMPROX_BENCH_ROUNDS=3 "$PYTHON" -m pytest \
        benchmarks/test_bench_recording.py --benchmark-only -s -q -p no:cacheprovider \
        --benchmark-json="$checks/recording.json" ;;
    bench_compiled) stage bench_compiled 90 env OUT="$checks" STAGES=bf16_compiled COMPILED_K=images \
      benchmarks/run_gpu_checks.sh ;;
    *) echo "unknown session stage $name" | tee -a "$log"; exit 2 ;;
  esac
  summarize
done
echo "[session] $((SECONDS)) s in all" | tee -a "$log"
summarize
