#!/usr/bin/env bash
# Answer + score every LLaVA-v1.5 benchmark whose data folder is present under $EVAL_DIR
# (LLaVA's playground/data/eval layout, see its docs/Evaluation.md). Resumable: rerun after a stop.
#   bash scripts/v1_5/eval.sh [MODEL_DIR] [EVAL_DIR]
set -euo pipefail

MODEL=${1:-${MODEL:-checkpoints/gamma-mod-llava-hr-7b}}
EVAL_DIR=${2:-${EVAL_DIR:-playground/data/eval}}
OUT=${OUT:-$MODEL/eval}
BATCH_SIZE=${BATCH_SIZE:-8}
TEMPLATE=${TEMPLATE:-vicuna_v1}
GAMMA_MOD=${GAMMA_MOD:-gamma-mod}

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
