#!/usr/bin/env bash
# Stage 2: SFT of a MoD model. Converts the stage-1 model first when $MOD_MODEL does not exist yet.
#   bash scripts/v1_5/finetune_mod.sh                              # tiny: converts runs/quickstart/stage2_sft
#   CONFIG=configs/train/llava_hr_7b_stage2_mod.yaml STAGE1=runs/llava-hr-7b/stage1 \
#     MOD_MODEL=runs/llava-hr-7b/mod-0.5 NPROC=8 bash scripts/v1_5/finetune_mod.sh
# Layer choice when converting:
#   $ARANK set to an existing arank.json: ARank top-k, $K_DENSE layers kept dense (first/last included);
#     default 4 for real configs (the official budget: 28 of 32 layers MoD, 36 of 40), 2 for tiny ones.
#   otherwise, real configs: the official `arank_mod` set (layers 0, 1, 2 and the last dense).
# Recipes without a `model.init` (configs/train/mgm_hd_7b_stage2_mod.yaml builds from pretrained parts and
# converts inside the job): set CONVERT=0. Extra arguments are config overrides (key.path=value).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CONFIG="${CONFIG:-$ROOT/configs/train/stage2_tiny.yaml}"
DATA_DIR="${DATA_DIR:-$ROOT/runs/quickstart/data}"
STAGE1="${STAGE1:-$ROOT/runs/quickstart/stage2_sft}"   # the model to convert
MOD_MODEL="${MOD_MODEL:-$ROOT/runs/quickstart/converted_gamma}"
ROUTING_RATIO="${ROUTING_RATIO:-0.5}"
OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/runs/quickstart/stage2_gamma}"
CONVERT="${CONVERT:-1}"
NPROC="${NPROC:-1}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
HOSTFILE="${HOSTFILE:-}"
source "$ROOT/scripts/v1_5/_launch.sh"
require_executable "$PYTHON" PYTHON
if [[ "$CONFIG" == *tiny* ]]; then
  ARANK="${ARANK:-$ROOT/runs/quickstart/arank.json}"
  K_DENSE="${K_DENSE:-2}"     # tiny models: 2 of their 6 layers
else
  ARANK="${ARANK:-}"
  K_DENSE="${K_DENSE:-4}"     # official budget: 4 dense layers of 32 (7B) / 40 (13B)
fi

OVERRIDES=("output_dir=$OUTPUT_DIR")
if [ "$CONVERT" = "1" ]; then
  if [ ! -f "$MOD_MODEL/config.json" ]; then
    if [ -n "$ARANK" ] && [ -f "$ARANK" ]; then
      SELECT=(--arank "$ARANK" --k-dense "$K_DENSE")
    elif [[ "$CONFIG" == *tiny* ]]; then
      usage_error "no ARank file $ARANK (run scripts/v1_5/eval_full/arank.sh first)"
    else
      LAYERS="$(sed -n 's/.*"num_hidden_layers": *\([0-9]*\).*/\1/p' "$STAGE1/config.json" | head -1)"
      if [ -z "$LAYERS" ]; then usage_error "no num_hidden_layers in $STAGE1/config.json"; fi
      SELECT=(--layers "$(seq -s, 3 $((LAYERS - 2)))")   # arank_mod: 0, 1, 2 and the last stay dense
    fi
    "$PYTHON" -m gamma_mod.cli convert --model "$STAGE1" "${SELECT[@]}" --skip-ratio "$ROUTING_RATIO" --out "$MOD_MODEL"
  fi
  OVERRIDES+=("model.init=$MOD_MODEL" "model.tokenizer=$MOD_MODEL")
  if [[ "$CONFIG" != *tiny* ]]; then
    OVERRIDES+=("mod.skip_ratio=$ROUTING_RATIO")
    # An ARank-selected set need not be arank_mod's: the recipe then checks only ratio and loss weight.
    if [ -n "$ARANK" ] && [ -f "$ARANK" ]; then OVERRIDES+=("mod.dense_layers=null"); fi
  fi
fi
if [[ "$CONFIG" == *tiny* ]]; then
  OVERRIDES+=("data.train_json=$DATA_DIR/stage2_train.json" "data.image_folder=$DATA_DIR/images")
fi
launch_training "$@"
