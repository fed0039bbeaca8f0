#!/usr/bin/env bash
# Line coverage of twinflow's own code (engine/, kernels/; not fuzz/ itself nor the
# libraries) reached by running a target's corpus once through a coverage-instrumented build
# (`cargo fuzz coverage`, source-based, same `-s none -a` settings as fuzz/run.sh). One row
# per source file that the corpus reaches at all, then two totals. libFuzzer's `cov:` counts
# edges in every crate linked in (the YAML parser, serde, jiff, clap, std); this counts only
# twinflow's lines, so running it on the corpus before and after a round says whether the
# round still reached new code of twinflow's or only of its libraries.
#   bash fuzz/coverage.sh TARGET [CORPUS_DIR...]     (default: fuzz/corpus/TARGET)
#   bash fuzz/coverage.sh expression /tmp/old-corpus/expression
# Then `llvm-cov show` on the same binary and profile (printed at the end) lists the
# lines never reached. Needs the nightly toolchain's llvm-tools
# (`rustup component add llvm-tools-preview --toolchain nightly`) and cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
t=$1
shift
corpora=("$@")
[ ${#corpora[@]} -gt 0 ] || corpora=("fuzz/corpus/$t")
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
tools=$(rustc +nightly --print sysroot)/lib/rustlib/$host/bin
[ -x "$tools/llvm-cov" ] || {
    echo "error: no llvm-cov in $tools; run: rustup component add llvm-tools-preview --toolchain nightly" >&2
    exit 2
}
# As in fuzz/run.sh: a read hanging inside HDF5 (exchange) is ended by the exchange layer.
export TWIN_KERNEL_IO_TIMEOUT=${TWIN_KERNEL_IO_TIMEOUT:-20}
mkdir -p fuzz/target/logs
rm -rf "fuzz/coverage/$t"
if ! nice -n 19 cargo +nightly fuzz coverage -s none -a "$t" "${corpora[@]}" \
    > "fuzz/target/logs/$t.coverage.log" 2>&1; then
    tail -20 "fuzz/target/logs/$t.coverage.log" >&2
    echo "error: cargo fuzz coverage failed; log in fuzz/target/logs/$t.coverage.log" >&2
    exit 1
fi
bin=target/$host/coverage/$host/release/$t
profile=fuzz/coverage/$t/coverage.profdata
files=$(find "${corpora[@]}" -type f | wc -l)
echo "$t: $files inputs from ${corpora[*]}"
# Only twinflow's sources: drop the registry, the toolchain's std and the fuzz harness.
ignore='/\.cargo/|/\.rustup/|^/rustc/|/fuzz/'
"$tools/llvm-cov" report "$bin" -instr-profile="$profile" -ignore-filename-regex="$ignore" |
    awk '
        # llvm-cov columns: file, regions, missed, cover, functions, missed, executed,
        # lines, missed lines, line cover, branches...
        $1 ~ /\.rs$/ && $8 > 0 && $8 != $9 {
            printf "%-58s %6d lines %6d reached %7s\n", $1, $8, $8 - $9, $10
            n += $8; r += $8 - $9
        }
        $1 == "TOTAL" { all = $8; allr = $8 - $9 }
        END {
            printf "%-58s %6d lines %6d reached %6.2f%%\n", "in the files reached", n, r, n ? 100 * r / n : 0
            printf "%-58s %6d lines %6d reached %6.2f%%\n", "in all of twinflow linked in", all, allr, all ? 100 * allr / all : 0
        }'
echo "lines never reached: $tools/llvm-cov show $bin -instr-profile=$profile -ignore-filename-regex='$ignore' -show-line-counts FILE"
