#!/usr/bin/env bash
# Graceful shutdown of a built `ouli` binary on SIGTERM and SIGINT, and a
# second signal forcing the exit: run by .ci/run right after it builds the
# binary for each runtime (tokio, smol, async-std), so every runtime's signal
# handling is exercised by the real binary. Usage: tests/signals.sh BINARY
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sed 's/source_port = 8080/source_port = 0/' examples/ouli.toml > "$work/ouli.toml"

start() {
    "$bin" replay --config "$work/ouli.toml" --recording-dir examples/recordings \
        > "$work/out" 2> "$work/err" &
    pid=$!
    for _ in $(seq 100); do
        addr=$(sed -n 's|^ouli: replaying on http://\([^ ]*\) .*|\1|p' "$work/out")
        [ -n "$addr" ] && return 0
        sleep 0.1
    done
    echo "signals.sh: $bin printed no listening line" >&2
    cat "$work/err" >&2
    exit 1
}

for sig in TERM INT; do
    start
    curl -s -o /dev/null -w '%{http_code}' "http://$addr/v1/models" | grep -q 200
    kill -s "$sig" "$pid"
    status=0
    wait "$pid" || status=$?
    if [ "$status" != 0 ] || ! grep -q 'replayed: 1, missed: 0' "$work/out"; then
        echo "signals.sh: $bin on SIG$sig exited $status; stdout:" >&2
        cat "$work/out" "$work/err" >&2
        exit 1
    fi
done

# A second signal while a slow client holds a request open forces the exit.
start
exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}"
printf 'GET /v1/models HTTP/1.1\r\nHost: x\r\n' >&3   # an unfinished request head
sleep 0.2
kill -s TERM "$pid"
sleep 0.3
kill -s TERM "$pid"
status=0
wait "$pid" || status=$?
exec 3>&-
if [ "$status" != 130 ]; then
    echo "signals.sh: $bin did not force-exit (130) on a second signal: $status" >&2
    cat "$work/out" "$work/err" >&2
    exit 1
fi
echo "signals.sh: $bin: SIGTERM, SIGINT and a forcing second signal behave"
