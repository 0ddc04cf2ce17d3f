#!/usr/bin/env bash
# Builds everything the demo needs and runs two cells with ext-demo loaded:
# `greeter` (demo.greet + demo.ticker events) and `hello` (demo.greet). Ctrl-C stops.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip1
cargo build --workspace
cargo build --release --target wasm32-wasip1 --manifest-path testdata/Cargo.toml --target-dir testdata/target
exec ./target/debug/pulp \
  --ext-dir target/debug --ext-config demo/extensions.toml \
  -manifest testdata/greeter/pulp.cell.toml \
  -manifest testdata/hello/pulp.cell.toml \
  --storage-root target/demo-data "$@"
