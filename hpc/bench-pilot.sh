#!/usr/bin/env bash
# Tiny-task throughput inside one SLURM allocation, and the controller RPCs it costs:
# pilot workers against the local backend on the same CPUs (the baseline, measured in the
# same run), against `srun` per task (allocation mode without `pilot:`), and against job
# arrays (`--arrays`). Needs the test cluster (`bash hpc/slurm-local.sh start`) and a built
# `twinflow` (TWINFLOW=path, default target/release/twinflow, else target/debug/twinflow).
#
#   bash hpc/bench-pilot.sh                 # 1000 tasks, 8 CPUs, every mode
#   TASKS="1000 10000" MODES="local pilot" bash hpc/bench-pilot.sh
#   TASKS=1000 MODES="srun arrays" CPUS=4 bash hpc/bench-pilot.sh
#   # on the multi-node cluster (hpc/README.md): pilot workers on 1 node against 4 nodes,
#   # CPUS in total either way (CPUS/N per node), and a 4-node allocation of 4 x CPUS
#   SLURM_LOCAL_DIR=/tmp/twinflow-slurm-nodes NODES="1 4" WIDE=1 MODES="local pilot" bash hpc/bench-pilot.sh
#
# NODES (default: unset, one node): the pilot runs, one per node count N, in an allocation
# of N nodes with CPUS/N CPUs each (`--ntasks-per-node`), labelled pilot/Nn; WIDE=1 adds
# pilot/Nn×: N nodes with CPUS each (the nodes must have that many). The cluster is the one
# of SLURM_LOCAL_DIR (hpc/slurm-local.sh env).
#
# Prints one line per (mode, tasks): the run's own time (from its `run-finished` event: the
# tasks inside the allocation, without waiting for the allocation), the wall time of the
# whole `twinflow run` (allocation included), tasks per second of the run's own time, its
# ratio to the local baseline of the same size, and the RPCs the controller served during
# the run (`sdiag`, reset before each run once the previous run's jobs have left the queue
# and SETTLE seconds, default 3, have passed; `-` for the local backend, which does not talk
# to SLURM), and the engine's peak resident memory (GNU time's maximum RSS of `twinflow
# run`; `-` without /usr/bin/time). Pilot's RPC count must not grow with the number of
# tasks; srun-per-task's does.
#
#   TASKS=100000 MODES="local pilot" bash hpc/bench-pilot.sh   # beyond MaxStepCount (40000)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
TASKS=${TASKS:-1000}
MODES=${MODES:-local pilot srun arrays}
CPUS=${CPUS:-8}
WORK=${WORK:-$(mktemp -d /tmp/twinflow-bench-pilot.XXXXXX)}
if [ -z "${TWINFLOW:-}" ]; then
    if [ -x "$root/target/release/twinflow" ]; then TWINFLOW=$root/target/release/twinflow
    else TWINFLOW=$root/target/debug/twinflow; fi
fi
[ -x "$TWINFLOW" ] || { echo "bench-pilot: no twinflow at $TWINFLOW (cargo build -p twinflow-cli)" >&2; exit 3; }
eval "$(bash "$here/slurm-local.sh" env)"
squeue >/dev/null 2>&1 || { echo "bench-pilot: the SLURM test cluster is not running (bash hpc/slurm-local.sh start)" >&2; exit 3; }

cp "$root/hpc/profiles/local.yaml" "$WORK/srun.yaml"
# Array members are submitted as fast as the controller takes them.
sed -e 's/max_jobs: 500/max_jobs: 100000/' -e 's/submit_rate: 50/submit_rate: 100000/' \
    "$root/hpc/profiles/local.yaml" > "$WORK/arrays.yaml"
# Workers reach the engine at the controller's address (127.0.0.1 on the one-node cluster,
# the bridge's on the multi-node one).
ctl=$(sed -n 's/^SlurmctldHost=[^(]*(\(.*\))$/\1/p' "$SLURM_CONF" | head -1)
{ cat "$root/hpc/profiles/local.yaml"; printf '\npilot:\n  address: %s\n  heartbeat: 10s\n' "${ctl:-127.0.0.1}"; } > "$WORK/pilot.yaml"

# Total RPCs served since the last reset: the sum of the per-message-type counts.
rpcs() {
    sdiag | awk '/Remote Procedure Call statistics by message type/ {on=1; next}
                 /Remote Procedure Call statistics by user/ {on=0}
                 on && /count:/ { for (i=1;i<=NF;i++) if ($i ~ /^count:/) { sub("count:","",$i); n+=$i } }
                 END { print n+0 }'
}

# pilot runs: "LABEL NODES CPUS" each
pilots=()
if [ -z "${NODES:-}" ]; then
    pilots=("pilot 0 $CPUS")
