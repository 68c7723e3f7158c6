#!/usr/bin/env bash
# Open vSwitch for tellm's Mininet scenarios, without systemd (this machine's kernel has no
# openvswitch module, so bridges use the userspace datapath, datapath_type=netdev).
#
#   ovs.sh install   apt-get the packages the testbed needs (idempotent)
#   ovs.sh start     start ovsdb-server + ovs-vswitchd with ovs-ctl if they are not running
#   ovs.sh stop      stop them (bridges are removed first)
#   ovs.sh status    exit 0 and say so when ovs-vswitchd answers, 1 otherwise
#   ovs.sh cleanup [--full]
#                    remove what a crashed scenario left: all OVS bridges, Mininet's veths, Mininet
#                    host shells and stray iperf3/tellm traffic processes (by pid, found by their
#                    command line AND, for traffic, their network namespace). --full also runs `mn -c`,
#                    which on a shared machine is rude: it killall's every process named ping or
#                    controller and deletes /tmp/*.log of everyone.
#
# Every subcommand is idempotent. Run as root. Wrap anything that changes the network in
# `flock /tmp/tellm-mininet.lock ...` when several people share the machine (cleanup takes it itself
# unless TELLM_MININET_LOCK_HELD=1 says the caller holds it).
set -euo pipefail

OVS_CTL=/usr/share/openvswitch/scripts/ovs-ctl
LOCK=/tmp/tellm-mininet.lock
APT_PACKAGES=(openvswitch-switch mininet iperf3 iputils-ping ethtool iproute2)

die() { echo "ovs.sh: $*" >&2; exit 2; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (Open vSwitch and Mininet need it)"; }

running() { ovs-vsctl --timeout=2 show >/dev/null 2>&1 && ovs-appctl --timeout=2 -t ovs-vswitchd version >/dev/null 2>&1; }

cmd_install() {
  need_root
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "ovs.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

cmd_start() {
  need_root
  [[ -x $OVS_CTL ]] || die "$OVS_CTL not found: run '$0 install' first"
  if running; then
    echo "ovs.sh: Open vSwitch already running" >&2
    return 0
  fi
  # The daemons must not inherit our open descriptors: started under `flock LOCK ...` they would
  # otherwise hold /tmp/tellm-mininet.lock for as long as they run and block everyone else.
  # --no-monitor: no watchdog process (it needs systemd-style supervision we do not have here).
  # The 'ulimit' and 'no loadable module support' lines it prints are harmless on this kernel.
  # The subshell closes every descriptor above 2 first (see above).
  ( for fd in $(ls /proc/$BASHPID/fd); do ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null; done
    exec "$OVS_CTL" start --system-id=random --no-monitor >/tmp/tellm-ovs-ctl.log 2>&1 ) \
    || { cat /tmp/tellm-ovs-ctl.log >&2; die "ovs-ctl start failed"; }
  for _ in $(seq 50); do running && break; sleep 0.1; done
  running || { cat /tmp/tellm-ovs-ctl.log >&2; die "ovs-vswitchd does not answer after start"; }
  echo "ovs.sh: Open vSwitch started ($(ovs-vswitchd --version | head -1))" >&2
}

cmd_stop() {
  need_root
  if ! running && ! pgrep -x ovsdb-server >/dev/null && ! pgrep -x ovs-vswitchd >/dev/null; then
    echo "ovs.sh: Open vSwitch not running" >&2
    return 0
  fi
  local br
  for br in $(ovs-vsctl --timeout=2 list-br 2>/dev/null || true); do
    ovs-vsctl --timeout=2 --if-exists del-br "$br" || true
  done
  "$OVS_CTL" stop >/tmp/tellm-ovs-ctl.log 2>&1 || { cat /tmp/tellm-ovs-ctl.log >&2; die "ovs-ctl stop failed"; }
  echo "ovs.sh: Open vSwitch stopped" >&2
}

cmd_status() {
  if running; then
    echo "running: $(ovs-vswitchd --version | head -1); bridges: $(ovs-vsctl list-br | tr '\n' ' ')"
    return 0
  fi
  echo "not running"
  return 1
}

# Processes started inside Mininet hosts (iperf3 -D, tellm traffic senders/receivers) outlive
# net.stop(). They are recognised by living in a network namespace other than ours AND running one
# of our commands, then stopped by pid (never by a broad name match across the machine).
stray_pids() {
  local self_ns pid ns cmd
  self_ns=$(readlink /proc/$$/ns/net)
  for pid in $(pgrep -f 'iperf3|tellm.mininet_scenarios.(traffic|udpflows)' || true); do
    [[ $pid == "$$" ]] && continue
    ns=$(readlink "/proc/$pid/ns/net" 2>/dev/null) || continue
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
    [[ $ns != "$self_ns" ]] || continue
    case $cmd in
      *iperf3*|*tellm.mininet_scenarios.traffic*|*tellm.mininet_scenarios.udpflows*) echo "$pid" ;;
    esac
  done
  return 0
}

# Mininet host shells: `bash ... mininet:<host>` (what `mn -c` finds with pkill -f mininet:).
host_shell_pids() {
  local pid
  for pid in $(pgrep -f 'mininet:' || true); do
    [[ $pid == "$$" ]] && continue
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- '--norc.*mininet:'; then echo "$pid"; fi
  done
  return 0
}

do_cleanup() {
  local full=$1 pids br link
  pids="$(stray_pids) $(host_shell_pids)"
  pids=$(echo $pids)
  if [[ -n $pids ]]; then
    echo "ovs.sh: stopping stray traffic processes: $(echo $pids)" >&2
    kill $pids 2>/dev/null || true
    sleep 0.5
    kill -9 $pids 2>/dev/null || true
  fi
  if running; then
    for br in $(ovs-vsctl --timeout=5 list-br); do
      ovs-vsctl --timeout=10 --if-exists del-br "$br"
    done
  fi
  # Mininet's veths: <node>-eth<N> (switch ends stay in our namespace when a run crashes).
  for link in $(ip -o link | sed -n 's/^[0-9]*: \([^:@]*\).*/\1/p' | grep -E '^[A-Za-z0-9_]+-eth[0-9]+$' || true); do
    ip link del "$link" 2>/dev/null || true
  done
  if [[ $full == 1 ]] && command -v mn >/dev/null; then
    running || cmd_start
    mn -c >/tmp/tellm-mn-c.out 2>&1 || { cat /tmp/tellm-mn-c.out >&2; die "mn -c failed"; }
  fi
}

cmd_cleanup() {
  need_root
  local full=0
  [[ ${1:-} == --full ]] && full=1
  if [[ ${TELLM_MININET_LOCK_HELD:-0} == 1 ]]; then
    do_cleanup "$full"
  else
    exec 9>"$LOCK"
    flock 9
    do_cleanup "$full"
    exec 9>&-
  fi
  echo "ovs.sh: cleaned up" >&2
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  cleanup) cmd_cleanup "${2:-}" ;;
  -h|--help|help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
