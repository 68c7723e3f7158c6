"""tellm's tests: ``unit`` (in-process, no root, no switches; seconds) and ``integration`` (real Open vSwitch
under Mininet, a real Prometheus, servers as child processes). Shared helpers live beside this file."""

from pathlib import Path

#: The repository root.
ROOT = Path(__file__).resolve().parents[1]
#: Recorded inputs of the tests (controller states, ...).
FIXTURES = ROOT / "tests" / "fixtures"
