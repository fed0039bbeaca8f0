#!/usr/bin/env bash
# hpc/slurm-local.sh start|stop|status|env|wait|nodes|kill-node NODE|start-node NODE
#
# A one-node Slurm "cluster" on this host, for twinflow's tests and CI; or, with
# SLURM_LOCAL_NODES=N (N > 1), N nodes on this host managed by one slurmctld: each node's
# slurmd in its own network and UTS namespace (hostname node1..nodeN, an address on a bridge
# this script creates; the namespaces have no route anywhere else).
# Tested on Debian 12 (bookworm), slurm-wlm 22.05.8, munge 0.5.15, as root, no systemd,
# no usable cgroups.  Everything (config, state, spool, logs, pid files, munge key and
# socket, optional MariaDB) lives under $SLURM_LOCAL_DIR.  Outside it, only:
#   - a symlink /etc/slurm/slurm.conf -> $SLURM_LOCAL_DIR/etc/slurm.conf (SLURM_LOCAL_LINK_ETC=1)
#   - one line "127.0.1.1 <hostname>" appended to /etc/hosts, as root, if the hostname does
#     not resolve to loopback (srun hangs otherwise).
#   - with SLURM_LOCAL_NODES > 1: the bridge, one network namespace per node (named
#     <bridge>-<node>) with the host end of its veth pair, and one line per node
#     "ADDR NODE # twinflow-slurm-local DIR" in /etc/hosts.  `stop` removes all of them.
# Install the packages with hpc/setup-deps.sh (add --slurmdbd for SLURM_LOCAL_DBD=1).
#
#   start   write the config, start munged (+ mariadbd + slurmdbd) + slurmctld + slurmd,
#           wait until the node is idle.  Clean start: old jobs and job ids are forgotten.
#   stop    cancel all jobs, stop the daemons by their pid files
#   status  daemons, scontrol ping, sinfo, squeue; exit 1 if anything needed is not running
#   env     print `export SLURM_CONF=...` (use: eval "$(hpc/slurm-local.sh env)")
#   wait    wait until the controller answers and the node is usable (SLURM_LOCAL_WAIT s)
#   nodes   one line per node: NAME ADDRESS NAMESPACE (namespace "-" for the one-node cluster)
#   kill-node NODE   (N > 1) the node crashes: SIGKILL every process in its namespace
#                    (its slurmd, slurmstepds and every task); the namespace stays
#   start-node NODE  (N > 1) start its slurmd again and wait until the node is usable
#
# Knobs (environment):
#   SLURM_LOCAL_DIR          where everything lives           (default /tmp/twinflow-slurm)
#   SLURM_LOCAL_CPUS         CPUs the node advertises         (default 8; > real cores is fine)
#   SLURM_LOCAL_AUTH         munge | none                     (default munge)
#   SLURM_LOCAL_CTLD_PORT    slurmctld port                   (default 6817)
#   SLURM_LOCAL_SLURMD_PORT  slurmd port                      (default 6818)
#   SLURM_LOCAL_MPI          MpiDefault: pmi2 (MPICH) | pmix (Open MPI) | none (default pmi2)
#   SLURM_LOCAL_DBD          1: also a private MariaDB + slurmdbd, so plain sacct works
#                            (needs: hpc/setup-deps.sh --slurmdbd)  (default 0)
#   SLURM_LOCAL_DB_PORT / SLURM_LOCAL_DBD_PORT   MariaDB / slurmdbd ports (3307 / 6819)
#   SLURM_LOCAL_LINK_ETC     1: symlink /etc/slurm/slurm.conf so plain sbatch/srun work
#                            without SLURM_CONF                (default 1)
#   SLURM_LOCAL_WAIT         seconds `start`/`wait` wait for the node (default 30)
#   SLURM_LOCAL_NODES        nodes; > 1: one network + UTS namespace per node (default 1)
#   SLURM_LOCAL_SUBNET       /24 of the bridge, first three octets: the controller is .1,
#                            node k is .(10+k)                 (default 198.18.0, RFC 2544)
#   SLURM_LOCAL_BRIDGE       bridge name, at most 11 characters (default tfslurm0)
#   SLURM_LOCAL_NODE_PREFIX  node names PREFIX1..PREFIXN (default node); two multi-node
#                            clusters at once need different prefixes (/etc/hosts)
#   SLURM_LOCAL_SLURMD_TIMEOUT  SlurmdTimeout of a multi-node cluster: a node whose slurmd
#                            is silent this long is set DOWN   (default 10)
# The knobs only matter to `start`: the others read what `start` recorded under
# $SLURM_LOCAL_DIR (only SLURM_LOCAL_DIR must be the same).
set -Eeuo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/twinflow-slurm}
CPUS=${SLURM_LOCAL_CPUS:-8}
AUTH=${SLURM_LOCAL_AUTH:-munge}
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-6818}
LINK_ETC=${SLURM_LOCAL_LINK_ETC:-1}
MPI_DEFAULT=${SLURM_LOCAL_MPI:-pmi2}
DBD=${SLURM_LOCAL_DBD:-0}
DB_PORT=${SLURM_LOCAL_DB_PORT:-3307}
DBD_PORT=${SLURM_LOCAL_DBD_PORT:-6819}
WAIT=${SLURM_LOCAL_WAIT:-30}
NODES=${SLURM_LOCAL_NODES:-1}
SUBNET=${SLURM_LOCAL_SUBNET:-198.18.0}
BRIDGE=${SLURM_LOCAL_BRIDGE:-tfslurm0}
SLURMD_TIMEOUT=${SLURM_LOCAL_SLURMD_TIMEOUT:-10}
PREFIX=${SLURM_LOCAL_NODE_PREFIX:-node}
NODE=$(hostname -s)
CONF=$DIR/etc/slurm.conf
ETC_CONF=/etc/slurm/slurm.conf
MUNGE_SOCK=$DIR/munge/munge.socket.2
# What `start` created, for every later subcommand: one line "NAME ADDRESS NAMESPACE" per
# node (namespace "-" on the one-node cluster), and the bridge of a multi-node cluster.
NODES_FILE=$DIR/etc/nodes
BRIDGE_FILE=$DIR/etc/bridge
HOSTS_MARK="# twinflow-slurm-local $DIR"
# With no /etc/slurm/slurm.conf and no SLURM_CONF, every client fails with a confusing
# DNS SRV lookup error ("_slurmctld._tcp"): always point our own calls at our config.
export SLURM_CONF=$CONF

