#!/usr/bin/env bash
# GET /echo/:msg through the echo cell vs a bare axum handler returning the same
# bytes, both measured in this run with wrk at 50 connections; between them, the
# host's own listener answering without a cell (what the listener costs, and so
# the most a cell behind it could reach). Needs wrk (apt-get install wrk).
# Usage: scripts/bench-http.sh [seconds per run]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
cargo build --release -p pulp-host --bin pulp --example bare_echo
cargo build --release --target wasm32-wasip1 --manifest-path testdata/Cargo.toml --target-dir testdata/target
data=$(mktemp -d)
trap 'kill $pulp_pid $bare_pid $listener_pid 2>/dev/null || true; rm -rf "$data"' EXIT

./target/release/pulp -manifest testdata/echo/pulp.cell.toml --http-port 18480 \
  --storage-root "$data" --log-level warn &
pulp_pid=$!
./target/release/examples/bare_echo 18481 &
bare_pid=$!
./target/release/examples/bare_echo 18482 --pulp-listener &
listener_pid=$!
for port in 18480 18481 18482; do
  until curl -sf "http://127.0.0.1:$port/echo/ping" > /dev/null; do sleep 0.2; done
done

run() { # name port round
  wrk -t2 -c50 -d"${secs}s" --latency "http://127.0.0.1:$2/echo/hello" > "$data/$1.$3.txt"
}
# Warm-up, then alternate the two so drift in a shared machine's load hits both.
wrk -t2 -c50 -d2s http://127.0.0.1:18480/echo/hello > /dev/null
wrk -t2 -c50 -d2s http://127.0.0.1:18481/echo/hello > /dev/null
wrk -t2 -c50 -d2s http://127.0.0.1:18482/echo/hello > /dev/null
for round in 1 2 3; do
  run cell 18480 "$round"
  run listener 18482 "$round"
  run bare-axum 18481 "$round"
done

median() { sort -g | sed -n 2p; }
field() { # name awk-program
  for round in 1 2 3; do awk "$2" "$data/$1.$round.txt"; done | median
}
for name in cell listener bare-axum; do
  rps=$(field "$name" '/^Requests\/sec:/ {print $2}')
  p50=$(field "$name" '$1 == "50%" {print $2}')
  p99=$(field "$name" '$1 == "99%" {print $2}')
  printf '%-10s %12s req/s   p50 %8s   p99 %8s   (median of 3 runs of %ss)\n' "$name" "$rps" "$p50" "$p99" "$secs"
  echo "$rps" > "$data/$name.rps"
done
awk -v c="$(cat "$data/cell.rps")" -v l="$(cat "$data/listener.rps")" -v b="$(cat "$data/bare-axum.rps")" \
  'BEGIN { printf "cell / bare axum = %.2f   listener / bare axum = %.2f\n", c / b, l / b }'
