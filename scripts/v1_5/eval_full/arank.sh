#!/usr/bin/env bash
# ARank of a dense model (writes $ARANK_OUT and its .png), then the MoD conversion it implies.
# Every path below is a variable; the defaults point at the tiny pipeline's outputs
# (`bash scripts/quickstart.sh` writes runs/quickstart/{data,stage2_sft}).
#   bash scripts/v1_5/eval_full/arank.sh                                    # tiny defaults
#   MODEL=runs/llava-hr-7b/stage1 DATA=playground/data/llava_v1_5_mix665k.json IMAGES=playground/data \
#   NUM_SAMPLES=200 K_DENSE=4 DTYPE=bfloat16 ARANK_OUT=runs/llava-hr-7b/arank.json \
#   OUT_MODEL=runs/llava-hr-7b/mod-0.5 bash scripts/v1_5/eval_full/arank.sh
#   CONVERT=0 bash scripts/v1_5/eval_full/arank.sh                          # ARank only
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
MODEL="${MODEL:-$ROOT/runs/quickstart/stage2_sft}"            # dense model to measure (and convert)
DATA="${DATA:-$ROOT/runs/quickstart/data/stage2_train.json}"  # LLaVA-format instruction data
IMAGES="${IMAGES:-$ROOT/runs/quickstart/data/images}"
TEMPLATE="${TEMPLATE:-vicuna_v1}"
NUM_SAMPLES="${NUM_SAMPLES:-32}"
BATCH_SIZE="${BATCH_SIZE:-4}"
DTYPE="${DTYPE:-auto}"
TOL="${TOL:-}"                                                # empty: torch's default rank tolerance
ARANK_OUT="${ARANK_OUT:-$ROOT/runs/quickstart/arank.json}"
CONVERT="${CONVERT:-1}"
K_DENSE="${K_DENSE:-2}"                                       # paper: 4 of 32 layers; tiny model: 2
ROUTING_RATIO="${ROUTING_RATIO:-0.5}"                         # fraction of routable tokens skipped
OUT_MODEL="${OUT_MODEL:-$ROOT/runs/quickstart/converted_gamma}"
GAMMA_MOD="${GAMMA_MOD:-$ROOT/.venv/bin/gamma-mod}"
source "$ROOT/scripts/v1_5/_launch.sh"
require_executable "$GAMMA_MOD" GAMMA_MOD

TOL_ARGS=()
if [ -n "$TOL" ]; then TOL_ARGS=(--tol "$TOL"); fi
"$GAMMA_MOD" arank --model "$MODEL" --data "$DATA" --images "$IMAGES" --template "$TEMPLATE" \
  --num-samples "$NUM_SAMPLES" --batch-size "$BATCH_SIZE" --dtype "$DTYPE" "${TOL_ARGS[@]}" --out "$ARANK_OUT"
if [ "$CONVERT" = "1" ]; then
  "$GAMMA_MOD" convert --model "$MODEL" --arank "$ARANK_OUT" --k-dense "$K_DENSE" \
    --skip-ratio "$ROUTING_RATIO" --out "$OUT_MODEL"
fi