else
    for k in $NODES; do
        [ $((CPUS % k)) = 0 ] || { echo "bench-pilot: CPUS=$CPUS is not a multiple of $k nodes" >&2; exit 2; }
        pilots+=("pilot/${k}n $k $CPUS")
        [ "${WIDE:-0}" = 1 ] && [ "$k" != 1 ] && pilots+=("pilot/${k}nx $k $((CPUS * k))")
    done
fi
pilot_profile() { # NODES CPUS -> profile path
    local f="$WORK/pilot-$1-$2.yaml"
    cp "$WORK/pilot.yaml" "$f"
    [ "$1" = 0 ] || printf 'sbatch_flags: ["--ntasks-per-node=%d"]\n' $(($2 / $1)) >> "$f"
    echo "$f"
}

printf '%-10s %6s %5s %8s %8s %9s %9s %8s %9s\n' mode tasks cpus run-s wall-s tasks/s vs-local rpcs peak-MiB
for n in $TASKS; do
    wf="$WORK/tiny-$n.yaml"
    cat > "$wf" <<EOF
name: tiny
steps:
  t:
    scatter:
      over: { i: "\${{ range(0, $n) }}" }
    run: ["true"]
EOF
    base=""
    declare -A rate_of=()
    runs=()
    for mode in $MODES; do
        if [ "$mode" = pilot ]; then runs+=("${pilots[@]}"); else runs+=("$mode 0 $CPUS"); fi
    done
    for r in "${runs[@]}"; do
        read -r mode nodes cpus <<< "$r"
        dir="$WORK/${mode//\//-}-$n"
        mkdir -p "$dir"
        case $mode in
            local) args=(--cores "$CPUS") ;;
            pilot*) args=(--backend slurm --profile "$(pilot_profile "$nodes" "$cpus")" --allocation --alloc-cpus "$cpus")
                    [ "$nodes" = 0 ] || args+=(--alloc-nodes "$nodes") ;;
            srun) args=(--backend slurm --profile "$WORK/srun.yaml" --allocation --alloc-cpus "$CPUS") ;;
            arrays) args=(--backend slurm --profile "$WORK/arrays.yaml" --arrays) ;;
            *) echo "bench-pilot: unknown mode $mode (local pilot srun arrays)" >&2; exit 2 ;;
        esac
        # The previous run's jobs must be gone and their last messages (epilogs, job
        # completions) in, or they count against this run.
        for _ in $(seq 1 300); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
        sleep "${SETTLE:-3}"
        sdiag --reset >/dev/null
        t0=$(date +%s.%N)
        timer=()
        [ -x /usr/bin/time ] && timer=(/usr/bin/time -f %M -o "$dir/maxrss-kib")
        if ! (cd "$dir" && "${timer[@]}" "$TWINFLOW" run "$wf" --runs-dir runs --no-cache --json "${args[@]}" > run.jsonl 2> run.log); then
            echo "bench-pilot: $mode with $n tasks failed; see $dir/run.log and run.jsonl" >&2
            exit 1
        fi
        t1=$(date +%s.%N)
        calls=$(rpcs)
        [ "$mode" = local ] && calls=-
        wall=$(echo "$t1 - $t0" | bc -l)
        secs=$(grep '"event":"run-finished"' "$dir/run.jsonl" | grep -o '"seconds":[0-9.e+-]*' | cut -d: -f2)
        [ -n "$secs" ] || { echo "bench-pilot: no run-finished event in $dir/run.jsonl" >&2; exit 1; }
        rate=$(echo "$n / $secs" | bc -l)
        [ "$mode" = local ] && base=$rate
        ratio=-
        [ -n "$base" ] && ratio=$(printf '%.2fx' "$(echo "$rate / $base" | bc -l)")
        peak=-
        [ -s "$dir/maxrss-kib" ] && peak=$(( $(tail -n1 "$dir/maxrss-kib") / 1024 ))
        printf '%-10s %6d %5d %8.2f %8.2f %9.1f %9s %8s %9s\n' "$mode" "$n" "$cpus" "$secs" "$wall" "$rate" "$ratio" "$calls" "$peak"
        rate_of[$mode]=$rate
    done
    for m in "${!rate_of[@]}"; do
        case $m in pilot/1n) ;; pilot/*)
            [ -n "${rate_of[pilot/1n]:-}" ] && printf '%s against pilot/1n, %d tasks: %.2fx\n' "$m" "$n" "$(echo "${rate_of[$m]} / ${rate_of[pilot/1n]}" | bc -l)" ;;
        esac
    done
done
echo "(work directory: $WORK)"
