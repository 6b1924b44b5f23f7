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
# executor: the device has no Ray), the recording cost on the digits MLP (held batches), compiled
# throughput. The loop benchmarks run 2 epochs (bf16) and 1 (fp32) instead of 3 to fit.
# Partial failure: each stage runs under `timeout` with its cap, cut to what the budget has left; a
# stage left less than it needs is skipped (MIN_STAGE_S, 20 s; the full-CIFAR experiments need
# FULL_NEED_S 150 and DUPLICATES_NEED_S 90, what they took on an H200: cut short they leave nothing)
# and the next, cheaper one still runs. A stage's exit status goes to session.log and the next
# stage runs whatever it was. Without the dataset (a pack not carried, a failed decode, or a decode
# still running when the budget ends) its stages are skipped with the reason. SIGTERM or SIGINT (the
# device call's own limit) stops the running stage and still writes the archives and summary.
# $OUT gets session.log (what ran, its exit status and seconds), summary.md (the figures as
# markdown for benchmarks/README.md, rewritten after every stage, with the returned files and
# whether a device call brings them all back), checks.tgz (logs and JSON of the checks,
# nvidia-smi) and full-cifar10.tgz (leaderboard, summary, gzipped per-sample scores, log); the run
# store stays on the device. SESSION_STAGES picks and orders the stages (also
# full_cifar_duplicates: the duplicates task with the proxies that need no input gradients;
# bench_bf16_long: one 10-epoch round of the bf16 loop comparison).
# CPU rehearsal of the whole call, as it travels and imports on the device (about 8 minutes):
#   benchmarks/rehearse_gpu_session.sh        # FULL_PACK=1: with the session's own 50,000-image pack
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
min=${MIN_STAGE_S:-20}
running= running_name= running_t0=0  # the stage in progress (its `timeout`), for the signal handler

note() { echo "$*" | tee -a "$log"; }
returned() {  # FILE: a file over what a device call brings back is said so in the log
  local bytes
  bytes=$(stat -c %s "$1" 2>/dev/null || echo 0)
  (( bytes > 16 * 1048576 )) && note "[out] $(basename "$1") is $((bytes / 1048576)) MiB, over the 16 MiB a returned file may be"
  return 0
}
pack_checks() { tar czf "$OUT/checks.tgz" -C "$work" checks; returned "$OUT/checks.tgz"; }
pack_full() { tar czf "$OUT/full-cifar10.tgz" -C "$work" full; returned "$OUT/full-cifar10.tgz"; }
stage() {  # NAME CAP_S NEED_S CMD...: CMD with at most CAP_S seconds (less if the budget has less left),
  # skipped when that is under NEED_S (at least MIN_STAGE_S): a stage cut short brings back nothing
  local name=$1 cap=$2 need=$3 left=$((end - SECONDS)) t0=$SECONDS rc
  shift 3
  (( cap > left )) && cap=$left
  (( need < min )) && need=$min
  if (( cap < need )); then note "[$name] skipped: ${left} s of the budget left, it needs ${need} s"; return; fi
  note "[$name] start, cap ${cap} s"
  timeout -k 10 "$cap" "$@" &  # waited for in the background, so a signal reaches on_signal at once
  running=$! running_name=$name running_t0=$t0
  wait "$running"
  rc=$?
  running=
  note "[$name] rc $rc in $((SECONDS - t0)) s"
  pack_checks
}
summarize() {  # the figures so far, from what $OUT holds: a call cut short still brings them back
  timeout 30 "$PYTHON" benchmarks/summarize_gpu_session.py "$OUT" "$OUT/summary.md" \
    || echo "[summary] failed" | tee -a "$log"
}
on_signal() {  # the device call's own limit (or Ctrl-C): stop the stage, keep what finished
  trap - TERM INT
  note "[session] stopped by a signal after $SECONDS s"
  if [ -n "$running" ]; then
    kill -TERM "$running" 2>/dev/null  # timeout passes it on to the stage
    note "[$running_name] rc 143 in $((SECONDS - running_t0)) s"
  fi
  pack_checks
  pack_full
  summarize
  exit 143
}
trap on_signal TERM INT

