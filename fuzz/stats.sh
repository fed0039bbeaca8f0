#!/usr/bin/env bash
# One row per target of docs/fuzzing.md's table from the logs of fuzz/run.sh: the last
# libFuzzer status line (executions, cov, ft, crashes) and the committed corpus; cov is
# shown at half, three quarters and the end of the run's time.
cd "$(dirname "$0")/.."
for log in fuzz/target/logs/*.log; do
    [[ $log == *.cmin.log ]] && continue
    t=$(basename "$log" .log)
    last=$(grep -E '^#[0-9]+: cov:' "$log" | tail -1)
    execs=$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$last")
    cov=$(grep -Eo 'cov: [0-9]+' <<<"$last" | cut -d' ' -f2)
    ft=$(grep -Eo 'ft: [0-9]+' <<<"$last" | cut -d' ' -f2)
    time=$(grep -Eo 'time: [0-9]+s' <<<"$last" | cut -d' ' -f2)
    oct=$(grep -Eo 'oom/timeout/crash: [0-9/]+' <<<"$last" | cut -d' ' -f2)
    # Coverage at half and at three quarters of the run's time: how flat its end was.
    secs=${time%s}
    at() { grep -E '^#[0-9]+: cov:' "$log" | awk -v lim="$1" '{for(i=1;i<NF;i++){if($i=="cov:")c=$(i+1); if($i=="time:")t=$(i+1)+0}; if(t<=lim)v=c} END{print v}'; }
    half=$(at $((secs / 2)))
    late=$(at $((secs * 3 / 4)))
    files=$(find "fuzz/corpus/$t" -type f | wc -l)
    size=$(( $(du -sb "fuzz/corpus/$t" | cut -f1) / 1024 ))
    echo "| \`$t\` | $time | $execs | $half → $late → $cov | $ft | $files files, $size KiB | $oct |"
done