log() { printf '[slurm-local %s] %s\n' "$(date +%T)" "$*" >&2; }
pid_of() { if [[ -s $1 ]]; then cat "$1"; fi; }
# alive PIDFILE NAME: the pid is running *and* is that program (pid files in /tmp can
# outlive a reboot or a killed container, and their pid may now belong to something else)
alive() {
  local p; p=$(pid_of "$1")
  [[ -n $p ]] && kill -0 "$p" 2>/dev/null && [[ $(cat "/proc/$p/comm" 2>/dev/null) == "$2" ]]
}
# running PID: exists and is not a zombie.  Where nothing reaps orphans (containers whose
# PID 1 is not an init), an exited daemon lingers as Z and kill -0 still succeeds, so stop
# would wait for nothing.  (A Z leader with threads left is a process still exiting.)
running() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ $(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) != Z ||
     $(awk '/^Threads:/ {print $2}' "/proc/$1/status" 2>/dev/null) -gt 1 ]]
}
port_busy() { [[ -n $(ss -Htln "( sport = :$1 )" 2>/dev/null) ]]; }

# The nodes `start` recorded (NAME ADDRESS NAMESPACE), else the one-node cluster's.
node_lines() {
  if [[ -s $NODES_FILE ]]; then cat "$NODES_FILE"; else echo "$NODE 127.0.0.1 -"; fi
}
node_names() { node_lines | awk '{print $1}'; }
multi() { [[ -s $NODES_FILE ]] && [[ $(awk '{print $3}' "$NODES_FILE" | head -1) != - ]]; }
slurmd_pidfile() { if multi; then echo "$DIR/run/slurmd-$1.pid"; else echo "$DIR/run/slurmd.pid"; fi; }
netns_of() { node_lines | awk -v n="$1" '$1 == n {print $3}'; }

