#!/usr/bin/env bash
# hpc/setup-deps.sh [--openmpi] [--slurmdbd] [--with-slurm|--no-slurm] [--python] [--mqtt] [--browser]
#
# Idempotent installer (Debian 12 "bookworm" packages) for what twinflow needs to build
# and test against real HPC components:
#   - MPICH 4.0.2 (+ clang/libclang for the bindgen step of rsmpi's mpi-sys)
#   - HDF5 1.10.8 (serial) + h5dump, netCDF-C 4.9.0 + ncdump, pkg-config, cmake
#   - Slurm 22.05 + munge (run a private one-node cluster with hpc/slurm-local.sh)
# No daemon is started here.
#
#   --openmpi     also Open MPI (MPICH stays the default mpicc/mpirun/mpi.h)
#   --slurmdbd    also slurmdbd + mariadb-server (for SLURM_LOCAL_DBD=1, i.e. plain sacct)
#   --with-slurm  install slurm-wlm + munge (default)
#   --no-slurm    skip slurm-wlm + munge (and --slurmdbd)
#   --python      also Debian's python3-xarray/netcdf4/h5netcdf/h5py, to read outputs.
#                 They live in /usr/lib/python3/dist-packages: use /usr/bin/python3, not a
#                 pyenv/venv python3 that may come first on PATH.
#   --mqtt        also Debian's mosquitto 2.0 broker and mosquitto-clients (mosquitto_pub,
#                 mosquitto_sub), for the stream ingest (run a private broker with
#                 hpc/mqtt-local.sh; no broker service is started here)
#   --browser     also Debian's chromium (headless), which the e2e tests load run reports in
#                 (`twinflow report`: no console errors, DAG, timeline and task table rendered)
#
# Cheap when everything is present: dpkg-query decides what is missing, and apt-get
# (update + install) runs only for the missing packages. Installing needs root; without
# root and with packages missing, it names them and exits 1.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

usage() { echo "usage: $0 [--openmpi] [--slurmdbd] [--with-slurm|--no-slurm] [--python] [--mqtt] [--browser]" >&2; exit 2; }
with_openmpi=0 with_dbd=0 with_slurm=1 with_python=0 with_mqtt=0 with_browser=0
for a in "$@"; do
  case $a in
    --openmpi) with_openmpi=1 ;;
    --slurmdbd) with_dbd=1 ;;
    --with-slurm) with_slurm=1 ;;
    --no-slurm) with_slurm=0 ;;
    --python) with_python=1 ;;
    --mqtt) with_mqtt=1 ;;
    --browser) with_browser=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) usage ;;
  esac
done

log() { printf '[setup-deps] %s\n' "$*" >&2; }

pkgs=(
  pkg-config clang libclang-dev cmake   # bindgen (mpi-sys) needs libclang; cmake-based -sys crates
  iproute2 bc                           # ss (port checks in slurm-local.sh), bc (timings)
  mpich libmpich-dev                    # MPICH 4.0.2 (ch4:ucx, hydra mpiexec, PMI-2 for srun)
  libhdf5-dev hdf5-tools                # HDF5 1.10.8 serial + h5dump
  libnetcdf-dev netcdf-bin              # netCDF-C 4.9.0 + ncdump
)
if [[ $with_slurm == 1 ]]; then
  pkgs+=(slurm-wlm munge)               # slurmctld/slurmd/clients 22.05.8, munge 0.5.15
  if [[ $with_dbd == 1 ]]; then pkgs+=(slurmdbd mariadb-server); fi
elif [[ $with_dbd == 1 ]]; then
  log "--slurmdbd ignored with --no-slurm"
fi
if [[ $with_openmpi == 1 ]]; then pkgs+=(openmpi-bin libopenmpi-dev); fi
if [[ $with_python == 1 ]]; then pkgs+=(python3-xarray python3-netcdf4 python3-h5netcdf python3-h5py); fi
if [[ $with_mqtt == 1 ]]; then pkgs+=(mosquitto mosquitto-clients); fi   # mosquitto 2.0.11
if [[ $with_browser == 1 ]]; then pkgs+=(chromium); fi                    # headless report checks

# Which packages are not installed? (dpkg-query fails for a package dpkg never heard of.)
missing=()
for p in "${pkgs[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $st == "install ok installed" ]] || missing+=("$p")
done

