#!/usr/bin/env bash
# The HTTP benchmark of scripts/bench-http.sh for two builds of the host in one
# run: git revision REV (before) and the working tree (after), both serving the
# working tree's echo cell, with bare axum as the common baseline. Rounds
# alternate before / after / bare so drift in a shared machine's load hits all
# three. Needs wrk. Usage: scripts/bench-compare.sh REV [seconds per run]
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: scripts/bench-compare.sh REV [seconds per run]}
secs=${2:-10}
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
data=$(mktemp -d)
tree=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; git -C "$root" worktree remove --force "$tree" 2>/dev/null || true; rm -rf "$data"' EXIT

# A target directory of its own, kept between runs: in the working tree's,
# REV's workspace crates would replace the working tree's under the same names.
git worktree add --detach --force "$tree" "$rev" > /dev/null
(cd "$tree" && CARGO_TARGET_DIR=$target/bench-before cargo build --release -p pulp-host --bin pulp)
cp "$target/bench-before/release/pulp" "$data/pulp-before"
cargo build --release -p pulp-host --bin pulp --example bare_echo
cp "$target/release/pulp" "$data/pulp-after"
cargo build --release --target wasm32-wasip1 --manifest-path testdata/Cargo.toml --target-dir testdata/target

"$data/pulp-before" -manifest testdata/echo/pulp.cell.toml --http-port 18490 \
  --storage-root "$data/before" --log-level warn &
"$data/pulp-after" -manifest testdata/echo/pulp.cell.toml --http-port 18491 \
  --storage-root "$data/after" --log-level warn &
"$target/release/examples/bare_echo" 18492 &
for port in 18490 18491 18492; do
  until curl -sf "http://127.0.0.1:$port/echo/ping" > /dev/null; do sleep 0.2; done
  wrk -t2 -c50 -d2s "http://127.0.0.1:$port/echo/hello" > /dev/null
done

names=(before after bare-axum)
for round in 1 2 3; do
  for i in 0 1 2; do
    wrk -t2 -c50 -d"${secs}s" --latency "http://127.0.0.1:1849$i/echo/hello" \
      > "$data/${names[$i]}.$round.txt"
  done
done

median() { sort -g | sed -n 2p; }
for name in "${names[@]}"; do
  rps=$(for round in 1 2 3; do awk '/^Requests\/sec:/ {print $2}' "$data/$name.$round.txt"; done | median)
  p99=$(for round in 1 2 3; do awk '$1 == "99%" {print $2}' "$data/$name.$round.txt"; done | median)
  printf '%-10s %12s req/s   p99 %8s   (median of 3 runs of %ss)\n' "$name" "$rps" "$p99" "$secs"
  echo "$rps" > "$data/$name.rps"
done
ratio() { awk -v a="$(cat "$data/$1.rps")" -v b="$(cat "$data/$2.rps")" 'BEGIN { printf "%.2f", a / b }'; }
echo "before / bare axum = $(ratio before bare-axum)   after / bare axum = $(ratio after bare-axum)   after / before = $(ratio after before)"
