"""The addressing contract between the controller and the hosts behind its switches.

Host j (1-based) of the switch with datapath id d has the address 10.<d // 256>.<d % 256>.<j> and the
MAC 00:00:0a:<d // 256>:<d % 256>:<j> (hex), so every switch's hosts live in one /24 and the controller
classifies traffic by destination switch with one rule per switch. Pure functions: the controller, the
Mininet testbed and tests all build and read addresses here.
"""

from __future__ import annotations

#: Testbed scenarios number their switches 1..MAX_DPID.
MAX_DPID = 255 * 256
SUBNET_MASK = "255.255.255.0"


def host_ip(dpid: int, j: int) -> str:
    """The address of host ``j`` of switch ``dpid``."""
    return f"10.{dpid // 256}.{dpid % 256}.{j}"


def host_mac(dpid: int, j: int) -> str:
    """The MAC of host ``j`` of switch ``dpid`` (mirrors its address)."""
    return f"00:00:0a:{dpid // 256:02x}:{dpid % 256:02x}:{j:02x}"


def host_subnet(dpid: int) -> tuple[str, str]:
    """(network, mask) of the hosts of switch ``dpid``: 10.<dpid // 256>.<dpid % 256>.0/24."""
    return host_ip(dpid, 0), SUBNET_MASK


def host_subnet_cidr(dpid: int) -> str:
    """The hosts of switch ``dpid`` as ``10.a.b.0/24``."""
    return f"{host_ip(dpid, 0)}/24"


def subnet_dpid(ip: str) -> int | None:
    """The switch whose hosts' subnet holds ``ip``; None for an address outside 10.0.0.0/8."""
    parts = ip.split(".")
    if len(parts) != 4 or parts[0] != "10":
        return None
    return int(parts[1]) * 256 + int(parts[2])
