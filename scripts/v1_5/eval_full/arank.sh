#!/usr/bin/env bash
# ARank of a stage-1 model, then the MoD conversion it implies.
#   bash scripts/v1_5/eval_full/arank.sh                           # tiny defaults
#   MODEL=runs/llava-hr-7b/stage1 DATA=playground/data/llava_v1_5_mix665k_mod.json IMAGES=playground/data \
#   K_DENSE=4 OUT_MODEL=runs/llava-hr-7b/mod-0.5 bash scripts/v1_5/eval_full/arank.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
MODEL="${MODEL:-$ROOT/runs/quickstart/stage2_sft}"
DATA="${DATA:-$ROOT/runs/quickstart/data/stage2_train.json}"
IMAGES="${IMAGES:-$ROOT/runs/quickstart/data/images}"
NUM_SAMPLES="${NUM_SAMPLES:-32}"
ARANK_OUT="${ARANK_OUT:-$ROOT/runs/quickstart/arank.json}"
K_DENSE="${K_DENSE:-2}"
ROUTING_RATIO="${ROUTING_RATIO:-0.5}"
OUT_MODEL="${OUT_MODEL:-$ROOT/runs/quickstart/converted_gamma}"
GAMMA_MOD="${GAMMA_MOD:-$ROOT/.venv/bin/gamma-mod}"

"$GAMMA_MOD" arank --model "$MODEL" --data "$DATA" --images "$IMAGES" --num-samples "$NUM_SAMPLES" --out "$ARANK_OUT"
"$GAMMA_MOD" convert --model "$MODEL" --arank "$ARANK_OUT" --k-dense "$K_DENSE" --routing-ratio "$ROUTING_RATIO" --out "$OUT_MODEL"
