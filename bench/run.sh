#!/usr/bin/env bash
# One command: a venv with zmqhttp and the peers, then the comparison.
#   bench/run.sh [compare.py options]   e.g. bench/run.sh --rounds 5 --duration 5
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
python3 -m venv bench/.venv
bench/.venv/bin/pip install -q -e . -r bench/requirements.txt
exec bench/.venv/bin/python bench/compare.py "$@"