# /etc/hosts is rewritten in place (it may be a bind mount that cannot be replaced).
hosts_remove_ours() {
  [[ -w /etc/hosts ]] && grep -qF "$HOSTS_MARK" /etc/hosts || return 0
  local keep
  keep=$(grep -vF "$HOSTS_MARK" /etc/hosts || true)
  printf '%s\n' "$keep" > /etc/hosts
}

# A multi-node cluster's network: the bridge with the controller's address, and per node a
# network namespace whose eth0 (one end of a veth pair, the other on the bridge) has the
# node's address. No default route in the namespaces: they reach the bridge's /24 only.
make_network() {
  local k name addr ns
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "bridge $BRIDGE exists (another cluster, or a start that was not stopped); '$0 stop' it or set SLURM_LOCAL_BRIDGE"
    return 1
  fi
  echo "$BRIDGE" > "$BRIDGE_FILE"
  ip link add name "$BRIDGE" type bridge
  ip addr add "$SUBNET.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  : > "$NODES_FILE"
  if [[ -s /etc/hosts && -n $(tail -c 1 /etc/hosts) ]]; then echo >> /etc/hosts; fi
  if grep -qE "^[^#]*[[:space:]]${PREFIX}1([[:space:]]|\$)" /etc/hosts; then
    log "/etc/hosts already names ${PREFIX}1 (another multi-node cluster?); set SLURM_LOCAL_NODE_PREFIX"
    return 1
  fi
  for ((k = 1; k <= NODES; k++)); do
    name=$PREFIX$k addr=$SUBNET.$((10 + k)) ns=$BRIDGE-$PREFIX$k
    if ip netns list | grep -qw "^$ns"; then log "network namespace $ns exists; '$0 stop' first"; return 1; fi
    echo "$name $addr $ns" >> "$NODES_FILE"
    ip netns add "$ns"
    ip link add "${BRIDGE}v$k" type veth peer name eth0 netns "$ns"
    ip link set "${BRIDGE}v$k" master "$BRIDGE" up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    printf '%s\t%s\t%s\n' "$addr" "$name" "$HOSTS_MARK" >> /etc/hosts
  done
}

remove_network() {
  local name addr ns p pids br
  while read -r name addr ns; do
    [[ $ns == - || -z $ns ]] && continue
    if ip netns list | grep -qw "^$ns"; then
      # what is left of the node (a killed node's tasks, stray slurmstepds) dies with it
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
      ip netns del "$ns" || log "WARNING: cannot delete network namespace $ns"
    fi
  done < <(node_lines)
  br=$(cat "$BRIDGE_FILE" 2>/dev/null || true)
  if [[ -n $br ]] && ip link show "$br" >/dev/null 2>&1; then ip link del "$br" || log "WARNING: cannot delete bridge $br"; fi
  hosts_remove_ours
  rm -f "$BRIDGE_FILE"
}

# start_slurmd NAME: in its namespaces (multi-node: network, and a new UTS namespace whose
# hostname is NAME). Not `ip netns exec`: its private /sys has no /sys/fs/cgroup, without
# which slurmd 22.05 does not start ("Unable to initialize cgroup plugin").
start_slurmd() {
  local ns; ns=$(netns_of "$1")
  if [[ $ns == - ]]; then
    slurmd -f "$CONF" -N "$1"
  else
    nsenter --net="/run/netns/$ns" unshare --uts -- sh -c 'hostname "$1" && exec slurmd -f "$2" -N "$1"' sh "$1" "$CONF"
  fi
}

