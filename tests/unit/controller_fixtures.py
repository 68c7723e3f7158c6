"""Small networks shared by the controller's unit tests."""

from __future__ import annotations

import networkx as nx
import numpy as np

from tecore import PathSet, Topology


def diamond(cap=10e6) -> Topology:
    """s1 - s2 - s4 and s1 - s3 - s4, both directions."""
    und = [(0, 1), (0, 2), (1, 3), (2, 3)]
    src = [u for u, v in und] + [v for u, v in und]
    dst = [v for u, v in und] + [u for u, v in und]
    n = len(src)
    return Topology("diamond", ("s1", "s2", "s3", "s4"), np.array(src), np.array(dst), np.full(n, cap),
                    np.ones(n), np.full(n, 1e-3))


def diamond_paths(topo):
    paths = {}
    for s in range(4):
        for d in range(4):
            if s == d:
                continue
            g = nx.DiGraph(list(zip(topo.src.tolist(), topo.dst.tolist())))
            paths[(s, d)] = sorted(nx.all_simple_paths(g, s, d), key=lambda p: (len(p), p))[:2]
    return PathSet.from_node_paths(topo, paths)
