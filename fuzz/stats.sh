#!/usr/bin/env bash
# One row per target of docs/fuzzing.md's table from the logs of fuzz/run.sh: the last
# libFuzzer status line (executions, cov, ft, crashes) and the committed corpus; cov is
# shown at half, three quarters and the end of the run's time, with the time at which the
# last new edge was found (how flat the end of the run was).
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
    # The first status line that shows the final cov: when the last new edge was found.
    last_new=$(grep -E '^#[0-9]+: cov:' "$log" | awk -v c="$cov" '{for(i=1;i<NF;i++){if($i=="cov:")v=$(i+1); if($i=="time:")t=$(i+1)}; if(v==c){print t+0; exit}}')
    files=$(find "fuzz/corpus/$t" -type f | wc -l)
    size=$(( $(du -sb "fuzz/corpus/$t" | cut -f1) / 1024 ))
    echo "| \`$t\` | $time | $execs | $half → $late → $cov (last new edge at ${last_new}s) | $ft | $files files, $size KiB | $oct |"
done
# How fast each run still found edges: new edges per second in each sixth of its time.
echo
for log in fuzz/target/logs/*.log; do
    [[ $log == *.cmin.log ]] && continue
    echo "$(basename "$log" .log): new edges a second by sixths of the run:" $(grep -E '^#[0-9]+: cov:' "$log" | awk '
        {for(i=1;i<NF;i++){if($i=="cov:")c=$(i+1); if($i=="time:")t=$(i+1)+0}; if(NR==1)first=c; cov[NR]=c; tm[NR]=t; n=NR}
        END{prev=first; pt=0; for(k=1;k<=6;k++){lim=tm[n]*k/6; v=prev; for(j=1;j<=n;j++) if(tm[j]<=lim){v=cov[j]; vt=tm[j]}; printf "%.2f ", (v-prev)/(vt-pt>0?vt-pt:1); prev=v; pt=vt}}')
done
