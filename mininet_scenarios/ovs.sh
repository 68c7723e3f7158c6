#!/usr/bin/env bash
# Start/stop/check Open vSwitch without systemd (userspace datapath machines; see
# shared/notes/openflow-on-this-machine.md). Usage: mininet_scenarios/ovs.sh start|stop|status
set -euo pipefail
CTL=/usr/share/openvswitch/scripts/ovs-ctl
case "${1:-status}" in
  start)  "$CTL" status >/dev/null 2>&1 || "$CTL" start --system-id=random --no-monitor ;;
  stop)   "$CTL" stop ;;
  status) "$CTL" status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
