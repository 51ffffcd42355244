#!/usr/bin/env bash
# Evaluate the bundled Countdown pair on a GPU with the in-process backend, one phase per call (a rented GPU limits
# each command's time; every phase resumes where an earlier call stopped). Summaries and results land under $OUT.
#   bash benchmarks/countdown_gpu/eval.sh check      # GPU tests, long-prefill first token, decode step by context and
#                                                    # batch, staged-solve timing of the bundled SPRINT model
#   bash benchmarks/countdown_gpu/eval.sh accuracy   # N (1000) held-out problems, both models, C (64) in flight
#   bash benchmarks/countdown_gpu/eval.sh latency    # M (50) of the same problems, both models, one at a time
#   ONLY=sprint|sequential bash ... latency          # one model of the pair (two GPUs: one process on each, so both
#                                                    # models get through the same problems in one call's time)
#   bash benchmarks/countdown_gpu/eval.sh latency2   # that: SPRINT on GPU 0, sequential on GPU 1, side by side
#   bash benchmarks/countdown_gpu/eval.sh accuracy2  # the accuracy phase so (two GPUs)
#   SEEDS="1 2" bash benchmarks/countdown_gpu/eval.sh latency4   # latency2 of two seeds at once (four GPUs), pooled
#   SEEDS="1 2" bash benchmarks/countdown_gpu/eval.sh latency2s  # latency2 of each seed in turn (two GPUs), pooled
#   BASE=.ab/src SEEDS="1 2" bash benchmarks/countdown_gpu/eval.sh latency_ab   # another commit's code (a copy of
#                                                    # its src/) against this tree's, one GPU, alternating per seed
#   bash benchmarks/countdown_gpu/eval.sh attention  # the decode attention's kernels on the GPU (tests), then their
#                                                    # device time with and without shared prefixes
#                                                    # (bench_shared_attention.py; $OUT/attention.jsonl)
# Both models run with the same decoding settings (greedy) and their bundled default limits; SEED defaults to 1;
# QORDER=sorted lists each question's numbers largest first (`--question-order`; its own run folders).
# The in-process backend replays decode steps from CUDA graphs (the GPU default); MODE=fast runs it without them and
# MODE=graphs names them (`--backend-mode`; each its own run folders); DSTEPS=N sets the greedy decode steps per graph
# replay (`--decode-steps`, default 8; its own run folders). `check` also times a decode step of the bundled
# SPRINT model with and without them (bench_decode.py).
# LIMIT (seconds) must end well inside the device call's own limit, which is cut to the device time left in the
# session: a call killed from outside returns nothing of this script's output (a latency run was lost so, 2026-11-27).
set -u
phase=${1:?usage: eval.sh check|attention|accuracy|accuracy2|latency|latency2|latency4|latency2s|latency_ab}
N=${N:-1000}; C=${C:-64}; M=${M:-50}; SEED=${SEED:-1}; LIMIT=${LIMIT:-560}
sfx=${TAG:+_$TAG}${QORDER:+_$QORDER}${MODE:+_$MODE}${DSTEPS:+_d$DSTEPS}   # run folders and file names of a tag,
                                                                          # question order,
                                                             # backend mode or decode steps per graph replay
OUT=${OUT:-runs/eval_out}; mkdir -p "$OUT" runs
export PYTHONPATH=${SRC:-$PWD/src}${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1   # SRC: another copy of src/
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
pair="--model countdown-sprint --method sprint --model countdown-sequential --method sequential"
case ${ONLY:-} in
  sprint|sequential) pair="--model countdown-$ONLY --method $ONLY" ;;
  "") ;;
  *) echo "ONLY must be sprint or sequential, got $ONLY" >&2; exit 2 ;;
