# Sourced by the v1_5 scripts: run gamma_mod.train.train with CONFIG and OVERRIDES, as one process,
# torchrun (NPROC > 1) or the deepspeed launcher over a HOSTFILE (multi-node).
launch_training() {
  if [ -n "${HOSTFILE:-}" ]; then
    exec deepspeed --hostfile "$HOSTFILE" "$ROOT/gamma_mod/train/train.py" "$CONFIG" "${OVERRIDES[@]}" "$@"
  elif [ "${NPROC:-1}" -gt 1 ]; then
    exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$NPROC" -m gamma_mod.train.train "$CONFIG" "${OVERRIDES[@]}" "$@"
  else
    exec "$PYTHON" -m gamma_mod.train.train "$CONFIG" "${OVERRIDES[@]}" "$@"
  fi
}