# srun (and slurmd's I/O connections back to srun) use the address the hostname resolves
# to; if that is not loopback (unresolvable, or an address nothing listens on) srun hangs
# after the allocation.  Debian's convention is "127.0.1.1 <hostname>" in /etc/hosts.
ensure_loopback_hostname() {
  local n addr names=("$NODE")
  [[ $(hostname) != "$NODE" ]] && names+=("$(hostname)")
  for n in "${names[@]}"; do
    addr=$(getent hosts "$n" | awk '{print $1; exit}' || true)
    case $addr in 127.*|::1) continue ;; esac
    if [[ $(id -u) == 0 && -w /etc/hosts ]]; then
      log "hostname '$n' resolves to '${addr:-nothing}', not loopback: appending '127.0.1.1 $n' to /etc/hosts"
      if [[ -s /etc/hosts && -n $(tail -c 1 /etc/hosts) ]]; then echo >> /etc/hosts; fi   # no final newline
      printf '127.0.1.1\t%s\n' "$n" >> /etc/hosts
      addr=$(getent hosts "$n" | awk '{print $1; exit}' || true)
      case $addr in
        127.*|::1) ;;
        *) log "WARNING: '$n' still resolves to '$addr' (an earlier /etc/hosts line or DNS wins); fix /etc/hosts by hand if srun hangs" ;;
      esac
    else
      log "WARNING: hostname '$n' resolves to '${addr:-nothing}', not loopback; add '127.0.1.1 $n' to /etc/hosts (as root) if srun hangs"
    fi
  done
}

