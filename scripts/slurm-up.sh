#!/usr/bin/env bash
# Starts a real one-node Slurm cluster on loopback (Debian's slurmctld, slurmd, munge),
# installing the packages if they are missing. For the sweep tests and for trying the Slurm
# launcher on one machine; on a real cluster, use the cluster's own Slurm instead.
#   scripts/slurm-up.sh      # idempotent: does nothing when ours is already running
#   scripts/slurm-down.sh    # stops only the daemons this script started (by pid file)
# Needs root (package install, munge's user). State, logs and pid files: $COMPRESS_SLURM_DIR
# (default /tmp/compress-slurm).
set -euo pipefail
state="${COMPRESS_SLURM_DIR:-/tmp/compress-slurm}"
conf="$state/slurm.conf"
export SLURM_CONF="$conf"

alive() { # a pid file whose process runs (a zombie does not count)
    [ -f "$1" ] || return 1
    local pid; pid="$(cat "$1")"
    [ -r "/proc/$pid/stat" ] || return 1
    local s; s="$(awk '{print $3}' "/proc/$pid/stat")"
    [ "$s" != "Z" ]
}

if alive "$state/slurmctld.pid" && alive "$state/slurmd.pid" && sinfo -h >/dev/null 2>&1; then
    echo "$conf"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    echo "installing slurmctld slurmd slurm-client munge (Debian packages)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >&2; }
fi

mkdir -p "$state/spool" "$state/state" "$state/log"
: > "$state/started"

# munge: its own key and daemon, as user munge; reuse one that already runs.
# (A stopped daemon can linger here as a zombie: only a live pid counts.)
if ! alive /run/munge/munged.pid; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    [ -f /etc/munge/munge.key ] || mungekey --create >&2 || /usr/sbin/create-munge-key -f >&2
    chown -R munge: /run/munge /var/log/munge /var/lib/munge /etc/munge
    chmod 0700 /etc/munge
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do [ -f /run/munge/munged.pid ] && break; sleep 0.1; done
    echo "/run/munge/munged.pid" >> "$state/started"
fi

host="$(hostname -s)"
cpus="$(nproc)"
mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
cat > "$conf" <<CONF
ClusterName=compress
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
KillWait=2
MinJobAge=3600
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
StateSaveLocation=$state/state
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF

slurmctld -f "$conf"
slurmd -f "$conf"
echo "$state/slurmctld.pid" >> "$state/started"
echo "$state/slurmd.pid" >> "$state/started"
for _ in $(seq 100); do
    sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break
    sleep 0.1
done
# Jobs stay pending for a few seconds after slurmctld starts: one warm-up job, waited for.
job="$(sbatch --parsable -o /dev/null --wrap true)"
for _ in $(seq 200); do
    squeue -h -j "$job" 2>/dev/null | grep -q . || break
    sleep 0.1
done
echo "$conf"
