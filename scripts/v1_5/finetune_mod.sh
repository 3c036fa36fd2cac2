#!/usr/bin/env bash
# Stage 2: SFT of a MoD model (made by `gamma-mod convert`, see eval_full/arank.sh).
#   bash scripts/v1_5/finetune_mod.sh                              # tiny: converts runs/quickstart/stage1 if needed
#   CONFIG=configs/train/llava_hr_7b_stage2_mod.yaml NPROC=8 bash scripts/v1_5/finetune_mod.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CONFIG="${CONFIG:-$ROOT/configs/train/stage2_tiny.yaml}"
DATA_DIR="${DATA_DIR:-$ROOT/runs/quickstart/data}"
STAGE1="${STAGE1:-$ROOT/runs/quickstart/stage2_sft}"   # the model to convert
MOD_MODEL="${MOD_MODEL:-$ROOT/runs/quickstart/converted_gamma}"
ARANK="${ARANK:-$ROOT/runs/quickstart/arank.json}"
ROUTING_RATIO="${ROUTING_RATIO:-0.5}"
OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/runs/quickstart/stage2_gamma}"
NPROC="${NPROC:-1}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
HOSTFILE="${HOSTFILE:-}"
source "$ROOT/scripts/v1_5/_launch.sh"
require_executable "$PYTHON" PYTHON

if [ ! -f "$MOD_MODEL/config.json" ]; then
  "$PYTHON" -m gamma_mod.cli convert --model "$STAGE1" --arank "$ARANK" --k-dense 2 \
    --routing-ratio "$ROUTING_RATIO" --out "$MOD_MODEL"
fi
OVERRIDES=("output_dir=$OUTPUT_DIR" "model.init=$MOD_MODEL" "model.tokenizer=$MOD_MODEL")
if [[ "$CONFIG" == *tiny* ]]; then
  OVERRIDES+=("data.train_json=$DATA_DIR/stage2_train.json" "data.image_folder=$DATA_DIR/images")
fi
launch_training "$@"
