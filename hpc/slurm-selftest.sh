#!/usr/bin/env bash
# hpc/slurm-selftest.sh WORKDIR
#
# Exercise a running hpc/slurm-local.sh cluster: sbatch --wrap, squeue, sacct -c
# (and plain sacct when slurmdbd is configured), srun -n 2 / -n 4 with an MPICH program built
# from hpc/mpi-hello.c, afterok chains, kill_invalid_depend, job arrays, a throttled array,
# scancel, and sbatch + srun inside the allocation.  Job files and the MPI binary go to
# WORKDIR.  Prints PASS/FAIL per check, then "N passed, M failed"; exits 1 on any failure.
#
# Knobs: MPICC (default mpicc; must be MPICH's, which speaks pmi2 under srun),
#        SLURM_CONF (default: the /etc/slurm symlink or $SLURM_LOCAL_DIR/etc/slurm.conf).
set -uo pipefail   # no -e: a failing check is counted, not fatal

if [[ $# -ne 1 ]]; then echo "usage: $0 WORKDIR" >&2; exit 2; fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
W=$1
mkdir -p "$W" && W=$(cd "$W" && pwd) || exit 2
cd "$W" || exit 2
if [[ -z ${SLURM_CONF:-} && ! -e /etc/slurm/slurm.conf ]]; then
  export SLURM_CONF=${SLURM_LOCAL_DIR:-/tmp/twinflow-slurm}/etc/slurm.conf
fi
if ! timeout 10 scontrol ping >/dev/null 2>&1; then
  echo "no Slurm controller answers (SLURM_CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}); start it: hpc/slurm-local.sh start" >&2
  echo "0 passed, 1 failed"; exit 1
fi

pass=0 fail=0
T0=${EPOCHREALTIME/./}   # microseconds (bash >= 5)
elapsed() { local us=$(( ${EPOCHREALTIME/./} - T0 )); printf '%d.%01d' $((us / 1000000)) $((us / 100000 % 10)); }
ok()  { echo "PASS [$(elapsed)s] $*"; pass=$((pass + 1)); }
bad() { echo "FAIL [$(elapsed)s] $*"; fail=$((fail + 1)); }
check() {  # check DESCRIPTION -- CONDITION...   (condition run as a command)
  local d=$1; shift 2
  if "$@"; then ok "$d"; else bad "$d"; fi
}
jstate() { scontrol show job "$1" 2>/dev/null | grep -oP 'JobState=\K\S+' | head -1; }
# all jobs/array tasks of $1 gone from the queue (MinJobAge keeps them in scontrol)
wait_gone() { local i; for i in $(seq 1 300); do [[ -z $(squeue -h -r -j "$1" 2>/dev/null) ]] && return 0; sleep 0.1; done; return 1; }
wait_state() { local i; for i in $(seq 1 300); do [[ $(jstate "$1") == "$2" ]] && return 0; sleep 0.1; done; return 1; }
# ranks_ok N TEXT: exactly N lines "rank i of N ... OK", one for each i in 0..N-1.
# A launcher/MPI mismatch starts N singletons that all say "rank 0 of 1" and exit 0.
ranks_ok() {
  local n=$1 text=$2 i
  [[ $(grep -c '^rank [0-9]* of ' <<<"$text") == "$n" ]] || return 1
  for ((i = 0; i < n; i++)); do
    [[ $(grep -c "^rank $i of $n on .* OK\$" <<<"$text") == 1 ]] || return 1
  done
}
echo "selftest in $W, SLURM_CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}"

# 1. sbatch --wrap; squeue; scontrol show job; sacct -c (jobcomp/filetxt); sacct (slurmdbd)
J=$(sbatch --parsable -o hostname.%j.out --wrap 'hostname')
if [[ -n $J ]] && squeue -h -r -j "$J" -o '%i %T' >/dev/null && wait_gone "$J" &&
   [[ $(jstate "$J") == COMPLETED && $(cat "hostname.$J.out" 2>/dev/null) == "$(hostname)" ]]; then
  ok "sbatch --wrap hostname: job $J COMPLETED, output '$(hostname)'"
else bad "sbatch --wrap hostname: job '$J' state '$(jstate "$J")'"; fi
if [[ $(sacct -c -j "$J" -n -o JobID,State,ExitCode 2>/dev/null) =~ (^|$'\n')\ *$J\ +COMPLETED ]]; then
  ok "sacct -c (jobcomp/filetxt) reports job $J COMPLETED"
else bad "sacct -c -j $J: $(sacct -c -j "$J" -n -o JobID,State,ExitCode 2>&1 | head -3)"; fi
# (not `scontrol ... | grep -q`: with pipefail, grep -q quitting early SIGPIPEs scontrol -> "no match")
if [[ $(scontrol show config 2>/dev/null) =~ AccountingStorageType\ *=\ *accounting_storage/slurmdbd ]]; then
  # slurmdbd records arrive a few seconds after the job ends: poll
  batch_done() { [[ $(sacct -n -j "$J" -o JobID,State 2>/dev/null) =~ $J\.batch\ +COMPLETED ]]; }
  for _ in $(seq 1 100); do batch_done && break; sleep 0.2; done
  if batch_done; then
    ok "sacct (slurmdbd) reports job $J and its batch step"
  else bad "sacct with slurmdbd: $(sacct -j "$J" 2>&1 | head -5)"; fi
else
  if sacct -j "$J" >/dev/null 2>&1; then bad "plain sacct unexpectedly works without slurmdbd"
  else ok "plain sacct fails without slurmdbd, as expected: $(sacct -j "$J" 2>&1 | head -1)"; fi
fi

# 2. MPI under srun: MPICH speaks pmi2 (MpiDefault=pmi2)
MPICC=${MPICC:-mpicc}
MPI_BIN=$W/mpi-hello
if "$MPICC" -O2 -o "$MPI_BIN" "$HERE/mpi-hello.c" 2>mpicc.err; then
  ok "$MPICC hpc/mpi-hello.c -> $MPI_BIN ($("$MPICC" -show 2>/dev/null | grep -o 'lmpi[a-z]*' | head -1))"
  for n in 2 4; do
    out=$(timeout 60 srun -n "$n" "$MPI_BIN" 2>&1)
    if ranks_ok "$n" "$out"; then ok "srun -n $n mpi-hello: ranks 0..$((n - 1)) all 'of $n', allreduce OK"
    else bad "srun -n $n mpi-hello: $(echo "$out" | head -8)"; fi
  done
  # the rank check must catch a launcher mismatch (n singletons that each exit 0)
  out=$(timeout 60 srun --mpi=none -n 2 "$MPI_BIN" 2>&1)
  if ! ranks_ok 2 "$out"; then ok "rank check rejects srun --mpi=none (got: $(grep -c 'rank 0 of 1' <<<"$out") x 'rank 0 of 1')"
  else bad "srun --mpi=none unexpectedly gave a 2-rank job"; fi
else
  bad "$MPICC hpc/mpi-hello.c: $(head -5 mpicc.err)"; MPI_BIN=
fi

# 3. dependencies: an afterok chain, and one that can never be met (kill_invalid_depend)
A=$(sbatch --parsable -o dep.%j.out --wrap 'sleep 1; echo A')
B=$(sbatch --parsable -o dep.%j.out --dependency=afterok:"$A" --wrap 'echo B')
C=$(sbatch --parsable -o dep.%j.out --dependency=afterok:"$A" --wrap 'exit 3')
D=$(sbatch --parsable -o dep.%j.out --dependency=afterok:"$C" --wrap 'echo D')
E=$(sbatch --parsable -o dep.%j.out --dependency=afterok:"$B" --wrap 'echo E')
r=$(squeue -h -j "$B" -o %r 2>/dev/null | tr -d '\0')
check "job $B pending with reason Dependency while $A runs (got '$r')" -- [ "$r" == Dependency ]
wait_gone "$A"; wait_gone "$B"; wait_gone "$C"; wait_gone "$D"; wait_gone "$E"
if [[ $(jstate "$A") == COMPLETED && $(jstate "$B") == COMPLETED && $(jstate "$E") == COMPLETED &&
      $(cat "dep.$A.out" "dep.$B.out" "dep.$E.out" 2>/dev/null | tr '\n' ' ') == "A B E " ]]; then
  ok "afterok chain $A -> $B -> $E all COMPLETED in order"
else bad "afterok chain: A=$(jstate "$A") B=$(jstate "$B") E=$(jstate "$E")"; fi
check "afterok job $C ran and FAILED (exit 3)" -- [ "$(jstate "$C")" == FAILED ]
if [[ $(jstate "$D") == CANCELLED && ! -e dep.$D.out ]]; then
  ok "kill_invalid_depend: $D (afterok on failed $C) CANCELLED, never ran"
else bad "kill_invalid_depend: D=$(jstate "$D") reason=$(squeue -h -j "$D" -o %r 2>/dev/null)"; fi

# 4. job array
# shellcheck disable=SC2016  # $SLURM_ARRAY_TASK_ID must expand in the job, not here
AR=$(sbatch --parsable --array=0-3 -o arr_%A_%a.out --wrap 'echo $SLURM_ARRAY_TASK_ID')
wait_gone "$AR"
got=$(cat arr_"${AR}"_*.out 2>/dev/null | sort | tr '\n' ' ')
check "--array=0-3: all 4 tasks ran (got '$got')" -- [ "$got" == "0 1 2 3 " ]

# 5. throttled array (%2: at most 2 tasks at a time), and scancel of running jobs
L=$(sbatch --parsable -o long.%j.out --wrap 'echo started; sleep 300')
AR2=$(sbatch --parsable --array=0-5%2 -o /dev/null --wrap 'sleep 300')
wait_state "$L" RUNNING
for _ in $(seq 1 100); do [[ $(squeue -h -r -j "$AR2" -t R | wc -l) -ge 2 ]] && break; sleep 0.1; done
sleep 1   # give the scheduler (sched_interval=1) a chance to start too many
nrun=$(squeue -h -r -j "$AR2" -t R | wc -l)
nthr=$(squeue -h -r -j "$AR2" -t PD -o %r | grep -c JobArrayTaskLimit)
if [[ $nrun == 2 && $nthr == 4 ]]; then ok "--array=0-5%2: 2 tasks running, 4 pending on JobArrayTaskLimit"
else bad "--array=0-5%2: $nrun running, $nthr pending on JobArrayTaskLimit (want 2 and 4)"; fi
scancel "$L" "$AR2"
wait_gone "$L"; wait_gone "$AR2"
if [[ $(jstate "$L") == CANCELLED ]] && grep -q started "long.$L.out" && grep -q CANCELLED "long.$L.out" &&
   [[ -z $(squeue -h -r -j "$AR2") ]]; then
  ok "scancel running job $L and array $AR2"
else bad "scancel: L=$(jstate "$L") array left: $(squeue -h -r -j "$AR2" | wc -l)"; fi

# 6. sbatch script that runs srun inside its allocation
if [[ -n $MPI_BIN ]]; then
  cat > mpi.sbatch <<EOF
#!/bin/bash
#SBATCH -n 2
#SBATCH -o mpi.%j.out
srun $MPI_BIN
EOF
  M=$(sbatch --parsable mpi.sbatch); wait_gone "$M"
  if [[ $(jstate "$M") == COMPLETED ]] && ranks_ok 2 "$(cat "mpi.$M.out" 2>/dev/null)"; then
    ok "sbatch -n 2 + srun mpi-hello inside the allocation ($M)"
  else bad "sbatch + srun ($M, $(jstate "$M")): $(head -5 "mpi.$M.out" 2>/dev/null)"; fi
fi

echo "selftest took $(elapsed)s"
echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
