"""Tests against real systems: Open vSwitch under Mininet (marker mininet, root), a real Prometheus,
servers as child processes."""
