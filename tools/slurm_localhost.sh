#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine (Debian/Ubuntu, as root), for testing profiles/slurm.
#
#   tools/slurm_localhost.sh install   apt-get install slurm-wlm munge when missing (root only; else says why, exits 0)
#   tools/slurm_localhost.sh start     install if needed, write the config, start munged, slurmctld, slurmd;
#                                      returns when `sinfo` shows the node idle (exit 0 at once if already up)
#   tools/slurm_localhost.sh status    exit 0 and print `sinfo` when the cluster answers, else exit 1
#   tools/slurm_localhost.sh stop      kill the daemons it started (by pid file) and remove their state
#
# The cluster: node "localhost" with the CPUs and memory `slurmd -C` reports, partitions `cpu` (default) and `gpu`
# (same node), no accounting (sacct does not work: use `--slurm-status-command squeue`), daemons started by hand
# (no systemd needed). Unless SLURM_LOCALHOST_GPUS=0, the node advertises one GPU slot, a gpu GRES with no GPU
# behind it (/dev/null), so that the profile's real GPU requests (--gpus=1) are scheduled as on a GPU node, one
# job at a time; such jobs still run on the CPU (torch finds no CUDA device).
# Finished jobs stay visible to squeue/scontrol for an hour (MinJobAge; tests/test_slurm.py checks them there; the
# plugin needs MinJobAge >= 3 x its first-poll delay to stay with squeue).
# It refuses to touch an /etc/slurm/slurm.conf that it did not write (a real cluster's).
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by tools/slurm_localhost.sh"
SPOOL_CTLD=/var/spool/slurmctld
SPOOL_D=/var/spool/slurmd
LOG_DIR=/var/log/slurm
STARTED_MUNGE=/run/slurm_localhost.munged   # present when this tool started munged (so stop kills it)
GPUS=${SLURM_LOCALHOST_GPUS:-1}
case "$GPUS" in
  0 | 1) ;;
  *) echo "slurm_localhost: SLURM_LOCALHOST_GPUS must be 0 or 1, not '$GPUS'" >&2; exit 1 ;;
esac

say() { echo "slurm_localhost: $*" >&2; }
die() { say "$*"; exit 1; }

installed() { command -v slurmctld && command -v slurmd && command -v sbatch && command -v munged; } >/dev/null 2>&1

cmd_install() {
  if installed; then return 0; fi
  if [ "$(id -u)" != 0 ]; then
    say "slurm-wlm/munge not installed and not root: not installing (the SLURM tests will be skipped)"
    return 0
  fi
  command -v apt-get >/dev/null || { say "slurm-wlm/munge not installed and no apt-get: not installing"; return 0; }
  say "installing slurm-wlm and munge with apt-get (about 10 s)"
  export DEBIAN_FRONTEND=noninteractive
  # apt-get update only when the package lists do not know slurm-wlm yet (fresh machine, empty lists).
  if ! apt-cache show slurm-wlm >/dev/null 2>&1; then apt-get update -qq; fi
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
  installed || die "apt-get install slurm-wlm munge finished but slurmctld/slurmd/sbatch/munged are still missing"
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() { sinfo -h -n localhost -o %t 2>/dev/null | head -1; }

cmd_status() {
  if alive /run/slurmctld.pid && alive /run/slurmd.pid && [ -n "$(node_state)" ]; then
    sinfo
    return 0
  fi
  say "not running"
  return 1
}

write_conf() {
  if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this tool (a real cluster?): refusing to overwrite it"
  fi
  # Real topology and memory from `slurmd -C`, with the node renamed to localhost (RealMemory must not exceed
  # what slurmd sees, or the node drains).
  local topo gres_line=""
  topo=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //')
  [ -n "$topo" ] || die "slurmd -C printed no node line"
  mkdir -p "$CONF_DIR" "$SPOOL_CTLD" "$SPOOL_D" "$LOG_DIR"
  if [ "$GPUS" = 1 ]; then gres_line="Gres=gpu:1"; fi
  cat >"$CONF" <<CONF
$MARK (one-node test cluster; \`tools/slurm_localhost.sh stop\` undoes it)
ClusterName=localcluster
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
MailProg=/bin/true
StateSaveLocation=$SPOOL_CTLD
SlurmdSpoolDir=$SPOOL_D
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
MinJobAge=3600
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=localhost $topo $gres_line State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP
CONF
  # GPU slots without device files: SLURM counts and allocates them, nothing is bound.
  echo "$MARK" >"$CONF_DIR/gres.conf"
  # slurmd counts a gpu GRES only with a device file; /dev/null stands in (nothing is bound: TaskPlugin=task/none).
  if [ "$GPUS" = 1 ]; then echo "NodeName=localhost Name=gpu File=/dev/null" >>"$CONF_DIR/gres.conf"; fi
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "start needs root (it writes $CONF and runs the daemons as root)"
  cmd_install
  installed || die "slurm-wlm/munge are not installed"
  if cmd_status >/dev/null 2>&1; then say "already running"; sinfo; return 0; fi
  local t0=$SECONDS
  # --- munge: Debian's postinst creates the key; /run/munge is systemd's job, so create it here.
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 755 /run/munge
  if ! alive /run/munge/munged.pid; then
    runuser -u munge -- /usr/sbin/munged
    touch "$STARTED_MUNGE"
  fi
  munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
  # --- slurm: stale daemons of an earlier start (pid files of dead processes) are ignored; -c = clean state.
  write_conf
  alive /run/slurmctld.pid || slurmctld -c
  alive /run/slurmd.pid || slurmd
  local state=""
  for _ in $(seq 1 60); do
    state=$(node_state)
    [ "$state" = idle ] && break
    sleep 0.5
  done
  [ "$state" = idle ] ||
    die "node not idle after 30 s (state '${state:-none}'); see $LOG_DIR/slurmctld.log and slurmd.log"
  say "up in $((SECONDS - t0)) s"
  sinfo
}

cmd_stop() {
  local f pids=()
  for f in /run/slurmd.pid /run/slurmctld.pid; do
    if alive "$f"; then pids+=("$(cat "$f")"); kill "$(cat "$f")" 2>/dev/null || true; fi
  done
  if [ -e "$STARTED_MUNGE" ] && alive /run/munge/munged.pid; then
    pids+=("$(cat /run/munge/munged.pid)")
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
  fi
  rm -f "$STARTED_MUNGE"
  local p
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  done
  # Clean state: job and node state, spool, pid files; the config stays only if it is ours (removed too).
  rm -rf "${SPOOL_CTLD:?}"/* "${SPOOL_D:?}"/* /run/slurmctld.pid /run/slurmd.pid
  if [ -e "$CONF" ] && grep -qF "$MARK" "$CONF"; then rm -f "$CONF" "$CONF_DIR/gres.conf"; fi
  say "stopped"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' ;;
  *) die "usage: tools/slurm_localhost.sh install|start|stop|status (--help for details)" ;;
esac