write_conf() {
  local mem authinfo="" acct
  mem=$(awk '/MemTotal/ {printf "%d", $2/1024*0.9}' /proc/meminfo)
  [[ $AUTH == munge ]] && authinfo="AuthInfo=socket=$MUNGE_SOCK"
  acct="# no slurmdbd: plain sacct reports 'Slurm accounting storage is disabled'
AccountingStorageType=accounting_storage/none"
  if [[ $DBD == 1 ]]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=${DBD_PORT}"
    # connections to slurmdbd take their munge socket from AccountingStoragePass, not from
    # AuthInfo; without it they use the default /run/munge socket and start hangs ~200 s
    [[ $AUTH == munge ]] && acct+="
AccountingStoragePass=${MUNGE_SOCK}"
    cat > "$DIR/etc/slurmdbd.conf" <<EOF
# generated by hpc/slurm-local.sh (slurmdbd finds it next to \$SLURM_CONF)
AuthType=auth/${AUTH}
${authinfo}
DbdHost=${NODE}
DbdAddr=127.0.0.1
DbdPort=${DBD_PORT}
SlurmUser=root
PidFile=${DIR}/run/slurmdbd.pid
LogFile=${DIR}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=${DB_PORT}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 0600 "$DIR/etc/slurmdbd.conf"   # slurmdbd refuses to start with a world-readable config
  fi
  local ctl_addr=127.0.0.1 slurmd_pid=${DIR}/run/slurmd.pid slurmd_log=${DIR}/log/slurmd.log
  local nodes_conf timeouts="" names
  if (( NODES > 1 )); then
    ctl_addr=$SUBNET.1 slurmd_pid=${DIR}/run/slurmd-%n.pid slurmd_log=${DIR}/log/slurmd-%n.log
    # a crashed node is noticed (and set DOWN) within ~SlurmdTimeout
    timeouts="SlurmdTimeout=${SLURMD_TIMEOUT}"
  fi
  nodes_conf=$(node_lines | while read -r name addr _; do
    echo "NodeName=${name} NodeAddr=${addr} CPUs=${CPUS} Sockets=1 CoresPerSocket=${CPUS} ThreadsPerCore=1 RealMemory=${mem} State=UNKNOWN"
  done)
  names=$(node_names | paste -sd, -)
  cat > "$CONF" <<EOF
# generated by hpc/slurm-local.sh
ClusterName=local
SlurmctldHost=${NODE}(${ctl_addr})
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/${AUTH}
CredType=cred/${AUTH}
${authinfo}
StateSaveLocation=${DIR}/state
SlurmdSpoolDir=${DIR}/spool/%n
SlurmctldPidFile=${DIR}/run/slurmctld.pid
SlurmdPidFile=${slurmd_pid}
SlurmctldLogFile=${DIR}/log/slurmctld.log
SlurmdLogFile=${slurmd_log}
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in containers/VMs without delegation: track processes via /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
${acct}
# job-completion log: 'sacct -c' reads it even without slurmdbd
JobCompType=jobcomp/filetxt
JobCompLoc=${DIR}/log/jobcomp.log
# pmi2 = what Debian's MPICH speaks under srun; Open MPI needs 'srun --mpi=pmix'.
# A mismatch does not fail: it starts n independent 1-rank jobs.
MpiDefault=${MPI_DEFAULT}
SchedulerType=sched/backfill
# start pending jobs within ~1s (defaults: main loop every 60s, backfill every 30s)
SchedulerParameters=sched_interval=1,bf_interval=1
# cancel jobs whose dependency can never be satisfied (e.g. afterok on a FAILED job)
# instead of leaving them PENDING forever (22.05: no longer a SchedulerParameters option)
DependencyParameters=kill_invalid_depend
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# trust the CPUs/memory declared below, not what slurmd detects: without this a node that
# declares more CPUs than it has is set INVALID and never takes jobs
SlurmdParameters=config_overrides
ReturnToService=2
# keep finished jobs visible to 'scontrol show job' / squeue -t all for an hour
MinJobAge=3600
KillWait=5
InactiveLimit=0
MailProg=/bin/true
${timeouts}
${nodes_conf}
PartitionName=debug Nodes=${names} Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  [[ $AUTH == munge ]] || return 0
  if alive "$DIR/munge/munged.pid" munged; then log "munged already running"; return 0; fi
  local d=$DIR   # munged insists on o+x for every directory above its socket
  while [[ $d != / ]]; do
    if (( (0$(stat -c %a "$d") & 1) == 0 )); then
      log "munged needs o+x on every parent of its socket, $d is mode $(stat -c %a "$d"); use another SLURM_LOCAL_DIR (or SLURM_LOCAL_AUTH=none)"
      return 1
    fi
    d=$(dirname "$d")
  done
  install -d -m 0700 "$DIR/munge-key"
  install -d -m 0755 "$DIR/munge"      # socket dir: munged requires o+x
  [[ -s $DIR/munge-key/munge.key ]] || mungekey -c -k "$DIR/munge-key/munge.key"
  chmod 0400 "$DIR/munge-key/munge.key"
  munged --key-file="$DIR/munge-key/munge.key" --log-file="$DIR/log/munged.log" \
         --pid-file="$DIR/munge/munged.pid" --seed-file="$DIR/munge-key/munged.seed" \
         -S "$MUNGE_SOCK"
  munge -S "$MUNGE_SOCK" -n | unmunge -S "$MUNGE_SOCK" >/dev/null
  log "munged pid $(pid_of "$DIR/munge/munged.pid")"
}

start_dbd() {
  [[ $DBD == 1 ]] || return 0
  if ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
    log "SLURM_LOCAL_DBD=1 needs slurmdbd + mariadb-server: hpc/setup-deps.sh --slurmdbd"; return 1
  fi
  local db=$DIR/mariadb
  rm -rf "$db"; install -d -m 0755 "$db" "$db/data"
  # a throw-away database per start; --no-defaults keeps /etc/mysql out of it
  mariadb-install-db --no-defaults --datadir="$db/data" --user=root --skip-test-db \
    --auth-root-authentication-method=normal > "$DIR/log/mariadb-install.log" 2>&1
  setsid -f mariadbd --no-defaults --datadir="$db/data" --user=root --bind-address=127.0.0.1 \
    --port="$DB_PORT" --socket="$db/mysqld.sock" --pid-file="$DIR/run/mariadbd.pid" \
    --log-error="$DIR/log/mariadbd.err" --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1
  for _ in $(seq 1 150); do mariadb-admin --no-defaults -S "$db/mysqld.sock" -uroot ping >/dev/null 2>&1 && break; sleep 0.2; done
  mariadb --no-defaults -S "$db/mysqld.sock" -uroot -e "
    CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  slurmdbd
  for _ in $(seq 1 150); do port_busy "$DBD_PORT" && break; sleep 0.2; done
  timeout 30 sacctmgr -i add cluster local >/dev/null
  log "mariadbd pid $(pid_of "$DIR/run/mariadbd.pid"), slurmdbd pid $(pid_of "$DIR/run/slurmdbd.pid")"
}

