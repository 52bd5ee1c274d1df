#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each and fails on
# any crash, timeout or out-of-memory.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# OULI_FUZZ_RUNS=N also stops each target after N executions, whichever of
# the two comes first (the long runs: `OULI_FUZZ_RUNS=10000000 fuzz/run.sh 1800`).
#
# * With a nightly toolchain: the default cargo-fuzz build (AddressSanitizer).
# * Without one (or with OULI_FUZZ_STABLE=1): stable, `cargo fuzz -s none`
#   (no sanitizer; safe Rust needs none), with RUSTC_BOOTSTRAP=1 if this
#   cargo-fuzz still asks for a nightly flag.
# * Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) if missing.
#
# libFuzzer works in fuzz/work/<target>/ (ignored by git), seeded from the
# committed fuzz/corpus/<target>/, which it only reads. Crash inputs land in
# fuzz/artifacts/<target>/; minimize one with
# `cargo fuzz tmin <target> <file>`, commit it as
# fuzz/corpus/<target>/crash-<what>, and add a regression test next to the
# code it breaks. Logs: fuzz/work/logs/<target>.log.
#
# Prints, per target, libFuzzer's executions and coverage (its final
# `#N DONE cov: X ft: Y` line).
set -euo pipefail

if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 2
fi
seconds=$1
shift

cd "$(dirname "$0")"
# cargo-fuzz builds into fuzz/target (its instrumented build cannot share
# the main workspace's target directory anyway).
unset CARGO_TARGET_DIR

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

fuzz=(cargo fuzz)
build_flags=()
if [[ -z ${OULI_FUZZ_STABLE:-} ]] && rustup run nightly rustc --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
    mode="nightly, address sanitizer"
else
    build_flags=(-s none)
    mode="stable, no sanitizer"
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <("${fuzz[@]}" list)
fi

echo "run.sh: building ${#targets[@]} targets ($mode)" >&2
build_start=$SECONDS
mkdir -p work/logs
build_log=work/logs/build.log
if ! "${fuzz[@]}" build "${build_flags[@]}" >"$build_log" 2>&1; then
    if [[ -z ${RUSTC_BOOTSTRAP:-} && ${#build_flags[@]} -gt 0 ]]; then
        # A stable build that wants a nightly flag after all.
        export RUSTC_BOOTSTRAP=1
        "${fuzz[@]}" build "${build_flags[@]}" >"$build_log" 2>&1 || {
            tail -n 40 "$build_log" >&2
            exit 1
        }
    else
        tail -n 40 "$build_log" >&2
        exit 1
    fi
fi
echo "run.sh: built in $((SECONDS - build_start)) s; fuzzing ${seconds} s per target" >&2

failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "corpus/$t" "artifacts/$t"
    log="work/logs/$t.log"
    status=0
    # The first corpus directory receives new inputs; corpus/<t> is only read.
    runs=()
    if [[ -n ${OULI_FUZZ_RUNS:-} ]]; then
        runs=(-runs="$OULI_FUZZ_RUNS")
    fi
    started=$SECONDS
    "${fuzz[@]}" run "${build_flags[@]}" "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" "${runs[@]}" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    elapsed=$((SECONDS - started))
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE ' "$log" | tail -n 1 || true)
    execs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -n 1 || true)
    if [[ -z $done_line ]]; then
        done_line=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -n 1 || true)
    fi
    if [[ $status -ne 0 ]] || grep -qE '^(==[0-9]+==ERROR|SUMMARY: libFuzzer|thread .* panicked)' "$log"; then
        failed+=("$t")
        summary+=("$(printf '%-18s CRASH (exit %s), see %s' "$t" "$status" "$log")")
        echo "---- $t failed; the end of $log:" >&2
        tail -n 30 "$log" >&2
    else
        summary+=("$(printf '%-18s execs %-10s %5s s  %s' "$t" "${execs:-?}" "$elapsed" "$done_line")")
    fi
    echo "${summary[-1]}"
done

echo
echo "run.sh: ${#targets[@]} targets, ${seconds} s each ($mode):"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "run.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
