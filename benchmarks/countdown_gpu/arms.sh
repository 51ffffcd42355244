#!/usr/bin/env bash
# Train and evaluate several Countdown models at the bundled recipe's full size, one per GPU of a multi-GPU machine,
# without the caller having to stay on the line: `start` detaches a pipeline (data for each distinct recipe, then per
# arm: train on its GPU, evaluate on the same GPU), `wait` polls it, `pack` copies what finished to $OUT.
#   bash benchmarks/countdown_gpu/arms.sh start          # wheels, then the detached pipeline; returns after ~1 min
#   bash benchmarks/countdown_gpu/arms.sh wait [SECONDS]  # progress every minute until done (default 540 s)
#   bash benchmarks/countdown_gpu/arms.sh stop ARM       # stop one arm (training or evaluation), e.g. a slow one
#   OUT=... bash benchmarks/countdown_gpu/arms.sh pack [ARM...]   # summaries, results, the models (.tar.xz) to $OUT
#                                                    # (PACK_MODELS=0: no models)
# LATENCY_M=8 with `start`: while the data builds, `eval.sh latency` times the bundled pair, M problems one at a time
# (LATENCY_LIMIT seconds, default 170), into runs/arms/latency: the SPRINT model on GPU 0 and the sequential one on
# GPU 1 side by side (both on GPU 0, one after the other, with one GPU), so both get through the same problems.
# The GPU machine is given back after 30 s without a call: issue each `wait` right after the previous call returns
# (a local check in between lost a four-GPU run on 2026-11-27); `start` + two `wait 590` + `pack` fit 30 minutes.
# Arms come from ARMS_FILE (default benchmarks/countdown_gpu/arms/sorted.txt): one line per arm,
# `NAME FORMAT DATA_OVERRIDES [TRAIN_OVERRIDES]` with comma-separated KEY=VALUE lists (`-` for none) for
# `sprint countdown data` on top of configs/countdown-data.yaml and `sprint train` on top of
# configs/countdown-small.yaml. Arm i runs on GPU i mod the GPU count (GPUS_PER_ARM=2: arm i trains data-parallel on
# GPUs 2i and 2i+1 through torchrun, a global batch twice the per-GPU one, and evaluates on the first; halve
# training.gradient_accumulation_steps in its overrides to keep the tokens per step). Arms with the same data overrides share one
# data build. Evaluation: N (1000) held-out test problems, SEED (1), C (128) in flight, greedy, the bundled models'
# limits (SPRINT plan 384 / execution 512 / answer 96 tokens; sequential 4,000), as `eval.sh accuracy` runs them;
# QORDER=sorted lists each question's numbers largest first (`sprint eval --question-order`).
# A training whose log stands still for STALL_S (180) seconds after it began is killed and started again, once.
# GRAPHS=1 (four GPUs) also checks and times the CUDA-graph decode while the data builds (see the pipeline).
set -u
phase=${1:?usage: arms.sh start|wait|pack}
ARMS_FILE=${ARMS_FILE:-benchmarks/countdown_gpu/arms/sorted.txt}
N=${N:-1000}; SEED=${SEED:-1}; C=${C:-128}; R=runs/arms
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
# NVLink multicast stays off for the data-parallel runs (GPUS_PER_ARM=2), as the lent machines require.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
arms() { grep -v '^\s*#' "$ARMS_FILE" | grep -v '^\s*$'; }
data_dir() { [ "$1" = - ] && echo $R/data/base || echo "$R/data/$(echo "$1" | tr ',=' '+-' | tr -cd 'A-Za-z0-9_.+-')"; }
list() { [ "$1" = - ] || echo "$1" | tr ',' ' '; }

watched() {  # LOG CMD...: run CMD in its own process group, appending to LOG; 0 done, 1 failed, 2 killed: LOG stood
  # still for STALL_S seconds (180) after training began (a "'loss'" line)
  local log=$1; shift
  setsid "$@" >> "$log" 2>&1 &
  local pid=$!
  while kill -0 $pid 2>/dev/null; do
    sleep ${STALL_POLL:-15}
    if grep -q "'loss'" "$log" && [ $(( $(date +%s) - $(stat -c %Y "$log") )) -gt ${STALL_S:-180} ]; then
      kill -- -$pid 2>/dev/null; sleep 5; kill -9 -- -$pid 2>/dev/null; wait $pid 2>/dev/null; return 2
    fi
  done
  wait $pid && return 0 || return 1
}

