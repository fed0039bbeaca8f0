#!/usr/bin/env python3
"""Seeds for the fuzz targets from the repository's real inputs, written to DIR/<target>/
(default target/fuzz-seeds). Run from anywhere: python3 fuzz/seed.py [DIR]

workflow      examples/, workflows/ (parts included), tests/fixtures/invalid/ (imports included),
              and every workflow written inline in the Rust tests (a string with `steps:`)
expression    every `${{ ... }}` in those files and in the Rust sources, bare and as a
              template, and every string of the expression language's unit tests
              (engine/core/src/expr/tests.rs): they call each built-in function with valid
              arguments, which the fuzzer alone reached late or not at all
profile       hpc/profiles/*.yaml, and the profiles of the unit tests of
              engine/core/src/execute/profile.rs (each out-of-range setting)
flood_config  kernels/twin-kernel/configs/*.json and the flood configurations of the tests
kernel_argv   the `kernel:` + `args:` of every workflow step (expressions replaced by
              plausible values), plus a few hand-written command lines, NUL-separated
exchange      one input per base file, bare and with a few corruptions
"""
import hashlib
import pathlib
import re
import struct
import sys
import textwrap

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "fuzz-seeds"


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


workflows = sorted(
    p
    for pattern in ["examples/*.yaml", "workflows/**/*.yaml", "tests/fixtures/invalid/**/*.yaml"]
    for p in ROOT.glob(pattern)
)
for p in workflows:
    put("workflow", p.read_bytes())
    text = p.read_text(errors="replace")
    for m in re.finditer(r"\$\{\{(.*?)\}\}", text):
        put("expression", m.group(1).strip())
        put("expression", m.group(0))
    for m in re.finditer(r'"([^"\n]*\$\{\{.*?\}\}[^"\n]*)"', text):
        put("expression", m.group(1))


def rust_strings(text):
    """The string literals of Rust source: raw ones as written, plain ones with their
    escapes undone (\\n, \\t, \\", \\\\, \\u{..})."""
    for m in re.finditer(r'\br(#*)"(.*?)"\1', text, re.S):
        yield m.group(2)
    escapes = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}
    for m in re.finditer(r'(?<![\w#])"((?:[^"\\\n]|\\.)*)"', text):
        yield re.sub(
            r"\\(u\{([0-9a-fA-F]+)\}|.)",
            lambda e: chr(int(e.group(2), 16)) if e.group(2) else escapes.get(e.group(1), e.group(0)),
            m.group(1),
        )


rust_sources = sorted(
    p for d in ["engine", "kernels", "tests"] for p in (ROOT / d).rglob("*.rs") if "target" not in p.parts
)
for p in rust_sources:
    text = p.read_text(errors="replace")
    for m in re.finditer(r"\$\{\{(.*?)\}\}", text):
        put("expression", m.group(1).strip())
    for lit in rust_strings(text):
        if "steps:" in lit:
            put("workflow", textwrap.dedent(lit.lstrip("\n")))
            if "{{" in lit:  # a `format!` string: also as it prints
                put("workflow", textwrap.dedent(lit.lstrip("\n")).replace("{{", "{").replace("}}", "}"))
        if p.name == "tests.rs" and p.parent.name == "expr" and 0 < len(lit) <= 400:
            put("expression", lit)
        if p.name == "profile.rs" and ":" in lit:
            put("profile", lit)

for p in sorted(ROOT.glob("hpc/profiles/*.yaml")):
    put("profile", p.read_bytes())

for p in sorted(ROOT.glob("kernels/**/*.json")):
    if "target" not in p.parts:
        put("flood_config", p.read_bytes())
put("flood_config", '{"end_time": 100, "output_interval": 30, "output_times": [45], "gauges": [{"name": "g", "x": 7, "y": 7}], "gauge_interval": 50}')
put("flood_config", '{"inflow": {"side": "west", "from": 0, "to": 60, "hydrograph": [[0, 0], [60, 100], [120, 0]]}, "boundaries": {"west": "wall", "east": "open"}}')


def plausible(arg):
    if "${{" not in str(arg):
        return str(arg)
    if re.search(r"out\.|in\.|dem|config|maps|gauges|table|model|state|obs", str(arg)):
        return re.sub(r"\$\{\{.*?\}\}", "file.nc", str(arg))
    return re.sub(r"\$\{\{.*?\}\}", "2.5", str(arg))


def kernel_steps(doc):
    if not isinstance(doc, dict):
        return
    steps = doc.get("steps")
    for s in steps.values() if isinstance(steps, dict) else []:
        if isinstance(s, dict) and "kernel" in s:
            yield s


for p in workflows:
    try:
        doc = yaml.safe_load(p.read_text())
    except Exception:
        continue
    for s in kernel_steps(doc):
        args = s.get("args") or []
        if not isinstance(args, list):
            continue
        argv = [str(s["kernel"])] + [plausible(a) for a in args]
        put("kernel_argv", "\0".join(argv))
for argv in [
    ["info"],
    ["--help"],
    ["flood", "--help"],
    ["terrain", "--out", "dem.nc", "--config-out", "flood.json", "--nx", "8", "--ny", "6"],
    ["flood", "--dem", "dem.nc", "--out", "r.nc", "--end-time", "100", "--output-interval", "10",
     "--manning-n", "0.03", "--cfl", "0.4", "--west", "wall", "--format", "hdf5", "--deflate", "0",
     "--inflow-peak", "5", "--rain", "1", "--water-level", "2", "--start-time", "1"],
]:
    put("kernel_argv", "\0".join(argv))

for base in range(5):
    put("exchange", bytes([base]))
    # A bit flip and a truncation in the header, then the same further in.
    put("exchange", bytes([base, 0]) + struct.pack("<I", 9) + bytes([3]))
    put("exchange", bytes([base, 2]) + struct.pack("<I", 2000) + bytes([0]))
    put("exchange", bytes([base, 4]) + struct.pack("<I", 700) + bytes([20]) + bytes([3]) + struct.pack("<I", 900) + bytes([0]))

for t in sorted(OUT.iterdir()):
    print(f"{t.name}: {len(list(t.iterdir()))} seeds")
