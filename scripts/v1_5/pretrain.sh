#!/usr/bin/env bash
# Stage 1 (projector alignment). Defaults: the tiny embedded recipe on the synthetic data.
#   bash scripts/v1_5/pretrain.sh                                  # tiny, single process
#   CONFIG=configs/train/llava_hr_7b_stage1.yaml LLM=/models/vicuna-7b-v1.5 CLIP=/models/clip-vit-large-patch14-336 \
#     CONVNEXT=/models/convnext_large_mlp.clip_laion2b_ft_320 NPROC=8 bash scripts/v1_5/pretrain.sh
# Extra arguments are config overrides (key.path=value).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CONFIG="${CONFIG:-$ROOT/configs/train/stage1_tiny.yaml}"
DATA_DIR="${DATA_DIR:-$ROOT/runs/quickstart/data}"     # synthetic data (made if missing)
OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/runs/quickstart/stage1}"
NPROC="${NPROC:-1}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
HOSTFILE="${HOSTFILE:-}"                                # multi-node: a DeepSpeed hostfile
source "$ROOT/scripts/v1_5/_launch.sh"
require_executable "$PYTHON" PYTHON

if [[ "$CONFIG" == *tiny* && ! -f "$DATA_DIR/stage1.json" ]]; then
  "$PYTHON" -m gamma_mod.cli synth --out "$DATA_DIR"
fi
OVERRIDES=("output_dir=$OUTPUT_DIR")
if [[ "$CONFIG" == *tiny* ]]; then
  OVERRIDES+=("model.tokenizer=$DATA_DIR/tokenizer" "data.train_json=$DATA_DIR/stage1.json" "data.image_folder=$DATA_DIR/images")
fi
launch_training "$@"
