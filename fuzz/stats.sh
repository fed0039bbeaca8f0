#!/usr/bin/env bash
# One row per target of docs/fuzzing.md's table from the logs of fuzz/run.sh: the last
# libFuzzer status line (executions, cov, ft, crashes) and the committed corpus; cov is
# shown at half, three quarters and the end of the run's time. Then, per target, the new
# edges a second in each sixth of the run: how flat its end was. Reads fork-mode logs and
# one-process ones (FUZZ_FORK=0, whose status lines run.sh stamps with the same " time: Ns").
cd "$(dirname "$0")/.."
rates=()
for log in fuzz/target/logs/*.log; do
    [[ $log == *.cmin.log || $log == *.coverage.log ]] && continue
    t=$(basename "$log" .log)
    status='^#[0-9]+(:|[[:space:]]+[A-Z]+)[[:space:]]+cov:'
    last=$(grep -E "$status" "$log" | grep ' time: ' | tail -1)
    execs=$(sed -E 's/^#([0-9]+).*/\1/' <<<"$last")
    cov=$(grep -Eo 'cov: [0-9]+' <<<"$last" | cut -d' ' -f2)
    ft=$(grep -Eo 'ft: [0-9]+' <<<"$last" | cut -d' ' -f2)
    time=$(grep -Eo 'time: [0-9]+s' <<<"$last" | cut -d' ' -f2)
    oct=$(grep -Eo 'oom/timeout/crash: [0-9/]+' <<<"$last" | cut -d' ' -f2)
    # One process stops at its first crash, timeout or OOM (the input is in fuzz/artifacts/).
    [ -n "$oct" ] || oct="one process: $(grep -cE '^==[0-9]+== ERROR: libFuzzer' "$log") crash"
    # "TIME COV" for every status line of the run.
    series=$(grep -E "$status" "$log" | grep ' time: ' |
        awk '{for(i=1;i<NF;i++){if($i=="cov:")c=$(i+1); if($i=="time:")t=$(i+1)+0}; print t, c}')
    secs=${time%s}
    at() { awk -v lim="$1" '$1 <= lim {v=$2} END{print v}' <<<"$series"; }
    half=$(at $((secs / 2)))
    late=$(at $((secs * 3 / 4)))
    files=$(find "fuzz/corpus/$t" -type f | wc -l)
    size=$(( $(du -sb "fuzz/corpus/$t" | cut -f1) / 1024 ))
    echo "| \`$t\` | $time | $execs | $half → $late → $cov | $ft | $files files, $size KiB | $oct |"
    rates+=("$t: new edges a second by sixths of the run: $(awk '
        NR == 1 {first = $2} {tm[NR] = $1; cov[NR] = $2; n = NR}
        END {prev = first; pt = 0
             for (k = 1; k <= 6; k++) {
                 v = prev; vt = pt
                 for (j = 1; j <= n; j++) if (tm[j] <= tm[n] * k / 6) {v = cov[j]; vt = tm[j]}
                 printf "%.2f ", (v - prev) / (vt > pt ? vt - pt : 1); prev = v; pt = vt }}' <<<"$series")")
done
echo
printf '%s\n' "${rates[@]}"
