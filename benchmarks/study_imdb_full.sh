#!/usr/bin/env bash
# The full-scale IMDb study (README "Results: full IMDb"): the learning curve, tuned cheap strategies and the
# fine-tuning family, in resumable steps. Every sweep skips configs that already FINISHED in the store, and
# fine-tuning continues from its checkpoint (resume=true), so rerunning this script continues where it stopped.
#   STORE=~/tb-study bash benchmarks/study_imdb_full.sh          (hours on a CPU; the store holds mlflow.db)
# Export what has finished at any time (never over an earlier export): the learning curve (defaults), and the
# full-size table (each strategy at its defaults, plus the cheap ones tuned on validation, logged to imdb_full_tuned)
#   python -m experiments.compare --experiment imdb_full --tracking-uri sqlite:///$STORE/mlflow.db \
#       --out benchmarks/results/imdb_full-$(date -u +%Y-%m-%dT%H%M)
#   python -m experiments.compare --experiment imdb_full,imdb_full_tuned --where data.train_size=null \
#       --tracking-uri sqlite:///$STORE/mlflow.db --out benchmarks/results/imdb_full_table-$(date -u +%Y-%m-%dT%H%M)
# Each export keeps its runs (runs.csv, predictions.parquet). If the store is lost between pieces, the next
# piece starts a new one (cheap reference rows such as the baseline rerun in seconds, so each export can test
# against them), and one report over all the pieces is written from their exports:
#   python -m experiments.compare --from-export benchmarks/results/imdb_full-A,benchmarks/results/imdb_full-B \
#       --out benchmarks/results/imdb_full_merged-$(date -u +%Y-%m-%dT%H%M)
# STEPS picks the steps to run, e.g. STEPS="3 4" for the searches and tuned rows only (default: all, in order).
set -u
STEPS=" ${STEPS:-1 2 3 4 5 6 7} "
REPO=$(cd "$(dirname "$0")/.." && pwd)
STORE=${STORE:-$REPO/../tb-study}  # beside the checkout, so ../shared/datasets/imdb resolves from it too
mkdir -p "$STORE" && cd "$STORE" || exit 1
export TRANSFER_BENCH_CACHE=${TRANSFER_BENCH_CACHE:-$STORE/features}
PY="${PYTHON:-$REPO/.venv/bin/python} $REPO/run.py"
IMDB="data=imdb data.path=../shared/datasets/imdb data.train_size=null data.test_size=null"
step() { echo "=== $(date -u +%FT%TZ) $*"; }
want() { [[ $STEPS == *" $1 "* ]]; }  # is step $1 among STEPS?

if want 1; then
step "1. learning curve, cheap strategies, seed 0"
$PY -m experiment=learning_curve strategy=baseline,embed,freeze
fi

if want 2; then
step "2. learning curve, cheap strategies, seeds 1,2 up to 1,000 labels"
$PY -m experiment=learning_curve strategy=baseline,embed,freeze data.train_size=100,300,1000 seed=1,2
fi

if want 3; then
step "3. searches on full IMDb (validation macro-F1 only; the encoder features are cached)"
$PY -m experiment=search_baseline $IMDB hydra.sweeper.n_trials=16 hydra.sweep.dir=sweeps/search_baseline
$PY -m experiment=search_embed $IMDB 'strategy.layers=[-1]' strategy.pooling=mean hydra.sweeper.n_trials=10 \
    hydra.sweep.dir=sweeps/search_embed
$PY -m experiment=search_freeze $IMDB hydra.sweeper.n_trials=16 hydra.sweep.dir=sweeps/search_freeze
fi

if want 4; then
step "4. tuned cheap strategies on full IMDb, 3 seeds (the searches' best validation parameters), beside the defaults"
for s in baseline embed freeze; do
  best=$("${PYTHON:-$REPO/.venv/bin/python}" - "$s" <<'PY'
import sys, yaml
r = yaml.safe_load(open(f"sweeps/search_{sys.argv[1]}/optimization_results.yaml"))
print(" ".join(f"{k}={v}".replace(" ", "") for k, v in r["best_params"].items()))
PY
) || exit 1
  step "   $s tuned: $best"
  $PY -m experiment=imdb_full strategy=$s $best seed=0,1,2 experiment_name=imdb_full_tuned
done
fi

if want 5; then
step "5. fine-tuning family on the learning curve up to 3,000 labels"
$PY -m experiment=learning_curve strategy=lora,finetune data.train_size=100,300,1000 seed=0
$PY -m experiment=learning_curve strategy=lora,finetune data.train_size=100,300,1000 seed=1,2
$PY -m experiment=learning_curve strategy=lora,finetune data.train_size=3000 seed=0
fi

if want 6; then
step "6. fine-tuning family at full size (hours each on a CPU), the headline rows first"
$PY -m experiment=imdb_full strategy=finetune,lora seed=0 resume=true
$PY -m experiment=learning_curve strategy=lora,finetune data.train_size=10000 seed=0 resume=true
fi

if want 7; then
step "7. the other transfer strategies at full size (SetFit, partial, ULMFiT, the PEFT presets, TAPT): one seed each"
$PY -m experiment=imdb_full strategy=setfit,partial,ulmfit,bitfit,ia3,prompt,tapt,tapt_lora seed=0 resume=true
fi

step "done"
