#!/usr/bin/env bash
# LETKF throughput of `twin-kernel assimilate` from 1 to N MPI ranks (MPICH) and the parallel
# efficiency, on a flood-twin-sized ensemble: MEMBERS flood members of the synthetic valley
# (200 × 100 cells of 10 m by default), each with its own Manning n and inflow scale, advanced
# one 10-minute cycle and saved with `--state-out` (h, hu, hv and the two parameters, as a
# cycling twin's members are); a truth run with parameters no member has, read at 8 gauges on
# the valley floor (CSV observations, 5 cm errors); the LETKF analysis of h, hu, hv, Manning n
# and inflow scale with the flood twin's constraints. Reports the local analyses per second
# (one per grid cell, one for the parameters), the analysis time (slowest rank, best of
# REPEATS runs; reading and writing files excluded) and the efficiency E(n) = T(1) / (n · T(n)),
# and checks that the analysis members are the same bit for bit on every rank count.
#
# Usage: kernels/twin-kernel/bench/assim-scaling.sh [MAX_RANKS=2]
# Env:   NX, NY (default 200, 100), MEMBERS (16), END_TIME (600 s), RADIUS (Gaspari-Cohn
#        half-width, 300 m), REPEATS (3), CARGO_TARGET_DIR.
set -euo pipefail

max_ranks=${1:-2}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-kernels}
nx=${NX:-200}
ny=${NY:-100}
members=${MEMBERS:-16}
end_time=${END_TIME:-600}
radius=${RADIUS:-300}
repeats=${REPEATS:-3}
dx=10

cargo build --release --quiet -p twinflow-kernels --features mpi --manifest-path "$root/Cargo.toml"
bin=$CARGO_TARGET_DIR/release/twin-kernel
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin" terrain --out dem.nc --nx "$nx" --ny "$ny" --dx "$dx" --inflow-peak 800 --end-time 3600 \
    --config-out flood.json 2>/dev/null

# One flood member advanced to END_TIME, its final state and parameters kept.
member() { # name manning_n inflow_scale
    "$bin" flood --dem dem.nc --config flood.json --out "run_$1.nc" --end-time "$end_time" \
        --output-interval "$end_time" --gauge-interval "$end_time" --manning-n "$2" --inflow-scale "$3" \
        --state-out "$1.nc" --deflate 0 2>/dev/null
    rm -f "run_$1.nc" "run_$1_gauges.nc"
}
cores=$(nproc)
for ((m = 0; m < members; m++)); do
    # Manning n 0.020-0.050 and inflow scales 0.5-1.5 over the members.
    member "$(printf 'm%02d' "$m")" "$(awk -v m="$m" -v k="$members" 'BEGIN { print 0.02 + 0.03 * m / k }')" \
        "$(awk -v m="$m" -v k="$members" 'BEGIN { print 0.5 + m / k }')" &
    if (((m + 1) % cores == 0)); then wait; fi
done
member truth 0.033 1.2 &
wait
(($(ls m*.nc | wc -l) == members)) && [[ -f truth.nc ]] || { echo "a flood member failed" >&2; exit 1; }

# Gauges at cell centres on the valley floor, observing h by bilinear interpolation.
j=$((ny / 2))
{
    echo "station,time,x,y,value,error_std"
    for f in 0.1 0.2 0.35 0.45 0.55 0.65 0.75 0.85; do
        i=$(awk -v f="$f" -v n="$nx" 'BEGIN { printf "%d", f * n }')
        h=$(h5dump -d h -s "$j,$i" -c 1,1 truth.nc | grep -m1 -oE "\($j,$i\): [^ ]+" | cut -d' ' -f2)
        echo "g$i,$end_time,$((i * dx + dx / 2)),$((j * dx + dx / 2)),$h,0.05"
    done
} | awk -F, -v OFS=, 'BEGIN { srand(7) } NR > 1 {
        # Gauge error: N(0, 0.05²) by Box-Muller, depths kept non-negative.
        e = 0.05 * sqrt(-2 * log(1 - rand())) * cos(6.283185307179586 * rand())
        $5 = ($5 + e > 0) ? $5 + e : 0 } { print }' >gauges.csv

echo "LETKF scaling: ${nx}×${ny} cells × (h, hu, hv) + 2 parameters, $members members, $(($(wc -l <gauges.csv) - 1)) gauges," \
    "Gaspari-Cohn half-width $radius m, MPICH, $cores cores, best of $repeats"
t1=""
for ((n = 1; n <= max_ranks; n++)); do
    best=""
    for ((r = 0; r < repeats; r++)); do
        log=$work/assim$n.log
        rm -rf "out$n"
        mpiexec -n "$n" "$bin" assimilate --members m*.nc --variables h,hu,hv \
            --parameters manning_n,inflow_scale --obs gauges.csv --operator bilinear --observed-variable h \
            --method letkf --radius "$radius" --rtps 0.5 --non-negative h --zero-where-below hu:h:1e-6 \
            --zero-where-below hv:h:1e-6 --clip manning_n:0.01:0.1 --clip inflow_scale:0.1:5 \
            --out "out$n" 2>"$log"
        # Every rank must report itself, or the launcher ran n separate 1-rank jobs.
        for ((k = 0; k < n; k++)); do
            grep -q "rank $k of $n" "$log" || { echo "rank $k of $n missing: launcher/MPI mismatch" >&2; exit 1; }
        done
        secs=$(grep -o 'analysis_seconds=[0-9.e+-]*' "$log" | head -1 | cut -d= -f2)
        best=$(awk -v a="$secs" -v b="$best" 'BEGIN { print (b == "" || a < b) ? a : b }')
    done
    domains=$(grep -o 'local_analyses=[0-9]*' "$log" | head -1 | cut -d= -f2)
    [[ -n $t1 ]] || t1=$best
    # The analysis members in data (raw bytes), without attributes or history.
    for f in "out$n"/m*.nc; do
        for v in h hu hv manning_n inflow_scale; do
            h5dump -d "$v" -b LE -o "$work/dump.bin" "$f" >/dev/null
            cat "$work/dump.bin"
        done
    done >"data$n.bin"
    same="reference"
    if ((n > 1)); then
        if cmp -s data1.bin "data$n.bin"; then same="identical to 1 rank"; else same="DIFFERENT from 1 rank"; fi
    fi
    awk -v n="$n" -v s="$best" -v d="$domains" -v t1="$t1" -v same="$same" 'BEGIN {
        printf "ranks %d: analysis %.3f s, %d local analyses, %.0f local analyses/s (%.0f per rank), efficiency %.1f %%, data %s\n",
            n, s, d, d / s, d / s / n, 100 * t1 / (n * s), same }'
    [[ $same != DIFFERENT* ]] || exit 1
done
grep -o 'rmse_obs_[a-z]*=[0-9.e+-]*' "$work/assim1.log" | head -2 | tr '=' ' ' |
    awk '{ v[NR] = $2 } END { printf "gauge RMSE of the ensemble mean: forecast %.3f m, analysis %.3f m\n", v[1], v[2] }'