esac
latency_pair() {   # the latency run folders (SPRINT, sequential) of seed $1
  echo "runs/eval_gpu_latency_n${M}_s$1${sfx}_sprint runs/eval_gpu_latency_n${M}_s$1${sfx}_sequential"
}
pooled_table() {   # one table of every seed of SEEDS pooled (paired bootstrap over problems), kept as $OUT/$1_table.md
  local runs=() s
  for s in ${SEEDS:-1 2}; do runs+=($(latency_pair "$s")); done
  python3 benchmarks/countdown_gpu/latency_table.py "${runs[@]}" --name "seeds ${SEEDS:-1 2}${sfx}" \
    | tee "$OUT/$1${sfx}_table.md"
}
case $phase in
  check)
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/backends/ 2>&1 | tail -3
    python3 benchmarks/bench_prefill.py 2>&1 | grep '^{'   # long prompts' first token (graphs after warm-up)
    python3 benchmarks/profile_decode.py --sdpa ours --lengths 32 1000 3000 --batches 1 2 4 8 --profile-steps 0 \
      --new-tokens 64 2>&1 | grep -E '^ +(matmul|sdpa) |Error'   # decode step by context and batch
    python3 benchmarks/bench_staged_solve.py --device cuda --max-batch 128 --n 3 2>&1 | tail -12
    python3 benchmarks/bench_decode.py --device cuda --models src/sprint/data/models/countdown-sprint \
      --batches 1 2 4 8 16 --modes fast graphs --out "$OUT/decode_graphs.json" 2>&1 | tail -12 ;;
  attention)
    python3 -m pytest -q -p no:cacheprovider tests/backends/test_kernels.py 2>&1 | tail -2
    python3 benchmarks/bench_shared_attention.py --batches 1 4 8 --keys 256 1024 2048 4096 \
      --out "$OUT/attention.jsonl" 2>&1 | tail -12 ;;
  accuracy|latency)
    if [ "$phase" = accuracy ]; then n=$N; c=$C; else n=$M; c=1; fi
    run=runs/eval_gpu_${phase}_n${n}_s${SEED}${sfx}${ONLY:+_$ONLY}; tag=${phase}${sfx}${ONLY:+_$ONLY}
    timeout "$LIMIT" python3 -m sprint.cli eval --task countdown --n "$n" --seed "$SEED" --concurrency "$c" $pair \
      ${QORDER:+--question-order $QORDER} ${MODE:+--backend-mode $MODE} ${DSTEPS:+--decode-steps $DSTEPS} \
      --out "$run" --summary-json "$OUT/${tag}_summary.json" --no-progress 2>&1 | tee "$OUT/${tag}.log" | tail -15
    echo "exit ${PIPESTATUS[0]} (124: time limit reached; call again to resume)"
    cp "$run/summary.md" "$OUT/${tag}_summary.md" 2>/dev/null
    for d in "$run"/*/ "$run"/; do  # one folder per model with two, the run folder itself with one (ONLY)
      name=$(basename "$d"); [ "$d" = "$run/" ] && name=countdown-${ONLY:-}-${ONLY:-}
      [ -f "$d/results.jsonl" ] && gzip -c "$d/results.jsonl" > "$OUT/${phase}${sfx}_${name}_results.jsonl.gz"
      [ -f "$d/settings.json" ] && cp "$d/settings.json" "$OUT/${phase}${sfx}_${name}_settings.json"
    done
    wc -l "$run"/*/results.jsonl "$run"/results.jsonl 2>/dev/null ;;
  accuracy2)
    # The accuracy phase with the two models side by side, SPRINT on GPU G0 and sequential on G1 (half the time).
    for m in sprint:${G0:-0} sequential:${G1:-1}; do
      ONLY=${m%:*} CUDA_VISIBLE_DEVICES=${m#*:} bash "$0" accuracy > "$OUT/accuracy2${sfx}_${m%:*}.out" 2>&1 &
    done
    wait; tail -n 6 "$OUT"/accuracy2${sfx}_*.out ;;
  latency2)
    # One-at-a-time latency is bound by one CPU core and one GPU per process: two processes on two GPUs do not slow
    # each other, and the slow sequential model gets the whole call.
    # G0/G1 pick the two GPUs (default 0 and 1).
    for m in sprint:${G0:-0} sequential:${G1:-1}; do
      ONLY=${m%:*} CUDA_VISIBLE_DEVICES=${m#*:} bash "$0" latency > "$OUT/latency2${sfx}_${m%:*}.out" 2>&1 &
    done
    wait; tail -n 6 "$OUT"/latency2${sfx}_*.out
    python3 benchmarks/countdown_gpu/latency_table.py $(latency_pair "$SEED") --name "latency${sfx}" \
      | tee "$OUT/latency2${sfx}_table.md" ;;
  latency4)
    # latency2 for each seed of SEEDS at once, seed i on GPUs 2i and 2i+1 (four GPUs for two seeds); each seed's files
    # under $OUT/s<seed>; then one table of all seeds pooled (paired bootstrap over problems).
    i=0
    for s in ${SEEDS:-1 2}; do
      SEED=$s G0=$((2 * i)) G1=$((2 * i + 1)) OUT=$OUT/s$s bash "$0" latency2 > "$OUT/latency4_s$s.out" 2>&1 &
      i=$((i + 1))
    done
    wait; tail -n 1 "$OUT"/latency4_s*.out
    pooled_table latency4 ;;
  latency2s)
    # latency2 for each seed of SEEDS one after another on two GPUs (when four are not lent), pooled as latency4.
    # LIMIT applies to each seed's run.
    for s in ${SEEDS:-1 2}; do
      SEED=$s OUT=$OUT/s$s bash "$0" latency2 > "$OUT/latency2s_s$s.out" 2>&1
      tail -n 1 "$OUT/latency2s_s$s.out"
    done
    pooled_table latency2s ;;
  latency_ab)
    # This tree's code against another commit's, on one GPU in one call: for each seed of SEEDS the latency phase of
    # the code in BASE (a copy of that commit's src/, its run folders tagged _base), then of this tree's; then each
    # code's table, seeds pooled. Prepare BASE here and carry it (an ignored folder; the bundled models are linked
    # from this tree): `mkdir -p .ab && git archive REF src | tar x -C .ab && rm -rf .ab/src/sprint/data`, then
    # `BASE=.ab/src SEEDS="1 2" LIMIT=110 bash benchmarks/countdown_gpu/eval.sh latency_ab` (carry .ab; LIMIT bounds
    # each of the 2 x seeds runs: four of 100 problems took about 330 s on an H200, 2026-11-28).
    base=$(cd "${BASE:?BASE: the copy of another commit src/ (see latency_ab)}" && pwd)
    [ -e "$base/sprint/data" ] || ln -s "$PWD/src/sprint/data" "$base/sprint/data"
    for s in ${SEEDS:-1 2}; do
      for code in base this; do
        if [ $code = base ]; then tag=base; src=$base; else tag=; src=$PWD/src; fi
        TAG=$tag SRC=$src SEED=$s OUT=$OUT/${code}_s$s bash "$0" latency > "$OUT/latency_ab_${code}_s$s.out" 2>&1
        tail -n 1 "$OUT/latency_ab_${code}_s$s.out"
      done
    done
    for tag in base ""; do
      runs=()
      for s in ${SEEDS:-1 2}; do
        r=runs/eval_gpu_latency_n${M}_s$s${tag:+_$tag}${sfx}
        runs+=("$r/countdown-sprint-sprint" "$r/countdown-sequential-sequential")
      done
      python3 benchmarks/countdown_gpu/latency_table.py "${runs[@]}" --name "${tag:-this tree}, seeds ${SEEDS:-1 2}"
    done | tee "$OUT/latency_ab${sfx}_table.md" ;;
  *) echo "unknown phase $phase" >&2; exit 2 ;;
esac
