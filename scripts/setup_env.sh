#!/usr/bin/env bash
# Create .venv and install gamma-mod into it.
#   bash scripts/setup_env.sh [extra,...]     e.g. bash scripts/setup_env.sh test
# torch is installed first, from /opt/wheels when that folder holds the CPU wheel (this kind of
# machine), else from the normal registry (a GPU box), and then pinned with a constraints file so
# no other package can pull a different (multi-GB CUDA) build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GAMMA_MOD_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="${1:-}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
FIND_LINKS=()
if [ -d /opt/wheels ] && ls /opt/wheels/torch-2.13.0* >/dev/null 2>&1; then
  FIND_LINKS=(--find-links /opt/wheels)
fi
"${PIP[@]}" "${FIND_LINKS[@]}" "torch==2.13.0"
SPEC="$ROOT"
if [ -n "$EXTRAS" ]; then SPEC="$ROOT[$EXTRAS]"; fi
# DS_BUILD_OPS=0: DeepSpeed's CUDA ops are optional and built lazily (they cannot build without CUDA).
DS_BUILD_OPS=0 "${PIP[@]}" "${FIND_LINKS[@]}" -c "$ROOT/scripts/constraints.txt" -e "$SPEC"
if [[ ",$EXTRAS," == *",test,"* ]]; then
  # lmms-eval for the plugin tests without torchvision: the package with --no-deps, then only what
  # its import path needs (GPU boxes install the full `lmms` extra instead). pip then lists the
  # requirements of lmms-eval left out as "not installed", and its wandb==0.25.0 pin against the
  # newer wandb of the test extra: expected.
  "${PIP[@]}" "${FIND_LINKS[@]}" -c "$ROOT/scripts/constraints.txt" --no-deps "lmms-eval==0.7.3"
  "${PIP[@]}" "${FIND_LINKS[@]}" -c "$ROOT/scripts/constraints.txt" -r "$ROOT/scripts/lmms_eval_nodeps.txt"
fi
echo "gamma-mod installed in $VENV"
