#!/usr/bin/env bash
# One command: wrk (apt) if missing, bench/.venv with zmqhttp (compiled, as a wheel
# install builds it: ZMQHTTP_COMPILE=1; ZMQHTTP_COMPILE=0 measures the pure-Python
# build) and the pinned peers from bench/requirements.txt, then the comparison.
# Options go to compare.py:
#   bench/run.sh                                   all servers, scenarios a-f, 3 rounds of 5 s
#   bench/run.sh --rounds 1 --duration 3 --servers zmqhttp-asgi,uvicorn --scenarios a,b
#   bench/run.sh --list
# Results: bench/results/results.md, results.json, results.png (server logs in logs/).
set -euo pipefail
cd "$(dirname "$0")"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux >/dev/null; }
[ -x .venv/bin/python ] || python3 -m venv .venv
ZMQHTTP_COMPILE="${ZMQHTTP_COMPILE:-1}" .venv/bin/pip install -q -r requirements.txt
.venv/bin/python -c "import zmqhttp; print('zmqhttp', zmqhttp.__version__, 'compiled' if zmqhttp.compiled() else 'pure Python')"
exec .venv/bin/python compare.py "$@"
