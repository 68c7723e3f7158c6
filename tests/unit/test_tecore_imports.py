"""tecore's modules import one another in one direction only: no cycle, even through imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import tecore

PACKAGE_DIR = Path(tecore.__file__).parent


def tecore_import_graph() -> nx.DiGraph:
    """module -> tecore modules it imports (anywhere in the file), without the package __init__."""
    g = nx.DiGraph()
    for file in PACKAGE_DIR.glob("*.py"):
        if file.stem == "__init__":
            continue
        g.add_node(file.stem)
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    g.add_edge(file.stem, node.module.split(".")[0])
                elif node.level == 1:
                    g.add_edges_from((file.stem, a.name) for a in node.names)
                elif node.module and node.module.startswith("tecore."):
                    g.add_edge(file.stem, node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                g.add_edges_from((file.stem, a.name.split(".")[1]) for a in node.names
                                 if a.name.startswith("tecore."))
    return g


def test_tecore_has_no_import_cycle():
    g = tecore_import_graph()
    assert {"pathset", "paths", "optimum", "lp", "evaluate"} <= set(g)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import cycles in tecore: {cycles}"


def test_the_path_set_container_depends_on_the_topology_only():
    assert set(tecore_import_graph().successors("pathset")) == {"topology"}
