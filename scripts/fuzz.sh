#!/usr/bin/env bash
# Fuzz every cargo-fuzz target in fuzz/ for SECONDS_PER_TARGET (default 15).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Installs cargo-fuzz if missing. cargo-fuzz passes nightly-only rustc flags
# (-Zsanitizer=address); on the stable toolchain RUSTC_BOOTSTRAP=1 lets
# rustc accept them. FUZZ_SANITIZER=none builds without AddressSanitizer
# (coverage-guided fuzzing still works).
#
# Each target runs with its seeds (fuzz/corpus/<target>/, kept small and in
# git) read-only; what libFuzzer finds goes to fuzz/target/corpus/<target>/
# so that later runs start from it. Exits non-zero if any target crashes,
# panics, times out or fails to build; the input is left in
# fuzz/artifacts/<target>/ (reproduce with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact>` in fuzz/).
# Prints one line per target with the runs executed.
set -euo pipefail

secs=${1:-15}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-address}

if command -v python3 >/dev/null; then
    python3 seeds/make_corpus.py
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "fuzz: building ${targets[*]} (sanitizer: $sanitizer)" >&2
cargo fuzz build --sanitizer "$sanitizer"

mkdir -p target/fuzz-logs
failed=()
for t in "${targets[@]}"; do
    work=target/corpus/$t
    log=target/fuzz-logs/$t.log
    mkdir -p "$work" "corpus/$t"
    if cargo fuzz run --sanitizer "$sanitizer" "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -1)
        cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
        corpus=$(find "$work" -type f | wc -l)
        echo "fuzz: $t ok: ${runs:-?} runs in ${secs}s (cov ${cov:-?}, corpus $corpus)"
    else
        echo "fuzz: $t FAILED (log $root/fuzz/$log, inputs in $root/fuzz/artifacts/$t/)"
        grep -E "panicked|ERROR|SUMMARY|Test unit written|Base64" "$log" | head -20 || true
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}"
    exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${secs}s each without a crash"
