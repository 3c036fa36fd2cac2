#!/usr/bin/env bash
# README command 1: install gamma-mod into .venv and run the whole gamma-MoD pipeline on the
# embedded default (tiny model, bundled synthetic data):
#   synthetic data -> stage 1 -> ARank -> convert -> stage-2 MoD SFT (+ dense baseline) -> report
#   bash scripts/quickstart.sh [--strategy gamma|pmod] [--out runs/quickstart] [...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${GAMMA_MOD_VENV:-$ROOT/.venv}/bin/gamma-mod" pipeline "$@"
