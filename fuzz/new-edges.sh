#!/usr/bin/env bash
# Where a target still finds new coverage: fuzzes TARGET for SECONDS (default 300) from a
# copy of fuzz/corpus/TARGET (the corpus itself is left alone), with its dictionary and with
# libFuzzer printing each new PC, then counts them by the crate of the function they lie in
# (after inlining).
#   bash fuzz/new-edges.sh TARGET [SECONDS]
# Needs the built target (`cargo +nightly fuzz build -s none -a`), llvm-symbolizer and
# setarch (the run has address randomisation off, so a PC maps back to the binary).
set -euo pipefail
cd "$(dirname "$0")/.."
t=$1
secs=${2:-300}
bin=fuzz/target/x86_64-unknown-linux-gnu/release/$t
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "fuzz/corpus/$t" "$work/corpus"
dict=()
[ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
setarch -R nice -n 19 "$bin" -max_total_time="$secs" -print_pcs=1 -rss_limit_mb=2048 \
    -malloc_limit_mb=2048 -timeout=10 "${dict[@]}" "$work/corpus" > "$work/log" 2>&1 || true
start=$(grep -E 'INITED cov:' "$work/log" | grep -Eo 'cov: [0-9]+' | cut -d' ' -f2)
end=$(grep -E '^#[0-9]+' "$work/log" | tail -1 | grep -Eo 'cov: [0-9]+' | cut -d' ' -f2)
# A position-independent executable without randomisation is loaded at 0x555555554000.
grep -Eo 'NEW_PC: 0x[0-9a-f]+' "$work/log" | awk '{print $2}' | sort -u |
    python3 -c 'import sys; [print(hex(int(l, 16) - 0x555555554000)) for l in sys.stdin]' \
        > "$work/pcs"
echo "$t: $secs s from fuzz/corpus/$t, cov $start → $end, $(wc -l < "$work/pcs") new PCs"
# --output-style=JSON: one object per PC, its frames innermost first; the last frame is the
# function the code was inlined into.
llvm-symbolizer --output-style=JSON --obj="$bin" < "$work/pcs" | python3 -c '
import collections, json, re, sys
counts = collections.Counter()
ours = []
for line in sys.stdin:
    frames = json.loads(line).get("Symbol", [])
    path = frames[-1].get("FileName", "") if frames else ""
    m = re.search(r"registry/src/[^/]+/([A-Za-z0-9_\-]+?)-[0-9][^/]*/", path)
    if m:
        crate = m.group(1)
    elif "/rustc/" in path or "/library/" in path or path.startswith("/rust/deps/"):
        crate = "(the standard library)"
    elif "/fuzz/" in path or "/engine/" in path or "/kernels/" in path:
        crate = "twinflow: " + re.sub(r".*?/((engine|kernels|fuzz)/[^/]+)/.*", r"\1", path)
        inner = frames[0]
        where = re.sub(r".*?/((engine|kernels|fuzz)/)", r"\1", inner.get("FileName", ""))
        function = frames[-1].get("FunctionName", "?")
        line_no = inner.get("Line", 0)
        ours.append(f"{function} ({where}:{line_no})")
    else:
        crate = "(unknown: " + (path or "no line info") + ")"
    counts[crate] += 1
total = sum(counts.values()) or 1
for crate, n in counts.most_common():
    print(f"  {n:5}  {100 * n / total:5.1f} %  {crate}")
if ours:
    print("new PCs in twinflow (function, innermost source line):")
    for o in sorted(ours):
        print("   ", o)
'
