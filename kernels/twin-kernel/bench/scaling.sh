#!/usr/bin/env bash
# Parallel efficiency of the flood kernel from 1 to N MPI ranks (MPICH), on the synthetic
# valley. Builds the release binary with `--features mpi`, runs the same problem on 1..N
# ranks and reports the stepping throughput (halo exchange and reductions included, I/O
# excluded) and the efficiency E(n) = T(1) / (n · T(n)).
#
# Usage: kernels/twin-kernel/bench/scaling.sh [MAX_RANKS=2]
# Env:   NX, NY (default 2048), END_TIME (default 3 s ≈ 20 steps), CARGO_TARGET_DIR.
set -euo pipefail

max_ranks=${1:-2}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-kernels}
nx=${NX:-2048}
ny=${NY:-2048}
end_time=${END_TIME:-3}

cargo build --release --quiet -p twinflow-kernels --features mpi --manifest-path "$root/Cargo.toml"
bin=$CARGO_TARGET_DIR/release/twin-kernel
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin" terrain --out dem.nc --nx "$nx" --ny "$ny" --dx 5 --config-out flood.json 2>/dev/null

echo "flood scaling: ${nx}×${ny} cells, end time ${end_time} s, MPICH, $(nproc) cores"
t1=""
for ((n = 1; n <= max_ranks; n++)); do
    log=$work/run$n.log
    mpiexec -n "$n" "$bin" flood --dem dem.nc --config flood.json --out "r$n.nc" \
        --end-time "$end_time" --output-interval "$end_time" --gauge-interval "$end_time" --deflate 0 \
        2>"$log"
    # Every rank must report itself, or the launcher ran n separate 1-rank jobs.
    for ((r = 0; r < n; r++)); do
        grep -q "rank $r of $n" "$log" || { echo "rank $r of $n missing: launcher/MPI mismatch" >&2; exit 1; }
    done
    secs=$(grep -o 'step_seconds=[0-9.e+-]*' "$log" | head -1 | cut -d= -f2)
    rate=$(grep -o 'updates_per_second=[0-9.e+-]*' "$log" | head -1 | cut -d= -f2)
    [[ -n $t1 ]] || t1=$secs
    awk -v n="$n" -v s="$secs" -v r="$rate" -v t1="$t1" 'BEGIN {
        printf "ranks %d: stepping %.3f s, %.1f M cell-updates/s (%.1f M/s per rank), efficiency %.1f %%\n",
            n, s, r / 1e6, r / 1e6 / n, 100 * t1 / (n * s) }'
done
