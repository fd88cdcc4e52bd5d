#!/usr/bin/env bash
# Where a loaded zmqhttp spends its time: perf (dwarf call graphs) of one server
# process under wrk, attributed to compiled functions by perf_attrib.py, and the
# split between the Python thread and libzmq's I/O thread. Run bench/run.sh once
# first (it builds bench/.venv with the compiled zmqhttp). Needs perf (linux-perf).
#   bench/profile.sh                       ASGI hello, 50 keep-alive connections
#   bench/profile.sh wsgi_app / -c50       WSGI hello
#   bench/profile.sh asgi_app /download -c4
#   bench/profile.sh asgi_app / -c50 -H 'Connection: close'
set -euo pipefail
cd "$(dirname "$0")"
APP=${1:-asgi_app}; URLPATH=${2:-/}; shift $(( $# > 2 ? 2 : $# ))
WRK_ARGS=("$@"); [ ${#WRK_ARGS[@]} -gt 0 ] || WRK_ARGS=(-c50)
PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
OUT=$(mktemp -d)
taskset -c 0 .venv/bin/python -m zmqhttp serve "apps:$APP" --app-dir . --bind "127.0.0.1:$PORT" \
  --no-access-log --log-level warning &
SERVER=$!
trap 'kill -INT $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$OUT"' EXIT
sleep 2
taskset -c 1 timeout 30 wrk -t1 -d2s "${WRK_ARGS[@]}" "http://127.0.0.1:$PORT$URLPATH" >/dev/null
perf record -q -F 1500 --call-graph dwarf,16384 -p "$SERVER" -o "$OUT/perf.data" -- sleep 3 &
RECORD=$!
taskset -c 1 timeout 30 wrk -t1 -d5s "${WRK_ARGS[@]}" "http://127.0.0.1:$PORT$URLPATH" | grep Requests/sec
wait $RECORD
echo "-- share of the core by thread and library"
perf report -i "$OUT/perf.data" --no-children --sort comm,dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -8
echo "-- the Python thread, by nearest compiled function"
perf script -i "$OUT/perf.data" 2>/dev/null | .venv/bin/python perf_attrib.py 30
