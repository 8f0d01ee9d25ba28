#!/usr/bin/env bash
# The model card's ablation: short runs (600 iterations each, same seed) of the training recipe with one
# ingredient removed or changed, then validated side by side on unf01.
#   bash SoftSpinalCordSegTraining/run_ablations.sh [DATA_DIR] [RUNS_DIR]
set -euo pipefail
data=${1:-../shared/data}; runs=${2:-runs}
data=$(realpath "$data"); mkdir -p "$runs"; runs=$(realpath "$runs")
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736
common="--data $data --iterations 600 --batch 16 --bf16 --seed 0 --validate-every 600 --checkpoint-every 100 --threads 1 --pam50-slabs 600"
cd "$(dirname "$0")/.."   # the repository root: python -m finds SoftSpinalCordSegTraining there
for spec in "full:" "no_synthetic:--no-synthetic" "binary_targets:--binary-targets" "mse:--loss mse" "no_real:--no-real"; do
  name=${spec%%:*}; flags=${spec#*:}
  python -m SoftSpinalCordSegTraining.train $common --run "$runs/ablation_$name" --resume $flags
done
python -m SoftSpinalCordSegTraining.evaluate_ablation --data "$data" "$runs"/ablation_{full,no_synthetic,no_real,binary_targets,mse}
