#!/usr/bin/env bash
# Fuzzes the targets one after another (one job: the machine is shared), SECONDS each
# (default 600; TARGET:SECONDS for one target), under `nice -n 19`, then minimises each
# corpus (`cargo fuzz cmin`), with the target's dictionary fuzz/dict/<target>.dict if there is
# one (fuzz/dict.py); logs in fuzz/target/logs/<target>.log, crashes in
# fuzz/artifacts/<target>/. Fork mode goes on after a crash, so one run finds several.
#   bash fuzz/run.sh [SECONDS] [TARGET[:SECONDS]...]
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(workflow expression exchange flood_config kernel_argv profile)
mkdir -p fuzz/target/logs
# A read hanging inside HDF5 (exchange) is ended by the exchange layer's own watchdog after
# this many seconds (default 600 in the kernels): libFuzzer's -timeout did not always stop it.
export TWIN_KERNEL_IO_TIMEOUT=${TWIN_KERNEL_IO_TIMEOUT:-20}
cargo +nightly fuzz build -s none -a
# Fork mode (the default) goes on after a crash; FUZZ_FORK=0 runs one process, which stops
# at the first crash but searches the whole corpus at once (new-edges.sh found it much faster
# at finding new edges late in a target's life).
mode=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
[ "${FUZZ_FORK:-1}" = 0 ] && mode=()
clock() {
    perl -MTime::HiRes=time -ne 'BEGIN { $| = 1; $t0 = time }
        if (/^#\d+\s+\w+\s+cov:/ && !/ time: /) { chomp; printf "%s time: %ds\n", $_, time - $t0 }
        else { print }'
}
for spec in "${targets[@]}"; do
    t=${spec%%:*}
    secs=$seconds
    [ "$spec" = "$t" ] || secs=${spec#*:}
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    dict=()
    [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
    echo "$(date -u +%H:%M:%S) fuzzing $t for $secs s"
    # One-process status lines carry no clock: `clock` appends the seconds since the start
    # (" time: Ns", as fork mode prints), so fuzz/stats.sh reads both kinds of log.
    nice -n 19 cargo +nightly fuzz run -s none -a "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
        "${mode[@]}" \
        -artifact_prefix="fuzz/artifacts/$t/" "${dict[@]}" 2>&1 | clock > "fuzz/target/logs/$t.log" || true
    grep -E '^#[0-9]+' "fuzz/target/logs/$t.log" | tail -1
    nice -n 19 cargo +nightly fuzz cmin -s none -a "$t" "fuzz/corpus/$t" > "fuzz/target/logs/$t.cmin.log" 2>&1 || true
    echo "$(date -u +%H:%M:%S) $t: corpus $(ls "fuzz/corpus/$t" | wc -l) files, $(du -sh "fuzz/corpus/$t" | cut -f1)"
done
