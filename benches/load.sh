#!/usr/bin/env bash
# Ouli's load bench, side by side with a minimal hyper server.
#
#   benches/load.sh            # the full run (~12 min), writes benches/BENCHMARKS.md
#   benches/load.sh --smoke    # ~1 s per figure: checks that everything works
#   benches/load.sh --only h1-64,h2 --seconds 5   # a subset (printed, not written)
#
# Needs wrk and h2load (Debian: apt-get install -y wrk nghttp2-client) and
# oha (cargo install oha --locked); without oha the fixed-rate latency row
# reports the error. Everything else is built here: Ouli in release for
# each runtime (tokio, smol, async-std), and ouli-bench (benches/load/),
# which starts the hyper server, the WebSocket echo server and Ouli,
# drives the load generators, and prints the table.
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
BIN_DIR="$TARGET/load-bench-bin"
mkdir -p "$BIN_DIR"

smoke=0
for arg in "$@"; do
    [ "$arg" = "--smoke" ] && smoke=1
done

for tool in wrk h2load; do
    command -v "$tool" >/dev/null || {
        echo "load.sh: $tool not found (apt-get install -y wrk nghttp2-client)" >&2
        exit 1
    }
done
OHA="$(command -v oha || echo "$HOME/.cargo/bin/oha")"

# One release build per runtime; each overwrites target/release/ouli, so
# keep a copy of each.
for rt in tokio smol async-std; do
    echo "load.sh: cargo build --release -p ouli --no-default-features --features $rt" >&2
    cargo build --release --quiet -p ouli --no-default-features --features "$rt"
    cp "$TARGET/release/ouli" "$BIN_DIR/ouli-$rt"
done
echo "load.sh: cargo build --release -p ouli-benches --bin ouli-bench" >&2
cargo build --release --quiet -p ouli-benches --bin ouli-bench

# 4,096 connections on each side, plus the servers' own descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

out=()
if [ "$smoke" = 0 ] && [[ " $* " != *" --only "* ]] && [[ " $* " != *" --out "* ]]; then
    out=(--out benches/BENCHMARKS.md)
fi
exec "$TARGET/release/ouli-bench" run \
    --ouli "tokio=$BIN_DIR/ouli-tokio" \
    --ouli "smol=$BIN_DIR/ouli-smol" \
    --ouli "async-std=$BIN_DIR/ouli-async-std" \
    --oha "$OHA" \
    "${out[@]}" "$@"