train_and_eval() {  # NAME FORMAT DATA_OVERRIDES TRAIN_OVERRIDES GPU
  local name=$1 fmt=$2 d; d=$(data_dir "$3")
  # Each arm starts when its own data is built (not when every recipe's data and the side jobs are done).
  while [ ! -e "$d.ok" ]; do
    [ -e "$d.failed" ] && { echo data-failed > $R/$name.state; return; }
    sleep 5
  done
  echo train > $R/$name.state
  local limits="--max-tokens 4000"
  [ "$fmt" = sprint ] && limits="--set sprint.max_plan_tokens=384 --set sprint.max_exec_tokens=512 --set sprint.max_answer_tokens=96"
  export CUDA_VISIBLE_DEVICES=$5
  local launcher=python3 g=${GPUS_PER_ARM:-1}
  [ "$g" -gt 1 ] && launcher="python3 -m torch.distributed.run --standalone --nproc_per_node $g"
  local try rc=1 log=$R/$name.train.log
  : > $log
  for try in 1 2; do
    watched $log $launcher -m sprint.cli train --config configs/countdown-small.yaml --no-progress data.format=$fmt \
      model.tokenizer=$d/tokenizer "data.train=$d/{format}_train.jsonl" "data.eval=$d/{format}_val.jsonl" \
      training.output_dir=$R/$name/model data.num_proc=${PROCS:-4} $(list "${4:--}"); rc=$?
    [ $rc = 2 ] || break
    # One arm hung after its first logging step on 2026-11-27 (its GPU idle): start it again, once.
    echo "$(date +%T) arms.sh: no log line for ${STALL_S:-180} s after training began: stopped (try $try)" >> $log
    mv $log $R/$name.train.stalled$try.log; : > $log
  done
  [ $rc = 0 ] || { echo failed > $R/$name.state; return; }
  echo eval > $R/$name.state
  python3 -m sprint.cli eval --task countdown --n "$N" --seed "$SEED" --concurrency "$C" --model $R/$name/model \
    --method $fmt $limits ${QORDER:+--question-order $QORDER} --out $R/$name/eval --summary-json $R/$name/summary.json --no-progress \
    > $R/$name.eval.log 2>&1 && echo done > $R/$name.state || echo eval-failed > $R/$name.state
}

