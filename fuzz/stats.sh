#!/usr/bin/env bash
# One row per target of docs/fuzzing.md's table from the logs of fuzz/run.sh: the last
# libFuzzer status line (executions, cov, ft, crashes) and the committed corpus.
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
    files=$(find "fuzz/corpus/$t" -type f | wc -l)
    size=$(( $(du -sb "fuzz/corpus/$t" | cut -f1) / 1024 ))
    echo "| \`$t\` | $time | $execs | $cov | $ft | $files files, $size KiB | $oct |"
done
