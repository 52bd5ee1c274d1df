#!/usr/bin/env bash
# Ouli's load bench, side by side with a minimal hyper server.
#
#   benches/load.sh            # the full run (~20 min after the builds), writes benches/BENCHMARKS.md
#   benches/load.sh --smoke    # ~1 s per figure: checks that everything works
#   benches/load.sh --only h1-64,h2 --seconds 5   # a subset (printed, not written)
#
# Its tools are installed here when missing: wrk and h2load from Debian
# (apt-get install wrk nghttp2-client, as root) and oha from crates.io
# (cargo install oha --locked, about 3 minutes once). Everything else is
# built here: Ouli in release for each runtime (tokio, smol, async-std),
# and ouli-bench (benches/load/), which starts the hyper server, the
# WebSocket echo server and Ouli, drives the load generators, and prints
# the table.
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
BIN_DIR="$TARGET/load-bench-bin"
mkdir -p "$BIN_DIR"

smoke=0
for arg in "$@"; do
    [ "$arg" = "--smoke" ] && smoke=1
done

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$PATH:$cargo_bin"
have() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
    if [ "$(id -u)" = 0 ] && have apt-get; then
        echo "load.sh: apt-get install -y $*" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null 2>&1 ||
            { apt-get update >/dev/null 2>&1 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null 2>&1; } ||
            true
    fi
}
have wrk || apt_install wrk
have h2load || apt_install nghttp2-client
if ! have oha; then
    echo "load.sh: cargo install oha --locked (into $cargo_bin)" >&2
    cargo install oha --locked --root "${CARGO_HOME:-$HOME/.cargo}" || true
fi
for tool in wrk h2load oha; do
    have "$tool" || {
        echo "load.sh: $tool is missing and could not be installed" \
            "(apt-get install -y wrk nghttp2-client; cargo install oha --locked)" >&2
        exit 1
    }
done
OHA="$(command -v oha)"

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
