#!/usr/bin/env bash
# Build the Countdown data from the shipped config and train both models side by side on one GPU (same preset,
# same token budget, same seed; only data.format differs), then wait up to $1 seconds (default 420) for them.
# What produced the bundled models (one H100, 2026-11-26). On a machine without trl/datasets/math-verify, put their
# wheels in .whl/ first (pip download --no-deps --only-binary=:all: ... -d .whl); they are installed to /tmp/site.
# The runs detach (setsid), so a later `wait.sh` call can pick them up if this command's time limit ends first.
# FORMATS="sequential" trains one of the two (a machine that is reclaimed after 30 minutes may not fit both: side by
# side on one H200 they ran at ~205k and ~180k tokens/s with the distances data, the GPU 38% busy; alone ~290k).
set -u
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
mkdir -p runs
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -m sprint.cli countdown data --config configs/countdown-data.yaml --out runs/countdown/data --no-progress \
  --workers "$(( $(nproc) - 1 ))" 2>&1 | tail -1
for f in ${FORMATS:-sprint sequential}; do
  setsid nohup python3 -m sprint.cli train --config configs/countdown-small.yaml data.format=$f "${@:2}" \
     > runs/train_$f.log 2>&1 < /dev/null &
done
bash "$(dirname "$0")/wait.sh" "${1:-420}"
