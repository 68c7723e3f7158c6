"""tecore: torch-free traffic-engineering math shared by every part of tellm.

Topologies and their loaders, candidate path sets (sparse path-link incidence), traffic matrices,
link loads / MLU / ECMP, and the min-MLU LP optimum (HiGHS).
"""

from .evaluate import (check_split, ecmp_link_loads, ecmp_mlu, link_loads, mlu, scale_to_mlu,
                       shortest_path_split, split_mlu, uniform_split)
from .loaders import load_graphml, load_sndlib_network, load_topology, load_yaml_topology
from .lp import LPError, LPResult, solve_min_mlu
from .paths import compute_paths
from .pathset import PathError, PathSet
from .topology import DEFAULT_CAPACITY_BPS, Topology, TopologyError
from .traffic import TrafficError, TrafficMatrix, generate, read_sndlib_demands

__all__ = [
    "DEFAULT_CAPACITY_BPS", "LPError", "LPResult", "PathError", "PathSet", "Topology", "TopologyError",
    "TrafficError", "TrafficMatrix", "check_split", "compute_paths", "ecmp_link_loads", "ecmp_mlu",
    "generate", "link_loads", "load_graphml", "load_sndlib_network", "load_topology",
    "load_yaml_topology", "mlu", "read_sndlib_demands", "scale_to_mlu", "shortest_path_split",
    "solve_min_mlu", "split_mlu", "uniform_split",
]