note "[session] budget ${BUDGET_S:-450} s; stages $SESSION_STAGES"
{ timeout 20 nvidia-smi; nproc; free -g; uptime; } > "$checks/machine.txt" 2>&1
# the CPU decodes the 50,000 JPEGs into the dataset cache while the GPU runs the CUDA tests
( "$PYTHON" benchmarks/pack_imagefolder.py unpack "${PACK:-.gpu_pack}" .gpu_data/cifar10 \
  && "$PYTHON" -c "from harness.data import load_dataset; print(load_dataset('imagefolder:.gpu_data/cifar10'))" \
) > "$checks/decode.log" 2>&1 &
decode=$!
data_failed=
data_ready() {  # wait for the background decode, at most while the budget lasts; false without the data
  if [ -n "$decode" ]; then
    while kill -0 "$decode" 2>/dev/null && (( end - SECONDS >= min )); do sleep 1; done
    if kill -0 "$decode" 2>/dev/null; then
      note "[decode] still running with $((end - SECONDS)) s of the budget left"
      return 1
    fi
    wait "$decode" || { note "[decode] failed (rc $?): see checks/decode.log"; data_failed=1; }
    decode=
  fi
  [ -z "$data_failed" ]
}
with_data() {  # NAME CAP_S NEED_S CMD...: `stage`, or skipped without the dataset
  if data_ready; then stage "$@"; else note "[$1] skipped: the dataset is not there (checks/decode.log)"; fi
}
for name in ${SESSION_STAGES//,/ }; do
  case $name in
    cuda_tests) stage cuda_tests 120 0 env OUT="$checks" STAGES=cuda benchmarks/run_gpu_checks.sh ;;
    full_cifar)  # needs what it took on an H200 (137 s): stopped at its cap, it leaves no results
      with_data full_cifar "${FULL_CAP_S:-280}" "${FULL_NEED_S:-150}" env -u OUT WORK="$work/full" \
        benchmarks/run_gpu_full_cifar.sh
      pack_full ;;
    full_cifar_duplicates)  # the single-run proxies that need no input gradients (79 s on an H200)
      with_data full_cifar_duplicates "${FULL_CAP_S:-280}" "${DUPLICATES_NEED_S:-90}" env -u OUT WORK="$work/full" \
        EXPERIMENTS=duplicates PROXIES=csl,csl_eval,final_loss,in_confidence,forgetting,threshold_lt,aum,el2n,variability \
        benchmarks/run_gpu_full_cifar.sh
      pack_full ;;
    bench_bf16) stage bench_bf16 75 0 env OUT="$checks" STAGES=bf16 MEMPROX_BENCH_EPOCHS=2 benchmarks/run_gpu_checks.sh ;;
    bench_bf16_long)  # one round at 10 epochs: the fixed costs of a call weigh as in a real run
      stage bench_bf16_long 90 0 env OUT="$checks/long" STAGES=bf16 BF16_K=loop_vs MEMPROX_BENCH_EPOCHS=10 \
        MEMPROX_BENCH_ROUNDS=1 benchmarks/run_gpu_checks.sh ;;
    conv_ensemble) stage conv_ensemble 75 0 env OUT="$checks" STAGES=conv_ensemble benchmarks/run_gpu_checks.sh ;;
    bench_fp32) stage bench_fp32 60 0 env OUT="$checks" STAGES=fp32 FP32_K="loop_vs or images" MEMPROX_BENCH_EPOCHS=1 \
      benchmarks/run_gpu_checks.sh ;;
    gpu_packing)  # issue 21 item 3: 16 small runs, one at a time vs four sharing the GPU
      with_data gpu_packing "${PACKING_CAP_S:-130}" 0 bash -o pipefail -c '"$@" 2>&1 | tee "$0"' \
        "$checks/gpu_packing.log" "$PYTHON" benchmarks/bench_ray.py --configs local_gpu1,local_gpu025 --no-overhead \
        --epochs "${PACKING_EPOCHS:-10}" --json "$checks/gpu_packing.json" --grid "--dataset imagefolder:.gpu_data/cifar10 \
--subset ${PACKING_SUBSET:-4000} --tasks mislabeled --proxies csl --seeds 4 --device ${DEVICE:-cuda} --no-progress" ;;
    bench_recording)  # the digits MLP with and without the training-pass recorders (held batches), 3 rounds
      stage bench_recording 60 0 bash -o pipefail -c '"$@" 2>&1 | tee "$0"' "$checks/recording.log" \
        env MEMPROX_BENCH_DEVICE="${DEVICE:-cuda}" MEMPROX_BENCH_ROUNDS=3 "$PYTHON" -m pytest \
        benchmarks/test_bench_recording.py --benchmark-only -s -q -p no:cacheprovider \
        --benchmark-json="$checks/recording.json" ;;
    # bf16 beside compiled bf16 in one process (the fp32 stage measured fp32)
    bench_compiled) stage bench_compiled 90 0 env OUT="$checks" STAGES=bf16_compiled COMPILED_K="images and bf16" \
      benchmarks/run_gpu_checks.sh ;;
    *) echo "unknown session stage $name" | tee -a "$log"; exit 2 ;;
  esac
  summarize
done
trap - TERM INT
note "[session] $((SECONDS)) s in all"
summarize
