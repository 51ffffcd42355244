#!/usr/bin/env bash
# A small ablation on one GPU: which way of writing the target check lets a sequential Countdown model stop at the
# target it never trained on? One sequential model per arm, side by side, smaller than the bundled ones (fewer
# problems, BUDGET tokens each), then each one on the same held-out-target test problems. One phase per call (a rented
# GPU limits each command's time; `train` detaches the runs, `wait` picks them up):
#   bash benchmarks/countdown_gpu/ablate.sh train    # data per arm (the shipped data config + the arm's override),
#                                                    # then one detached `sprint train` per arm
#   bash benchmarks/countdown_gpu/ablate.sh wait     # until every arm's model is saved (WAIT seconds at most)
#   bash benchmarks/countdown_gpu/ablate.sh eval     # N test problems per arm (all arms at once), then the table
# Arms (ARMS, default "none target compare whole"): none / target / compare / distance set trace.check with the digit
# tokenizer; whole is check none with whole-number tokens (the first bundled pair's tokenizer).
# Env: ARMS, TRAIN (problems, 100000), BUDGET (tokens per model, 60000000), N (test problems, 200), SEED (1),
# WAIT (540), LIMIT (eval seconds, 540), EXTRA (more `sprint train` overrides, e.g. a smaller batch on a CPU). Results: runs/ablate/<arm>/{data,model,eval}; a table and a tarball under $OUT.
set -u
phase=${1:?usage: ablate.sh train|wait|eval}
ARMS=${ARMS:-none target compare whole}; TRAIN=${TRAIN:-100000}; BUDGET=${BUDGET:-60000000}
N=${N:-200}; SEED=${SEED:-1}; WAIT=${WAIT:-540}; LIMIT=${LIMIT:-540}
if ls .whl/*.whl >/dev/null 2>&1 && [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
narms=$(echo $ARMS | wc -w)
arm_flags() { case $1 in whole) echo "--numbers whole --check none" ;; *) echo "--check $1" ;; esac; }
case $phase in
  train)
    nvidia-smi --query-gpu=name --format=csv,noheader
    workers=$(( ($(nproc) - 1) / narms )); [ $workers -lt 1 ] && workers=1
    mkdir -p runs/ablate  # the logs below go to runs/, which a fresh machine does not have
    for a in $ARMS; do  # the arms' data side by side (same problems: same seed and sizes)
      python3 -m sprint.cli countdown data --config configs/countdown-data.yaml --out runs/ablate/$a/data \
        --train "$TRAIN" --val 500 --test "$N" $(arm_flags $a) --workers $workers --no-progress \
        > runs/ablate_$a.data.log 2>&1 &
    done
    wait
    for a in $ARMS; do tail -1 runs/ablate_$a.data.log; done
    for a in $ARMS; do
      setsid nohup python3 -m sprint.cli train --config configs/countdown-small.yaml data.format=sequential \
        model.tokenizer=runs/ablate/$a/data/tokenizer "data.train=runs/ablate/$a/data/{format}_train.jsonl" \
        "data.eval=runs/ablate/$a/data/{format}_val.jsonl" training.output_dir=runs/ablate/$a/model \
        training.max_tokens_budget=$BUDGET training.sft.dataloader_num_workers=2 data.num_proc=4 ${EXTRA:-} \
        > runs/ablate_$a.train.log 2>&1 < /dev/null &
    done
    sleep 60; for a in $ARMS; do tr '\r' '\n' < runs/ablate_$a.train.log | grep -E "setup:|tokens_per_second|Error" | tail -1; done ;;
  wait)
    deadline=$((SECONDS + WAIT))
    while [ $SECONDS -lt $deadline ]; do
      done=0  # saved or failed: either way the arm is over
      for a in $ARMS; do grep -qE "model saved to|Traceback" runs/ablate_$a.train.log 2>/dev/null && done=$((done+1)); done
      [ $done -eq $narms ] && break
      sleep 10
    done
    for a in $ARMS; do grep -q Traceback runs/ablate_$a.train.log && { echo "arm $a failed"; tail -5 runs/ablate_$a.train.log; }; done
    for a in $ARMS; do echo "== $a"; tr '\r' '\n' < runs/ablate_$a.train.log | grep -E "eval_loss|model saved|Error" | tail -2; done ;;
  eval)
    mkdir -p "${OUT:-runs}"
    for a in $ARMS; do
      timeout "$LIMIT" python3 -m sprint.cli eval --task countdown --n "$N" --seed "$SEED" --concurrency 64 \
        --model runs/ablate/$a/model --method sequential --max-tokens 4000 --out runs/ablate/$a/eval --no-progress \
        > runs/ablate_$a.eval.log 2>&1 &
    done
    wait
    python3 benchmarks/countdown_gpu/ablate_table.py $(for a in $ARMS; do echo runs/ablate/$a; done) \
      | tee ${OUT:-runs}/ablate_table.md
    [ -n "${OUT:-}" ] && tar czf "$OUT/ablate.tgz" runs/ablate/*/eval runs/ablate/*/data/stats.json \
      runs/ablate/*/model/train_metrics.json runs/ablate_*.log 2>/dev/null ;;
  *) echo "unknown phase $phase" >&2; exit 2 ;;
esac
