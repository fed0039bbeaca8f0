#!/usr/bin/env bash
# hpc/setup-provenance.sh [VENV]
#
# The independent RO-Crate tools the provenance tests check `twinflow export --ro-crate`
# with, from PyPI into a virtual environment (default: target/provenance-venv):
#   - rocrate (ResearchObject/ro-crate-py), which loads a crate as a library would;
#   - roc-validator (crs4/rocrate-validator), which checks it against the Workflow Run
#     Crate profiles (provenance-run-crate-0.5);
#   - the RO-Crate 1.1 JSON-LD context as published in rocrate 0.9.0's wheel, stored in the
#     validator's HTTP cache (VENV/validator-cache) by hpc/rocrate-seed-cache.py, so the
#     validator runs with --offline on machines without access to w3id.org.
# Idempotent: a venv with all of it is left as it is. Installs Debian's python3-venv when
# missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-target/provenance-venv}
log() { printf '[setup-provenance] %s\n' "$*" >&2; }

if [[ -x $venv/bin/rocrate-validator && -f $venv/validator-cache.sqlite && -f $venv/.complete ]]; then
  log "present: $venv"; exit 0
fi
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  if [[ $(id -u) != 0 ]]; then log "python3-venv is missing (run as root, or apt-get install python3-venv)"; exit 1; fi
  log "installing python3-venv"
  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check rocrate==0.16.0 roc-validator==0.13.0
mkdir -p "$venv/wheels"
"$venv/bin/pip" download -q --disable-pip-version-check --no-deps rocrate==0.9.0 -d "$venv/wheels"
"$venv/bin/python" hpc/rocrate-seed-cache.py "$venv/validator-cache" "$venv"/wheels/rocrate-0.9.0-py3-none-any.whl
touch "$venv/.complete"
log "ready: $venv ($("$venv/bin/python" -c 'import rocrate; print("rocrate", rocrate.__version__)'), $("$venv/bin/rocrate-validator" --version 2>/dev/null | tail -1))"
