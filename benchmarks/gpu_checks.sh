#!/usr/bin/env bash
# Every GPU check in one go, most important first, under one time budget (GPU time is often short):
#   bash benchmarks/gpu_checks.sh
# Environment (all optional):
#   BUDGET=600            seconds for everything; a step that cannot get 20 s is skipped and says so
#   DATA=../shared/datasets/imdb   IMDb parquet (train/test) for the Trainer comparison and parity
#   MODEL_DIR=...         a MiniLM model folder, where the packaged one is not installed (offline machines)
#   OUT=benchmarks/results   where result files go (named by date, time and device; never overwritten)
# On a GPU machine without hydra, run `python benchmarks/bench_gpu.py --make-kit` where the project is
# installed, copy the checkout with .cache/gpu-kit, and the script puts the kit on PYTHONPATH itself.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[ -d .cache/gpu-kit ] && export PYTHONPATH=$PWD/.cache/gpu-kit${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-benchmarks/results}; DATA=${DATA:-../shared/datasets/imdb}; mkdir -p "$OUT"
DEADLINE=$(( $(date +%s) + ${BUDGET:-600} ))
MODEL=(); [ -n "${MODEL_DIR:-}" ] && MODEL=(--model-dir "$MODEL_DIR")
step() {  # step NAME MAX_SECONDS CMD...: CMD under min(MAX, what is left of the budget)
  local name=$1 max=$2; shift 2
  local left=$(( DEADLINE - $(date +%s) )); [ $left -lt $max ] && max=$left
  if [ $max -lt 20 ]; then echo "=== SKIPPED $name: budget spent"; return; fi
  echo "=== $(date -u +%FT%TZ) $name (up to ${max}s)"; local t0=$(date +%s)
  timeout "$max" "$@"; echo "=== $name: exit $? after $(( $(date +%s) - t0 ))s"
}
device=$($PY -c "
import sys, torch
if not torch.cuda.is_available():
    sys.exit('no CUDA GPU: gpu_checks.sh runs the GPU checks; run it on a GPU machine')
print(torch.cuda.get_device_name().lower().replace(' ', '-'))") || exit 2
log="$OUT/gpu-tests-$(date +%Y-%m-%dT%H%M)-$device.log"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'transformers', transformers.__version__)"
# 1. the GPU tests (collect on a bare machine: name the files, not -m gpu)
step tests 300 bash -c "set -o pipefail; $PY -m pytest tests/test_gpu.py tests/test_bench_gpu.py -p no:cacheprovider -rs 2>&1 | tee '$log'"
# 2. MFU of BERT-base at 512 tokens, with where each loop's time goes
step mfu 150 $PY benchmarks/bench_gpu.py --profile --out "$OUT"
# 3. the expert Trainer vs our loop on MiniLM, with accuracy parity on the same reviews
step trainer-minilm 300 $PY benchmarks/bench_speed.py --device cuda --parts d --data "$DATA" "${MODEL[@]}" \
  --ft-n 1024 --parity-n 1024 --parity-test 1000 --out "$OUT"
# 4. the same on a BERT-base-sized model (random weights: speed only)
step trainer-bert-base 200 $PY benchmarks/bench_speed.py --device cuda --parts d --data "$DATA" --random-bert-base \
  --ft-n 512 --parity-n 0 --out "$OUT"
# 5. MFU with torch.compile
step mfu-compile 200 $PY benchmarks/bench_gpu.py --compile --out "$OUT"