case $phase in
  start)
    if ls .whl/*.whl >/dev/null 2>&1 && [ ! -d /tmp/site ]; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    fi
    mkdir -p $R; nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo "no nvidia-smi: CPU"
    setsid nohup bash "$0" pipeline > $R/pipeline.log 2>&1 < /dev/null &
    # While the data builds: the executor-branch GPU test (flex attention's compiled training step against the
    # dense mask), so a flex arm's numbers can be trusted.
    # (Only when an arm uses flex attention: the test takes a minute or more of the machine.)
    if grep -v '^\s*#' "$ARMS_FILE" | grep -q flex_attention; then
      timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/train/test_branches_gpu.py 2>&1 | tail -3
    fi
    sleep 5; cat $R/pipeline.log ;;
  pipeline)
    mkdir -p $R/data
    ngpu=$(nvidia-smi -L 2>/dev/null | wc -l); [ "$ngpu" -lt 1 ] && ngpu=1
    sets=$(arms | awk '{print $3}' | sort -u); nsets=$(echo "$sets" | wc -l)
    spare=1; [ "${LATENCY_M:-0}" -gt 0 ] && spare=5; [ "${GRAPHS:-0}" = 1 ] && spare=$((spare + 4))
    workers=$(( ($(nproc) - spare) / nsets )); [ $workers -lt 1 ] && workers=1
    echo "$(date +%T) data: $nsets recipe(s), $workers workers each; $ngpu GPU(s)"
    if [ "${LATENCY_M:-0}" -gt 0 ]; then
      # The GPUs idle while the data builds: the bundled pair's one-at-a-time latency meanwhile (cores kept free
      # for it: its decode loop is bound by one CPU core), to runs/arms/latency (packed). With GRAPHS=1 this one runs
      # without CUDA graphs (MODE=fast), beside the default (graphs) run below.
      mkdir -p $R/latency
      if [ "$ngpu" -ge 2 ]; then
        ( export OUT=$R/latency; [ "${GRAPHS:-0}" = 1 ] && [ "$ngpu" -ge 4 ] && export MODE=fast
          M=$LATENCY_M LIMIT=${LATENCY_LIMIT:-170} bash benchmarks/countdown_gpu/eval.sh latency2 > $R/latency.log 2>&1 ) &
      else
        ( export CUDA_VISIBLE_DEVICES=0 OUT=$R/latency
          M=$LATENCY_M LIMIT=${LATENCY_LIMIT:-170} bash benchmarks/countdown_gpu/eval.sh latency > $R/latency.log 2>&1 ) &
      fi
    fi
    if [ "${GRAPHS:-0}" = 1 ] && [ "$ngpu" -ge 4 ]; then
      # The CUDA-graph decode (the GPU default) while the data builds: its GPU tests and decode-step timing on GPU 2,
      # and with LATENCY_M the bundled pair's one-at-a-time latency with graphs (SPRINT on GPU 2, sequential on 3),
      # beside the eager one (MODE=fast) on GPUs 0 and 1 (the same problems, the same machine), into runs/arms/graphs and
      # runs/arms/latency. The tests share GPU 2 with the SPRINT model's run: if anything, that slows SPRINT.
      mkdir -p $R/graphs
      ( export CUDA_VISIBLE_DEVICES=2
        timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/backends/test_transformers_backend_gpu.py \
          > $R/graphs/tests.log 2>&1
        timeout 150 python3 benchmarks/bench_decode.py --device cuda --models src/sprint/data/models/countdown-sprint \
          --batches 1 2 4 8 16 --modes fast graphs --repeats 2 --out $R/graphs/decode_graphs.json > $R/graphs/bench.log 2>&1 ) &
      if [ "${LATENCY_M:-0}" -gt 0 ]; then
        ( export OUT=$R/latency MODE=graphs G0=2 G1=3; mkdir -p $R/latency
          M=$LATENCY_M LIMIT=${LATENCY_LIMIT:-170} bash benchmarks/countdown_gpu/eval.sh latency2 > $R/latency_graphs.log 2>&1 ) &
      fi
    fi
    for s in $sets; do
      ( python3 -m sprint.cli countdown data --config configs/countdown-data.yaml --out "$(data_dir "$s")" \
          --workers $workers --no-progress $(list "$s") > "$(data_dir "$s").log" 2>&1 \
        && touch "$(data_dir "$s").ok" || touch "$(data_dir "$s").failed" ) &
    done
    narms=$(arms | wc -l); export PROCS=$(( $(nproc) / (narms * ${GPUS_PER_ARM:-1}) )); [ $PROCS -lt 1 ] && PROCS=1  # tokenizing side by side (every rank tokenizes)
    i=0
    while read -r name fmt dov tov; do
      g=${GPUS_PER_ARM:-1}; first=$(( (i * g) % ngpu ))
      train_and_eval "$name" "$fmt" "$dov" "${tov:--}" "$(seq -s, $first $((first + g - 1)))" &
      i=$((i + 1))
    done < <(arms)
    wait
    for s in $sets; do tail -1 "$(data_dir "$s").log"; done
    echo "$(date +%T) all arms over"; touch $R/DONE ;;
  wait)
    deadline=$((SECONDS + ${2:-540}))
    while :; do
      echo "== $(date +%T)"
      while read -r name fmt _; do
        st=$(cat $R/$name.state 2>/dev/null || echo data)
        case $st in
          train) echo "$name: train $(tr '\r' '\n' < $R/$name.train.log \
                   | grep -oE "'(loss|eval_loss|num_input_tokens_seen|train_tokens_per_second)': '?[0-9.e+]+" \
                   | tail -4 | tr -d "'" | tr '\n' ' ')" ;;
          eval) echo "$name: eval $(cat $R/$name/eval/results.jsonl 2>/dev/null | wc -l) of $N" ;;
          *) echo "$name: $st" ;;
        esac
      done < <(arms)
      [ -f $R/DONE ] && { cat $R/*/summary.json 2>/dev/null | grep -E '"(model|accuracy|mean_sequential_tokens)"'; break; }
      left=$((deadline - SECONDS)); [ $left -le 0 ] && break
      sleep $((left < 60 ? left : 60))
    done
    grep -h -A3 Traceback $R/*.log 2>/dev/null | tail -20 ;;
  stop)
    name=${2:?usage: arms.sh stop ARM}
    # The bracket keeps pkill from matching this command's own line.
    pkill -f "runs/arms/$name/mode[l]" ; pkill -f "runs/arms/$name/eva[l]"
    sleep 2; echo stopped > $R/$name.state; echo "stopped $name" ;;
  pack)
    : "${OUT:?set OUT}"; shift
    names=${*:-$(arms | awk '{print $1}')}
    tar czf "$OUT/arms_results.tgz" $R/*.log $R/*.state $R/data/*/stats.json $R/latency $R/graphs \
      $(for n in $names; do echo $R/$n/eval $R/$n/summary.json $R/$n/model/train_metrics.json; done) 2>/dev/null
    for n in $names; do  # the model as shipped: no checkpoints, no optimizer state (PACK_MODELS=0: results only)
      [ "${PACK_MODELS:-1}" = 1 ] && [ -f $R/$n/model/model.safetensors ] || continue
      tar -c -I 'xz -T0' -f "$OUT/model_$n.tar.xz" --exclude 'model/checkpoints' --exclude 'model/training_args.bin' \
        --exclude 'model/runs' -C $R/$n model
    done
    ls -la "$OUT" ;;
  *) echo "unknown phase $phase" >&2; exit 2 ;;
esac
