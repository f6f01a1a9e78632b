#!/usr/bin/env bash
# A real single-node Slurm (slurmctld + slurmd + slurmdbd for sacct, munge) on this machine, then the smoke
# pipeline through `mtrl launch slurm`, checked with `mtrl status`. For Debian/Ubuntu, as root; it installs
# slurm-wlm, slurmdbd, munge and mariadb-server with apt-get and starts the daemons directly (no systemd needed).
#
# Usage (from the repository root):  sudo scripts/slurm/local_cluster.sh [RUN_DIR]     (default runs/slurm_smoke)
#   scripts/slurm/local_cluster.sh --start-only   only install and start the cluster (e.g. for tests/test_slurm.py)
#   scripts/slurm/local_cluster.sh --stop         stop the daemons it started
# MTRL: the command to run mtrl with (default: .venv/bin/python -m mtrl; the jobs inherit this environment).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
MTRL=${MTRL:-".venv/bin/python -m mtrl"}
CONF=/etc/slurm
STATE=/var/lib/slurm-local

stop() {  # by the pid files this script's daemons write, never by name
  for pidfile in "$STATE"/slurmd.pid "$STATE"/slurmctld.pid "$STATE"/slurmdbd.pid /run/mysqld/mysqld.pid \
                 /run/munge/munged.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
}
if [ "${1:-}" = "--stop" ]; then stop; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "error: run as root (apt-get and the Slurm daemons need it)" >&2; exit 2; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND until it succeeds
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "error: $what did not come up within ${limit}s (logs in $STATE)" >&2; exit 1
}

# 1. Packages (a no-op when present).
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm slurmdbd munge mariadb-server
fi
mkdir -p "$STATE"/{spool,ctld,mysql,log} /run/munge /run/mysqld "$CONF"
chown munge:munge /run/munge; chown mysql:mysql /run/mysqld "$STATE/mysql"

# 2. munge: authenticates the daemons and commands to each other.
[ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; }
pgrep -x munged >/dev/null || su -s /bin/sh munge -c "munged --force"
wait_for 10 munged sh -c "munge -n | unmunge"

# 3. MariaDB for slurmdbd (the accounting that sacct reads).
if ! pgrep -x mariadbd >/dev/null; then
  [ -d "$STATE/mysql/mysql" ] || mariadb-install-db --user=mysql --datadir="$STATE/mysql" >"$STATE/log/mariadb-install.log"
  mariadbd --user=mysql --datadir="$STATE/mysql" --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/mysqld.pid \
    --skip-networking=0 --bind-address=127.0.0.1 >"$STATE/log/mariadb.log" 2>&1 &
fi
wait_for 30 mariadb mariadb --socket=/run/mysqld/mysqld.sock -e "select 1"
mariadb --socket=/run/mysqld/mysqld.sock -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"

# 4. Config: one node with this machine's real CPUs and memory (slurmd -C), one default partition.
HOST=$(hostname -s)
NODE=$(slurmd -C | head -n 1)  # NodeName=<host> CPUs=... RealMemory=...
cat >"$CONF/slurm.conf" <<EOF
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# Containers often lack a delegated cgroup tree: track processes without cgroups.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
$NODE State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/slurmdbd.pid
EOF
chmod 600 "$CONF/slurmdbd.conf"

# 5. The daemons: accounting first, then the controller (it registers the cluster), then the node.
pgrep -x slurmdbd >/dev/null || slurmdbd
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster local >/dev/null 2>&1 || true
pgrep -x slurmctld >/dev/null || slurmctld
wait_for 30 slurmctld scontrol ping
pgrep -x slurmd >/dev/null || slurmd
wait_for 60 "node $HOST" sh -c "sinfo --noheader --nodes=$HOST --format=%t | grep -Eq '^(idle|mix|alloc)'"
sinfo
[ "${1:-}" = "--start-only" ] && exit 0

# 6. The smoke pipeline through the launcher, sized for this node (1 CPU and 2 GB per job).
RUN=${1:-runs/slurm_smoke}
start=$(date +%s)
$MTRL launch slurm --config configs/point_goal_arc.yaml --profile smoke --run-dir "$RUN" \
  --cpus 1 --mem-gb 2 --time-min 30 --threads 1 --wait
echo "wall time: $(( $(date +%s) - start ))s"
squeue
sacct --starttime "$(date -d "@$start" +%Y-%m-%dT%H:%M:%S)" --format=JobID%16,JobName%28,Partition,AllocCPUS,State,Elapsed,ExitCode
$MTRL status "$RUN" | tail -n 1
$MTRL status "$RUN" | tail -n 1 | grep -Eq '^([0-9]+) of \1 artifacts up to date$'
echo "ok: every artifact of $RUN is up to date"
