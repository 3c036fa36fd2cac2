#!/usr/bin/env bash
# README command 2: install gamma-mod with its test extra and run the test suite.
#   bash scripts/test.sh [pytest args ...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh" test
cd "$ROOT"
exec "${GAMMA_MOD_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
