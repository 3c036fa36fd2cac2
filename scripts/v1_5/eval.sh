#!/usr/bin/env bash
# Answer + score every LLaVA-v1.5 benchmark whose data folder is present under $EVAL_DIR
# (LLaVA's playground/data/eval layout, see its docs/Evaluation.md). Resumable: rerun after a stop.
#   bash scripts/v1_5/eval.sh [MODEL_DIR] [EVAL_DIR]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODEL=${1:-${MODEL:-$ROOT/runs/quickstart/stage2_gamma}}   # default: the quickstart's MoD model
EVAL_DIR=${2:-${EVAL_DIR:-$ROOT/playground/data/eval}}
SYNTHETIC_DIR=${SYNTHETIC_DIR:-$ROOT/runs/quickstart/data}  # the embedded default's held-out split
OUT=${OUT:-$MODEL/eval}
BATCH_SIZE=${BATCH_SIZE:-8}
TEMPLATE=${TEMPLATE:-vicuna_v1}
GAMMA_MOD=${GAMMA_MOD:-$ROOT/.venv/bin/gamma-mod}
source "$ROOT/scripts/v1_5/_launch.sh"
require_executable "$GAMMA_MOD" GAMMA_MOD

# benchmark name -> folder under $EVAL_DIR
declare -A FOLDERS=(
  [vqav2]=vqav2 [gqa]=gqa [vizwiz]=vizwiz [scienceqa]=scienceqa [textvqa]=textvqa [pope]=pope
  [mme]=MME [mmbench]=mmbench [seed_bench]=seed_bench [mm-vet]=mm-vet
)

for bench in vqav2 gqa vizwiz scienceqa textvqa pope mme mmbench seed_bench mm-vet; do
  data="$EVAL_DIR/${FOLDERS[$bench]}"
  if [[ ! -d "$data" ]]; then
    echo "skip $bench: no $data"
    continue
  fi
  "$GAMMA_MOD" eval --model "$MODEL" --benchmark "$bench" --data "$data" --out "$OUT/$bench" \
    --batch-size "$BATCH_SIZE" --template "$TEMPLATE"
done

if [[ -f "$SYNTHETIC_DIR/stage2_test.json" ]]; then
  "$GAMMA_MOD" eval --model "$MODEL" --benchmark synthetic --data "$SYNTHETIC_DIR" --out "$OUT/synthetic" \
    --batch-size "$BATCH_SIZE" --template "$TEMPLATE" --max-new-tokens 4
fi
