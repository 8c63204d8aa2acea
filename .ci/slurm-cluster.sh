#!/usr/bin/env bash
# .ci/slurm-cluster.sh: a real single-node SLURM 22.05 cluster on loopback, for CI.
#
# It lets the workflow's SLURM path (`snakemake --profile slurm ...`) be tested end to end on one
# Debian 12 (bookworm) machine without systemd, run as root: every job goes through sbatch and is
# tracked to completion by snakemake-executor-plugin-slurm. tests/test_slurm.py uses it; so can
# your own CI. It starts munged, [MariaDB + slurmdbd for accounting], slurmctld and slurmd, and
# stops only the daemons it started itself, by the PIDs it recorded (never by name).
#
#   bash .ci/slurm-cluster.sh install   apt packages (idempotent; apt-get update only when needed)
#   bash .ci/slurm-cluster.sh start     write configs, start the daemons (idempotent; ~3-7 s)
#   bash .ci/slurm-cluster.sh stop      stop ONLY the daemons this script started, by recorded PID
#   bash .ci/slurm-cluster.sh status    which daemons are ours, and sinfo
#   bash .ci/slurm-cluster.sh logs      tail of the daemon logs (for a failed CI job)
#
# Then, from the repository root (the profile reads the partition and account from the env):
#   SSVI_SLURM_PARTITION=debug SSVI_SLURM_ACCOUNT=ci \
#     timeout -k 30 900 snakemake --profile slurm --configfile config/test_slurm.yaml runs
#
# Cluster: one node named $(hostname -s) at 127.0.0.1, partition `debug`, account `ci` (with
# accounting), select/cons_tres, proctrack/linuxproc, task/none, MinJobAge=600.
#
# Env:
#   SLURM_CI_ACCOUNTING=1  1: slurmdbd + MariaDB (sacct works; the plugin's default status command)
#                          0: no accounting; the profile must then set `slurm-status-command: squeue`
#                             (otherwise the plugin polls sacct, every query fails silently and
#                             Snakemake waits forever)
#   SLURM_CI_FAKE_GPU=0    1: advertise one GPU backed by /dev/null so rules requesting gpu=1 are
#                             scheduled and run (there is no real GPU behind it: code must fall back
#                             to CPU, as `python -m ssvi train` does with device: auto)
#   SLURM_CI_USER          user to register in the accounting DB (default: the current user)
#   SLURM_CI_PARTITION     partition name (default: debug)
#   SLURM_CI_ACCOUNT       account name (default: ci)
#   SLURM_CI_STATE         where our daemons' PIDs are recorded (default: /run/slurm-ci)
#
# Known noise (ignorable): PMIx library warnings, "cluster configuration lacks support for cpu
# binding", InnoDB settings warnings. Installing mariadb-server upgrades perl and pulls galera,
# rsync and socat. Adapted from a recipe tested with Snakemake 9.27.1 and plugin 2.8.0.
set -euo pipefail

ACCOUNTING=${SLURM_CI_ACCOUNTING:-1}
FAKE_GPU=${SLURM_CI_FAKE_GPU:-0}
CI_USER=${SLURM_CI_USER:-$(id -un)}
STATE=${SLURM_CI_STATE:-/run/slurm-ci}   # PIDs of the daemons *we* started
PARTITION=${SLURM_CI_PARTITION:-debug}
ACCOUNT=${SLURM_CI_ACCOUNT:-ci}
CONF=/etc/slurm
LOG=/var/log/slurm
CLUSTER=ci
DB_PASS=slurmci                          # loopback-only, socket-only DB; not a secret
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

