#!/usr/bin/env bash
# The test command (README, and .ci/run calls it): everything a fresh clone
# needs is built or installed from here.
set -euo pipefail
cd "$(dirname "$0")/.."

# External HTTP/2 peers for tests/h2: curl, nghttp and h2load (Debian's
# nghttp2-client) and httpwg (crates.io's httpwg-cli, into $CARGO_HOME/bin,
# about 2 minutes to build once). Each one present is listed in
# OULI_REQUIRE_H2_TOOLS, and a test then fails if it cannot run it; one that
# cannot be installed here is left out, and its tests skip with a loud message.
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$PATH:$cargo_bin"
have() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
    if [ "$(id -u)" = 0 ] && have apt-get; then
        echo "tests/run.sh: apt-get install -y $*"
        DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null 2>&1 ||
            { apt-get update >/dev/null 2>&1 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null 2>&1; } ||
            true
    fi
}
have curl || apt_install curl
{ have nghttp && have h2load; } || apt_install nghttp2-client
if ! have httpwg; then
    echo "tests/run.sh: cargo install httpwg-cli --locked (into $cargo_bin)"
    cargo install httpwg-cli --locked --root "${CARGO_HOME:-$HOME/.cargo}" || true
fi
required=""
for tool in curl nghttp h2load httpwg; do
    if have "$tool"; then
        required="$required $tool"
    else
        echo "WARNING: tests/run.sh could not install $tool: its HTTP/2 tests will be SKIPPED" >&2
    fi
done
export OULI_REQUIRE_H2_TOOLS="${required# }"

cargo test --workspace

# A short fuzz pass on CI (fuzz/run.sh: every target for OULI_FUZZ_SECONDS,
# 15 by default, failing on any crash); elsewhere only with OULI_FUZZ=1. It
# builds the instrumented targets itself (about 5.5 minutes in all from a
# fresh clone) and installs cargo-fuzz first if missing (about 2 more).
if [ -n "${CI:-}" ] || [ -n "${OULI_FUZZ:-}" ]; then
    fuzz/run.sh "${OULI_FUZZ_SECONDS:-15}"
fi

# The load bench's smoke run (benches/load.sh --smoke: every figure for
# about 1 s, failing if one cannot be taken or a replay server misses),
# on CI and with OULI_BENCH_SMOKE=1. It builds Ouli in release for each
# runtime and installs wrk, h2load and oha if missing (about 8 minutes in
# all from a fresh clone); it checks that the bench works, not how fast.
if [ -n "${CI:-}" ] || [ -n "${OULI_BENCH_SMOKE:-}" ]; then
    benches/load.sh --smoke
fi
