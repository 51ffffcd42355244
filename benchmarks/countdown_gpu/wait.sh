#!/usr/bin/env bash
# Wait up to $1 seconds for the two Countdown trainings started by train.sh; print their last logged lines; when
# both are done, pack the models (<= 15 MB pieces, as a file-size-limited transfer needs) and metrics under $OUT.
# FORMATS="sprint" (or "sequential") waits for that one run only.
set -u
deadline=$((SECONDS + ${1:-540}))
FORMATS=${FORMATS:-sprint sequential}
logs=""; for f in $FORMATS; do logs="$logs runs/train_$f.log"; done
want=$(echo $FORMATS | wc -w)
while [ $SECONDS -lt $deadline ]; do
  done=0; for f in $logs; do grep -q "model saved to" $f 2>/dev/null && done=$((done+1)); done
  [ $done -eq $want ] && break
  grep -l "Traceback" $logs 2>/dev/null && break   # only these two logs: an older log must not stop the wait
  sleep 10
done
for f in $logs; do echo "== $f"; tr '\r' '\n' < $f | grep -E "setup:|eval_loss|train_runtime|model saved|Error" | tail -5; done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
if [ $done -eq $want ] && [ -n "${OUT:-}" ]; then
  for f in $FORMATS; do
    cp runs/countdown/models/$f/train_metrics.json $OUT/metrics_$f.json
    tar cf - -C runs/countdown/models --exclude=checkpoints --exclude=training_args.bin $f | split -b 15m - $OUT/model_$f.tar.part_
  done
  cp runs/countdown/data/stats.json $OUT/data_stats.json
  ls -la $OUT
fi