log() { echo "[slurm-cluster] $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------- pid helpers ---------------------------------------------------------------
alive() {   # alive PID COMM -> true if PID runs and its comm is COMM
  local p=$1 c=$2
  [[ -n $p && -r /proc/$p/comm ]] && [[ $(cat "/proc/$p/comm" 2>/dev/null) == "$c" ]]
}
ours_alive() { [[ -s $STATE/$1.pid ]] && alive "$(cat "$STATE/$1.pid")" "$1"; }
foreign_alive() { [[ -s $1 ]] && alive "$(cat "$1")" "$2"; }  # pidfile comm
wait_for() {   # wait_for SECONDS DESCRIPTION CMD...
  local t=$1 what=$2; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then log "timeout waiting for $what"; return 1; fi
    sleep 0.3
  done
}
record() {   # record NAME DAEMON_PIDFILE: copy the daemon's pid into our state dir
  local name=$1 pf=$2
  wait_for 30 "$name pid file" test -s "$pf"
  cat "$pf" > "$STATE/$name.pid"
  alive "$(cat "$STATE/$name.pid")" "$name" || { log "$name did not stay up (see $LOG)"; return 1; }
  log "$name started, pid $(cat "$STATE/$name.pid")"
}
stop_one() {   # stop_one NAME: TERM, wait, KILL -- only the pid we recorded, only if comm matches
  local name=$1 pf=$STATE/$1.pid p
  [[ -s $pf ]] || return 0
  p=$(cat "$pf")
  if alive "$p" "$name"; then
    kill -TERM "$p"
    for _ in $(seq 1 100); do alive "$p" "$name" || break; sleep 0.2; done
    if alive "$p" "$name"; then log "$name ($p) ignored TERM, sending KILL"; kill -KILL "$p"; fi
    log "$name ($p) stopped"
  fi
  rm -f "$pf"
}

# ---------- checks --------------------------------------------------------------------
check_platform() {
  [[ $(id -u) == 0 ]] || die "must run as root (it starts system daemons and writes /etc/slurm)"
  [[ -r /etc/debian_version ]] || die "written for Debian 12 (apt, Debian's slurm-wlm 22.05 packages)"
}
check_installed() {
  local b missing=()
  for b in munged slurmctld slurmd sbatch sinfo; do command -v "$b" >/dev/null || missing+=("$b"); done
  if [[ $ACCOUNTING == 1 ]]; then
    for b in slurmdbd mariadbd sacctmgr; do command -v "$b" >/dev/null || missing+=("$b"); done
  fi
  ((${#missing[@]} == 0)) || die "missing ${missing[*]}: run '$0 install' first (same SLURM_CI_ACCOUNTING)"
}

# ---------- install -------------------------------------------------------------------
do_install() {
  check_platform
  export DEBIAN_FRONTEND=noninteractive
  local pkgs=(munge slurmctld slurmd slurm-client)
  [[ $ACCOUNTING == 1 ]] && pkgs+=(slurmdbd mariadb-server)
  if dpkg -s "${pkgs[@]}" >/dev/null 2>&1; then log "packages already installed"; return; fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${pkgs[@]}"
}

# ---------- configs -------------------------------------------------------------------
write_slurm_conf() {
  local host mem node gres_types="" node_gres="" acct
  host=$(hostname -s)
  # RealMemory must not exceed what slurmd detects; keep 1 GiB margin
  mem=$(( $(free -m | awk '/^Mem:/{print $2}') - 1024 ))
  # take the hardware layout slurmd detects (CPUs, sockets, cores, threads), override memory
  node=$(slurmd -C | head -1 | sed -E "s/RealMemory=[0-9]+/RealMemory=${mem}/")
  if [[ $FAKE_GPU == 1 ]]; then
    # a count-only GRES (no File=) drains the node and jobs pend forever: back it by /dev/null
    gres_types="GresTypes=gpu"; node_gres="Gres=gpu:1"
    echo "NodeName=${host} Name=gpu File=/dev/null" > "$CONF/gres.conf"
  else
    rm -f "$CONF/gres.conf"
  fi
  if [[ $ACCOUNTING == 1 ]]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
    # record GPU allocations too, so `sacct --format=AllocTRES` shows gres/gpu=N per job
    [[ $FAKE_GPU == 1 ]] && acct+="
AccountingStorageTRES=gres/gpu"
  else
    acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi
  cat > "$CONF/slurm.conf" <<EOF
# single-node CI cluster, loopback only (written by .ci/slurm-cluster.sh)
ClusterName=${CLUSTER}
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOG}/slurmctld.log
SlurmdLogFile=${LOG}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
# no cgroups: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
# keep finished jobs visible to squeue/scontrol for 10 min (needed if status is polled via squeue:
# MinJobAge >= 3 x slurm-init-seconds-before-status-checks, else the plugin falls back to sacct)
MinJobAge=600
JobCompType=jobcomp/none
${acct}
${gres_types}
${node} NodeAddr=127.0.0.1 ${node_gres} State=UNKNOWN
PartitionName=${PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

write_slurmdbd_conf() {
  cat > "$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=${LOG}/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=${DB_PASS}
EOF
  chmod 600 "$CONF/slurmdbd.conf"   # slurmdbd refuses a world-readable file
}

# ---------- start ---------------------------------------------------------------------
start_munged() {
  if ours_alive munged || foreign_alive /run/munge/munged.pid munged; then log "munged already running"; return; fi
  if [[ ! -s /etc/munge/munge.key ]]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key
  fi
  chown munge:munge /etc/munge/munge.key; chmod 0600 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge
  install -d -o munge -g munge -m 0711 /var/lib/munge
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged          # forks; writes /run/munge/munged.pid
  record munged /run/munge/munged.pid
  wait_for 20 "munge" bash -c 'munge -n | unmunge'
}

start_mariadbd() {
  if ours_alive mariadbd || foreign_alive /run/mysqld/mysqld.pid mariadbd; then log "mariadbd already running"; return; fi
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  install -d -o mysql -g adm -m 2750 /var/log/mysql
  if [[ ! -d /var/lib/mysql/mysql ]]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
  fi
  rm -f /run/mysqld/mysqld.pid
  # mariadbd does not daemonize: detach it; socket only, no TCP port
  setsid /usr/sbin/mariadbd --user=mysql --skip-networking --skip-log-bin \
    --pid-file=/run/mysqld/mysqld.pid --socket=/run/mysqld/mysqld.sock \
    --log-error=/var/log/mysql/mariadbd-ci.log </dev/null >/dev/null 2>&1 &
  wait_for 60 "mariadb" mariadb-admin --protocol=socket ping
  record mariadbd /run/mysqld/mysqld.pid
  mariadb --protocol=socket -u root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DB_PASS}';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurmdbd() {
  if ours_alive slurmdbd || foreign_alive /run/slurmdbd.pid slurmdbd; then log "slurmdbd already running"; return; fi
  rm -f /run/slurmdbd.pid
  slurmdbd                                         # forks; writes /run/slurmdbd.pid
  record slurmdbd /run/slurmdbd.pid
  # sacctmgr works only once slurm.conf points at slurmdbd (written before this)
  wait_for 60 "slurmdbd" sacctmgr -n show cluster
  if [[ -z $(sacctmgr -n -P show cluster where name=$CLUSTER format=cluster) ]]; then
    sacctmgr -i add cluster $CLUSTER >/dev/null
  fi
}

start_slurm() {
  if ours_alive slurmctld || foreign_alive /run/slurmctld.pid slurmctld; then
    log "slurmctld already running"; scontrol reconfigure || true
  else
    rm -f /run/slurmctld.pid
    slurmctld                                      # forks; writes /run/slurmctld.pid
    record slurmctld /run/slurmctld.pid
  fi
  wait_for 60 "slurmctld" scontrol ping
  if ours_alive slurmd || foreign_alive /run/slurmd.pid slurmd; then log "slurmd already running"; else
    rm -f /run/slurmd.pid
    slurmd                                         # forks; writes /run/slurmd.pid
    record slurmd /run/slurmd.pid
  fi
  local host; host=$(hostname -s)
  # a node left DOWN/DRAIN by an earlier run: resume it
  if sinfo -h -n "$host" -o '%T' | grep -qiE 'down|drain|inval'; then
    scontrol update nodename="$host" state=resume || true
  fi
  wait_for 60 "node $host idle" bash -c "sinfo -h -n $host -o '%T' | grep -qE '^(idle|mixed|allocated)'"
}

setup_accounts() {
  if [[ -z $(sacctmgr -n -P show account "$ACCOUNT" format=account) ]]; then
    sacctmgr -i add account "$ACCOUNT" Description=ci Organization=ci >/dev/null
  fi
  if [[ -z $(sacctmgr -n -P show assoc where user="$CI_USER" account="$ACCOUNT" format=user) ]]; then
    sacctmgr -i add user "$CI_USER" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null
  fi
}

do_start() {
  check_platform
  check_installed
  local t0=$SECONDS
  install -d -m 0755 "$STATE" "$CONF" "$LOG" /var/spool/slurmctld /var/spool/slurmd
  write_slurm_conf
  start_munged
  if [[ $ACCOUNTING == 1 ]]; then
    write_slurmdbd_conf
    start_mariadbd
    start_slurmdbd
  fi
  start_slurm
  [[ $ACCOUNTING == 1 ]] && setup_accounts
  log "cluster up in $((SECONDS - t0)) s (partition ${PARTITION}$([[ $ACCOUNTING == 1 ]] && echo ", account ${ACCOUNT}"))"
  sinfo
}

do_stop() {
  # reverse order; each only if we recorded its pid
  local i
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_one "${DAEMONS[i]}"; done
}

do_status() {
  local n
  for n in "${DAEMONS[@]}"; do
    if ours_alive "$n"; then echo "$n: running (ours, pid $(cat "$STATE/$n.pid"))"; else echo "$n: not started by us"; fi
  done
  sinfo 2>/dev/null || true
}

do_logs() {
  local f
  for f in "$LOG"/slurmctld.log "$LOG"/slurmd.log "$LOG"/slurmdbd.log /var/log/mysql/mariadbd-ci.log; do
    [[ -r $f ]] && { echo "==> $f <=="; tail -n "${SLURM_CI_LOG_LINES:-40}" "$f"; }
  done
  return 0
}

case ${1:-} in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  logs) do_logs ;;
  *) echo "usage: $0 install|start|stop|status|logs" >&2; exit 2 ;;
esac
