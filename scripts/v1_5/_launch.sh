# Sourced by the v1_5 scripts: run gamma_mod.train.train with CONFIG and OVERRIDES, as one process,
# torchrun (NPROC > 1) or the deepspeed launcher over a HOSTFILE (multi-node).
# Pretrained parts of the real recipes come from the environment (local paths, see the README):
#   LLM (HF Llama folder), CLIP (HF CLIP folder), CONVNEXT (timm / open_clip checkpoint),
#   MM_ADAPTER (an official stage-1 mm_projector.bin).
# Errors follow gamma-mod's rule (gamma_mod/errors.py): one line on stderr, exit 2 for a usage error
# (the Python commands apply it themselves; `--debug` or GAMMA_MOD_DEBUG=1 adds their tracebacks).

usage_error() {
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

# require_executable PATH VARIABLE: the tool a script runs exists (else one line naming the variable to set).
require_executable() {
  [ -x "$1" ] || usage_error "no executable $1 (set $2=/path/to/${1##*/})"
}

launch_training() {
  if [ -n "${LLM:-}" ]; then OVERRIDES+=("model.llm=$LLM"); fi
  if [ -n "${CLIP:-}" ]; then OVERRIDES+=("model.clip=$CLIP"); fi
  if [ -n "${CONVNEXT:-}" ]; then OVERRIDES+=("model.convnext=$CONVNEXT"); fi
  if [ -n "${MM_ADAPTER:-}" ]; then OVERRIDES+=("model.mm_adapter=$MM_ADAPTER"); fi
  if [ -n "${HOSTFILE:-}" ]; then
    exec deepspeed --hostfile "$HOSTFILE" "$ROOT/gamma_mod/train/train.py" "$CONFIG" "${OVERRIDES[@]}" "$@"
  elif [ "${NPROC:-1}" -gt 1 ]; then
    exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$NPROC" -m gamma_mod.train.train "$CONFIG" "${OVERRIDES[@]}" "$@"
  else
    exec "$PYTHON" -m gamma_mod.train.train "$CONFIG" "${OVERRIDES[@]}" "$@"
  fi
}