# wait_up [NODE...]: controller answers and every node (default: all of them) is
# idle/mixed/allocated (resume it if drained or down)
# (sinfo blocks ~8 s retrying when no controller answers: bound it)
node_state() { timeout 3 sinfo -h -n "$1" -o %T 2>/dev/null | head -1 || true; }
wait_up() {
  local n st="" deadline=$((SECONDS + WAIT)) nodes=("$@") pending
  (( ${#nodes[@]} > 0 )) || mapfile -t nodes < <(node_names)
  while (( SECONDS < deadline )); do
    pending=()
    for n in "${nodes[@]}"; do
      st=$(node_state "$n")
      case $st in
        idle|mixed|allocated|completing) ;;
        drain*|down*|invalid*) scontrol update NodeName="$n" State=RESUME 2>/dev/null || true; pending+=("$n") ;;
        *) pending+=("$n") ;;
      esac
    done
    (( ${#pending[@]} == 0 )) && return 0
    nodes=("${pending[@]}")
    sleep 0.3
  done
  log "node(s) ${nodes[*]} not usable after ${WAIT}s (state of ${nodes[-1]}: '${st:-no answer}'); logs in $DIR/log"
  return 1
}

start() {
  command -v slurmctld >/dev/null || { log "slurmctld not installed: hpc/setup-deps.sh"; exit 1; }
  # SlurmdUser=root: slurmd must be root to run jobs as the submitting user
  [[ $(id -u) == 0 ]] || { log "start needs root (slurmd runs as root)"; exit 1; }
  if alive "$DIR/run/slurmctld.pid" slurmctld || any_slurmd_alive; then
    log "already running"
    status || { log "only partly running: '$0 stop' first"; return 1; }
    return 0
  fi
  local ports=("$CTLD_PORT" "$SLURMD_PORT") p
  [[ $DBD == 1 ]] && ports+=("$DB_PORT" "$DBD_PORT")
  for p in "${ports[@]}"; do
    if port_busy "$p"; then log "port $p is in use; set SLURM_LOCAL_*_PORT"; exit 1; fi
  done
  if ! [[ $NODES =~ ^[0-9]+$ ]] || (( NODES < 1 || NODES > 200 )); then
    log "SLURM_LOCAL_NODES=$NODES: give a number of nodes from 1 to 200"; exit 2
  fi
  if (( NODES > 1 )) && ! command -v ip >/dev/null; then log "SLURM_LOCAL_NODES > 1 needs ip (iproute2)"; exit 1; fi
  if (( ${#BRIDGE} > 11 )); then log "SLURM_LOCAL_BRIDGE=$BRIDGE: at most 11 characters"; exit 2; fi
  local t0=$SECONDS n
  trap 'log "start failed; stopping whatever was started"; trap - ERR; stop; exit 1' ERR
  # a multi-node cluster of an earlier start that was not stopped (its network is still
  # there): remove it first
  if [[ -s $BRIDGE_FILE ]]; then remove_network; fi
  hosts_remove_ours   # lines of this directory's cluster that outlived it (no `stop`)
  rm -f "$NODES_FILE"
  rm -rf "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log.prev"
  # keep the previous run's logs; a fresh jobcomp.log, because job ids restart at 1 after a
  # clean start and 'sacct -c -j 1' would also report the old job 1
  if [[ -d $DIR/log ]]; then mv "$DIR/log" "$DIR/log.prev"; fi
  install -d -m 0755 "$DIR" "$DIR/etc" "$DIR/state" "$DIR/run" "$DIR/log"
  ensure_loopback_hostname
  if (( NODES > 1 )); then
    make_network
  else
    echo "$NODE 127.0.0.1 -" > "$NODES_FILE"
  fi
  for n in $(node_names); do install -d -m 0755 "$DIR/spool/$n"; done
  write_conf
  if [[ $LINK_ETC == 1 ]]; then
    install -d /etc/slurm
    if [[ -e $ETC_CONF && ! -L $ETC_CONF ]]; then
      log "$ETC_CONF exists and is not our symlink; leaving it (use: eval \"\$($0 env)\")"
    else
      ln -sfn "$CONF" "$ETC_CONF"
    fi
  fi
  start_munge
  start_dbd
  slurmctld -c -f "$CONF"            # -c: clean start, forget old jobs/state
  for n in $(node_names); do start_slurmd "$n"; done
  if ! wait_up; then
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR"/log/slurmd*.log >&2 || true
    false   # -> ERR trap: stop and exit 1
  fi
  trap - ERR
  if multi; then
    log "up in $((SECONDS - t0))s: slurmctld pid $(pid_of "$DIR/run/slurmctld.pid") on $SUBNET.1 (bridge $BRIDGE), $NODES nodes $(node_names | paste -sd, -) ($(node_state "${PREFIX}1")), CPUs=$CPUS each, SLURM_CONF=$CONF"
  else
    log "up in $((SECONDS - t0))s: slurmctld pid $(pid_of "$DIR/run/slurmctld.pid"), slurmd pid $(pid_of "$DIR/run/slurmd.pid"), node $NODE $(node_state "$NODE"), CPUs=$CPUS, SLURM_CONF=$CONF"
  fi
}

any_slurmd_alive() {
  local n
  for n in $(node_names); do alive "$(slurmd_pidfile "$n")" slurmd && return 0; done
  return 1
}

# kill_node NODE: the node crashes: every process in its network namespace is killed at
# once (slurmd, slurmstepd, the tasks), as a power cut would.
kill_node() {
  local ns pids
  ns=$(netns_of "$1")
  [[ -n $ns && $ns != - ]] || { log "kill-node: no node '$1' in a namespace (nodes: $(node_names | paste -sd' ' -))"; exit 2; }
  pids=$(ip netns pids "$ns" 2>/dev/null | paste -sd' ' - || true)
  # shellcheck disable=SC2086
  [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
  rm -f "$(slurmd_pidfile "$1")"
  log "killed node $1: pids ${pids:-none}"
}

start_node() {
  local ns
  ns=$(netns_of "$1")
  [[ -n $ns && $ns != - ]] || { log "start-node: no node '$1' in a namespace (nodes: $(node_names | paste -sd' ' -))"; exit 2; }
  if alive "$(slurmd_pidfile "$1")" slurmd; then log "slurmd of $1 already running"; else start_slurmd "$1"; fi
  wait_up "$1"
  log "node $1 is $(node_state "$1")"
}

# stop_pidfiles NAME:PIDFILE...: SIGTERM all of them at once,
# wait up to 10 s, then SIGKILL what is left.  Only pids that are still that program.
stop_pidfiles() {
  local n name pf p left
  local -A pids=()
  for n in "$@"; do
    name=${n%%:*} pf=${n#*:}
    if alive "$pf" "$name"; then
      p=$(pid_of "$pf"); pids[$p]=$name
      kill -TERM "$p" 2>/dev/null || true
    fi
    rm -f "$pf"
  done
  (( ${#pids[@]} > 0 )) || return 0
  for _ in $(seq 1 100); do
    left=0
    for p in "${!pids[@]}"; do running "$p" && left=1; done
    (( left )) || break
    sleep 0.1
  done
  for p in "${!pids[@]}"; do
    if running "$p"; then log "${pids[$p]} ($p) ignored SIGTERM for 10s; SIGKILL"; kill -KILL "$p" 2>/dev/null || true; fi
    log "stopped ${pids[$p]} ($p)"
  done
}

stop() {
  local t0=$SECONDS
  if alive "$DIR/run/slurmctld.pid" slurmctld; then
    # cancel everything still queued or running so no slurmstepd outlives slurmd
    local jobs
    mapfile -t jobs < <(squeue -h -o %i 2>/dev/null || true)
    if (( ${#jobs[@]} > 0 )); then
      log "cancelling jobs: ${jobs[*]}"
      scancel "${jobs[@]}" 2>/dev/null || true
      for _ in $(seq 1 50); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.2; done
    fi
  fi
  # Slurm daemons first (they still talk to each other, to munge and to MariaDB while
  # shutting down), then MariaDB and munged together
  local daemons=() n
  for n in $(node_names); do daemons+=(slurmd:"$(slurmd_pidfile "$n")"); done
  stop_pidfiles "${daemons[@]}" slurmctld:"$DIR/run/slurmctld.pid" slurmdbd:"$DIR/run/slurmdbd.pid"
  stop_pidfiles mariadbd:"$DIR/run/mariadbd.pid" munged:"$DIR/munge/munged.pid"
  if [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$CONF" ]]; then rm -f "$ETC_CONF"; fi
  # the nodes' namespaces (and anything still running in them), the bridge, /etc/hosts lines
  if [[ -s $BRIDGE_FILE ]] || multi; then remove_network; fi
  local steps
  steps=$(ps -C slurmstepd -o pid=,stat= 2>/dev/null | awk '$2 !~ /^Z/ {printf "%s ", $1}')
  if [[ -n $steps ]]; then log "WARNING: slurmstepd processes still running: $steps"; fi
  log "stopped in $((SECONDS - t0))s"
}

status() {
  local rc=0 n name pf daemons=(slurmctld:"$DIR/run/slurmctld.pid")
  for n in $(node_names); do daemons+=(slurmd:"$(slurmd_pidfile "$n")"); done
  for n in "${daemons[@]}" munged:"$DIR/munge/munged.pid" \
           slurmdbd:"$DIR/run/slurmdbd.pid" mariadbd:"$DIR/run/mariadbd.pid"; do
    name=${n%%:*} pf=${n#*:}
    if [[ $name == slurmd ]] && multi; then
      name="slurmd of $(basename "$pf" .pid | sed 's/^slurmd-//')"
      if alive "$pf" slurmd; then echo "$name: running (pid $(pid_of "$pf"))"; else echo "$name: not running"; rc=1; fi
    elif alive "$pf" "$name"; then echo "$name: running (pid $(pid_of "$pf"))"
    elif [[ $name == munged && $AUTH != munge ]]; then echo "munged: not used (auth/$AUTH)"
    elif [[ $name == slurmdbd || $name == mariadbd ]] && [[ $DBD != 1 ]]; then echo "$name: not used (SLURM_LOCAL_DBD=0)"
    else echo "$name: not running"; rc=1; fi
  done
  if [[ $rc == 0 ]]; then
    echo "SLURM_CONF=$CONF"
    timeout 10 scontrol ping || rc=1
    timeout 10 sinfo -N -o '%N %T %c %m %P' || rc=1
    timeout 10 squeue || rc=1
  fi
  return $rc
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  wait) wait_up ;;
  nodes) node_lines ;;
  kill-node) [[ -n ${2:-} ]] || { echo "usage: $0 kill-node NODE" >&2; exit 2; }; kill_node "$2" ;;
  start-node) [[ -n ${2:-} ]] || { echo "usage: $0 start-node NODE" >&2; exit 2; }; start_node "$2" ;;
  *) echo "usage: $0 start|stop|status|env|wait|nodes|kill-node NODE|start-node NODE" >&2; exit 2 ;;
esac
