#!/usr/bin/env python3
"""Soak benchmark: many runs of a small workflow back to back in one runs directory.

    python3 bench/soak.py [--runs 1000] [--twinflow target/debug/twinflow] [--dir DIR]

twinflow runs one engine process per run, so what could grow from run to run is what the
runs share: the run database (rows, file size, WAL) and the time an engine takes to open it
and record a run; and inside one engine, what it keeps open. How it is measured:

- the engine's open file descriptors and threads: the workflow's last task (`probe`) reads
  `/proc/$PPID/fd` and `/proc/$PPID/status` of its parent, the engine (steps are its direct
  children), while that engine is alive and has run every other task of the run: the same
  point of every run, measured from inside, no sampling race;
- the database: the size of `twinflow.db` and `twinflow.db-wal` and its row counts after
  each run (read with the sqlite3 module, after the engine exited);
- the time of each run (wall clock around the `twinflow run` process).

It prints the first and last 10 runs' figures and a summary (start = mean of the first 10
runs, end = mean of the last 10). Nothing but the database's rows should grow. The time of
a run also depends on the machine's load, so a baseline is measured in the same session:
before the first and after the last soak run, 10 runs of the same workflow each in a runs
directory of its own (an empty database); the soak's start and end are read against them.
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

WORKFLOW = """
name: soak
steps:
  a:
    run: [sh, -c, 'echo a > a.txt']
    out: { a: a.txt }
  b:
    scatter:
      over: { k: "${{ range(0, 3) }}" }
    run: [sh, -c, 'cat "$1" > b.txt', sh, "${{ steps.a.out.a }}"]
    out: { b: b.txt }
  probe:
    run: [sh, -c, 'ls /proc/$PPID/fd | wc -l > fds.txt; awk "/^Threads:/ {print \\$2}" /proc/$PPID/status > threads.txt; cat "$@" > /dev/null', sh, "${{ steps.b.out.b }}"]
    out: { fds: fds.txt, threads: threads.txt }
"""


def rows(db):
    c = sqlite3.connect(db)
    try:
        return {t: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("runs", "tasks", "attempts", "transitions")}
    finally:
        c.close()


def size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--twinflow", default=os.path.join(os.path.dirname(__file__), "..", "target", "debug", "twinflow"))
    ap.add_argument("--dir", help="work directory (default: a new temporary one, removed afterwards)")
    a = ap.parse_args()
    exe = os.path.abspath(a.twinflow)
    work = a.dir or tempfile.mkdtemp(prefix="twinflow-soak-")
    os.makedirs(work, exist_ok=True)
    wf = os.path.join(work, "soak.yaml")
    with open(wf, "w") as f:
        f.write(WORKFLOW)
    runs = os.path.join(work, "runs")
    db = os.path.join(runs, "twinflow.db")
    figures = []

    def baseline(tag):
        times = []
        for k in range(10):
            fresh = os.path.join(work, f"baseline-{tag}-{k}")
            t = time.monotonic()
            p = subprocess.run([exe, "run", wf, "--json", "--no-cache", "--runs-dir", fresh], capture_output=True, text=True)
            times.append(time.monotonic() - t)
            if p.returncode != 0:
                sys.exit(f"baseline run failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
            shutil.rmtree(fresh, ignore_errors=True)
        return statistics.mean(times)

    try:
        base_start = baseline("start")
        for i in range(a.runs):
            t = time.monotonic()
            p = subprocess.run([exe, "run", wf, "--json", "--no-cache", "--runs-dir", runs], capture_output=True, text=True)
            took = time.monotonic() - t
            if p.returncode != 0:
                sys.exit(f"run {i} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
            events = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
            run_id = next(e["run_id"] for e in events if e["event"] == "run-finished")
            out = os.path.join(runs, run_id, "steps", "probe", "out")
            fds = int(open(os.path.join(out, "fds.txt")).read())
            threads = int(open(os.path.join(out, "threads.txt")).read())
            r = rows(db)
            figures.append(dict(run=i + 1, seconds=took, fds=fds, threads=threads, db=size(db), wal=size(db + "-wal"), **r))
            if i < 10 or i >= a.runs - 10:
                print(f"run {i + 1:5}: {took:6.3f} s  fds {fds:3}  threads {threads:3}  db {size(db):9} B  wal {size(db + '-wal'):9} B  rows {r}", flush=True)
            elif i % 100 == 0:
                print(f"run {i + 1:5}: ...", flush=True)
        base_end = baseline("end")
        report(figures, base_start, base_end)
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)


def report(figures, base_start, base_end):
    head, tail = figures[:10], figures[-10:]
    mean = lambda xs, k: statistics.mean(x[k] for x in xs)
    print()
    print(f"{'figure':<28}{'start (runs 1-10)':>20}{'end (last 10)':>20}")
    print(f"{'baseline seconds (empty db)':<28}{base_start:>20.3f}{base_end:>20.3f}")
    for k in ("seconds", "fds", "threads"):
        print(f"{'engine ' + k:<28}{mean(head, k):>20.3f}{mean(tail, k):>20.3f}")
    print(f"{'fds min-max over all runs':<28}{min(x['fds'] for x in figures):>20}{max(x['fds'] for x in figures):>20}")
    print(f"{'threads min-max':<28}{min(x['threads'] for x in figures):>20}{max(x['threads'] for x in figures):>20}")
    for k in ("db", "wal", "runs", "tasks", "attempts", "transitions"):
        print(f"{k:<28}{figures[0][k]:>20}{figures[-1][k]:>20}")
    per_run = (figures[-1]["db"] - figures[0]["db"]) / max(1, len(figures) - 1)
    print(f"database growth per run: {per_run:.0f} B ({(figures[-1]['tasks'] - figures[0]['tasks']) / max(1, len(figures) - 1):.1f} task rows)")


if __name__ == "__main__":
    main()