wait_for_apt() {
  # Another apt/dpkg (e.g. a provisioning job in the background) holds the dpkg lock:
  # apt-get would fail at once with "Could not get lock". Wait for it (up to 15 min).
  local i
  for i in $(seq 1 900); do
    if ! pgrep -x apt-get >/dev/null && ! pgrep -x apt >/dev/null && ! pgrep -x dpkg >/dev/null &&
       ! fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1 && ! fuser /var/lib/dpkg/lock >/dev/null 2>&1; then
      return 0
    fi
    if (( i == 1 )); then log "waiting for another apt/dpkg to finish..."; fi
    sleep 1
  done
  log "another apt/dpkg is still running after 15 min; giving up"; return 1
}

if (( ${#missing[@]} > 0 )); then
  if [[ $(id -u) != 0 ]]; then
    log "missing packages: ${missing[*]}"
    log "installing them needs root: sudo $0 $*   (or: sudo apt-get install --no-install-recommends ${missing[*]})"
    exit 1
  fi
  log "installing: ${missing[*]}"
  wait_for_apt
  # Keep package scripts from starting munge/slurm/mariadb/mosquitto as services: there is no systemd
  # here, and slurm-local.sh runs its own private instances. policy-rc.d exiting 101 means
  # "action forbidden"; Docker images often ship one already (then it is left alone).
  made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  cleanup() { if [[ $made_policy == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi; }
  trap cleanup EXIT
  t0=$SECONDS
  # DPkg::Lock::Timeout covers a race with an apt that starts after wait_for_apt returned.
  apt-get -q -o DPkg::Lock::Timeout=600 update
  apt-get -q -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"
  log "apt took $((SECONDS - t0))s"
else
  log "all ${#pkgs[@]} packages already installed"
fi

# Installing Open MPI after MPICH silently switches mpicc/mpirun/mpi.h to Open MPI (it has a
# higher alternatives priority), and mpi-sys finds MPI through `mpicc -show`: pin MPICH so
# mpicc/mpiexec/mpi.h agree with each other and with srun's pmi2. Only where MPICH registered
# the alternative, and only if it is not already selected.
pin_alt() {  # name path
  local name=$1 want=$2 cur
  [[ $'\n'$(update-alternatives --list "$name" 2>/dev/null)$'\n' == *$'\n'"$want"$'\n'* ]] || return 0
  cur=$(update-alternatives --query "$name" 2>/dev/null | awk '/^Value:/ {print $2}')
  [[ $cur == "$want" ]] && return 0
  if [[ $(id -u) == 0 ]]; then
    update-alternatives --set "$name" "$want"
  else
    log "WARNING: alternative '$name' is '$cur', not MPICH's '$want' (as root: update-alternatives --set $name $want)"
  fi
}
pin_alt mpi /usr/bin/mpicc.mpich
pin_alt mpirun /usr/bin/mpirun.mpich
pin_alt "mpi-$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)" \
  "/usr/include/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)/mpich"

# One-line summary of what the build and the tests will use.
summary="mpich $(mpichversion 2>/dev/null | awk -F: '/Version/ {gsub(/[ \t]/, "", $2); print $2; exit}')"
mapfile -t mv < <(pkg-config --modversion hdf5 netcdf 2>/dev/null || true)
summary+=" | hdf5 ${mv[0]:-?} | netcdf ${mv[1]:-?} | mpicc=$(readlink -f "$(command -v mpicc)" 2>/dev/null || echo none)"
if command -v slurmctld >/dev/null; then summary+=" | $(slurmctld -V)"; fi
if command -v munged >/dev/null; then summary+=" | munge $(dpkg-query -W -f='${Version}' munge 2>/dev/null)"; fi
if command -v slurmdbd >/dev/null; then summary+=" | slurmdbd+$(mariadbd --version 2>/dev/null | awk '{print $3}')"; fi
if command -v mosquitto >/dev/null; then summary+=" | mosquitto $(dpkg-query -W -f='${Version}' mosquitto 2>/dev/null)"; fi
if command -v mpirun.openmpi >/dev/null; then summary+=" | openmpi $(dpkg-query -W -f='${Version}' openmpi-bin 2>/dev/null)"; fi
if [[ $with_python == 1 ]]; then
  # versions from dpkg: Debian's xarray 2023.01 reports xarray.__version__ == "999"
  summary+=" | python3-xarray $(dpkg-query -W -f='${Version}' python3-xarray 2>/dev/null)"
  if /usr/bin/python3 -c 'import xarray, netCDF4, h5netcdf, h5py' 2>/dev/null; then
    summary+=" (/usr/bin/python3 imports xarray/netCDF4/h5netcdf/h5py)"
  else
    summary+=" (/usr/bin/python3 CANNOT import xarray/netCDF4/h5netcdf/h5py)"
  fi
fi
echo "$summary"
