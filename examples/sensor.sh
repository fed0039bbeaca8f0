#!/bin/sh
# A stand-in for a river gauge: writes one reading every GAP seconds into DIR as
# obs-0.txt, obs-1.txt, ... (each in two parts, 0.3 s apart, as a logger flushing a file),
# N readings in all. Used with examples/live-sensor.yaml:
#   sh examples/sensor.sh examples/obs 6 2 &  twinflow run examples/live-sensor.yaml
set -eu
dir=${1:?usage: sensor.sh DIR [N] [GAP]}
n=${2:-6}
gap=${3:-2}
mkdir -p "$dir"
k=0
while [ "$k" -lt "$n" ]; do
    sleep "$gap"
    printf 'reading %s part1\n' "$k" > "$dir/obs-$k.txt"
    sleep 0.3
    printf 'reading %s part2\n' "$k" >> "$dir/obs-$k.txt"
    k=$((k + 1))
done
