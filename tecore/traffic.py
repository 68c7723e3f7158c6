"""Traffic matrices: seeded synthetic generators and the SNDlib demand-matrix reader.

A TrafficMatrix is dense [N, N] in bit/s with a zero diagonal; routers see it as one demand per
ordered pair of a PathSet (``pair_demands``). Generators return unit-free shapes scaled by
``scale_to_mlu`` (or to an absolute total) so that load is chosen explicitly, never by accident.
"""

from __future__ import annotations

import os
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .topology import Topology

SNDLIB_NS = "{http://sndlib.zib.de/network}"
_UNIT_BPS = {"MBITPERSEC": 1e6, "GBITPERSEC": 1e9, "KBITPERSEC": 1e3, "BITPERSEC": 1.0}


class TrafficError(ValueError):
    """Traffic input that cannot be used; the message names the file or field."""


@dataclass(frozen=True, eq=False)
class TrafficMatrix:
    demand_bps: np.ndarray  # float64 [N, N], zero diagonal
    label: str = ""  # e.g. "gravity#3" or an SNDlib timestamp

    def __post_init__(self) -> None:
        d = np.array(self.demand_bps, dtype=np.float64)
        if d.ndim != 2 or d.shape[0] != d.shape[1]:
            raise TrafficError(f"traffic matrix must be square, got shape {d.shape}")
        if not np.all(np.isfinite(d)) or np.any(d < 0):
            raise TrafficError("traffic matrix entries must be finite and >= 0")
        np.fill_diagonal(d, 0.0)
        object.__setattr__(self, "demand_bps", d)

    @property
    def total_bps(self) -> float:
        return float(self.demand_bps.sum())

    def pair_demands(self, pairs: np.ndarray) -> np.ndarray:
        """Demand of each (src, dst) row of ``pairs``: float64 [P]."""
        return self.demand_bps[pairs[:, 0], pairs[:, 1]]

    def scaled(self, factor: float) -> "TrafficMatrix":
        return TrafficMatrix(self.demand_bps * factor, self.label)


# --------------------------------------------------------------------- generators
def _offdiag(n: int) -> np.ndarray:
    return ~np.eye(n, dtype=bool)


def gravity(topo: Topology, rng: np.random.Generator) -> np.ndarray:
    """Gravity model with random node masses: D[i,j] ~ out_i * in_j, masses ~ Exp(1) (Roughan 2005)."""
    n = topo.num_nodes
    out_mass, in_mass = rng.exponential(1.0, n), rng.exponential(1.0, n)
    return np.outer(out_mass, in_mass) * _offdiag(n)


def uniform(topo: Topology, rng: np.random.Generator) -> np.ndarray:
    """Independent uniform demands in [0.1, 1)."""
    n = topo.num_nodes
    return rng.uniform(0.1, 1.0, (n, n)) * _offdiag(n)


def poisson(topo: Topology, rng: np.random.Generator, lam: float = 10.0) -> np.ndarray:
    """Independent Poisson counts (mean ``lam``): many small, some zero demands."""
    n = topo.num_nodes
    return rng.poisson(lam, (n, n)).astype(np.float64) * _offdiag(n)


def bimodal(topo: Topology, rng: np.random.Generator, elephant_fraction: float = 0.2) -> np.ndarray:
    """Mice and elephants: a fraction of pairs draw from a 10x larger normal distribution."""
    n = topo.num_nodes
    big = rng.random((n, n)) < elephant_fraction
    mice = np.abs(rng.normal(1.0, 0.25, (n, n)))
    elephants = np.abs(rng.normal(10.0, 2.5, (n, n)))
    return np.where(big, elephants, mice) * _offdiag(n)


def hotspot(topo: Topology, rng: np.random.Generator, hot_fraction: float = 0.1,
            factor: float = 10.0) -> np.ndarray:
    """Gravity background plus a few hot nodes whose sent and received demand is ``factor`` x larger."""
    n = topo.num_nodes
    base = gravity(topo, rng)
    hot = rng.choice(n, size=max(1, int(round(hot_fraction * n))), replace=False)
    boost = np.ones(n)
    boost[hot] = factor
    return base * np.maximum(boost[:, None], boost[None, :])


GENERATORS: dict[str, Callable[[Topology, np.random.Generator], np.ndarray]] = {
    "gravity": gravity,
    "uniform": uniform,
    "poisson": poisson,
    "bimodal": bimodal,
    "hotspot": hotspot,
}


def generate(topo: Topology, family: str, count: int, seed: int = 0,
             total_bps: float | None = None) -> list[TrafficMatrix]:
    """``count`` matrices of one family, reproducible from ``seed``.

    Without ``total_bps`` each matrix is scaled so that its total equals 10% of the network's total
    capacity (a moderate default); use ``scale_to_mlu`` for a target utilisation instead.
    """
    if family not in GENERATORS:
        raise TrafficError(f"unknown TM family {family!r}; choose from {', '.join(GENERATORS)}")
    if count < 1:
        raise TrafficError(f"count must be >= 1, got {count}")
    rng = np.random.default_rng(seed)
    target = total_bps if total_bps is not None else 0.1 * float(topo.capacity_bps.sum())
    out = []
    for i in range(count):
        d = GENERATORS[family](topo, rng)
        s = d.sum()
        out.append(TrafficMatrix(d * (target / s) if s > 0 else d, f"{family}#{i}"))
    return out


# --------------------------------------------------------------------- SNDlib demands
def _parse_demand_xml(data: bytes, where: str, node_index: dict[str, int], n: int,
                      strict: bool) -> tuple[np.ndarray, str]:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise TrafficError(f"{where}: not well-formed XML ({exc})") from None
    unit = (root.findtext(f"{SNDLIB_NS}meta/{SNDLIB_NS}unit") or "MBITPERSEC").strip().upper()
    if unit not in _UNIT_BPS:
        raise TrafficError(f"{where}: unknown demand unit {unit!r}")
    stamp = (root.findtext(f"{SNDLIB_NS}meta/{SNDLIB_NS}time") or where).strip()
    d = np.zeros((n, n))
    for dem in root.iter(f"{SNDLIB_NS}demand"):
        s, t = (dem.findtext(f"{SNDLIB_NS}source") or "").strip(), (dem.findtext(f"{SNDLIB_NS}target") or "").strip()
        if s not in node_index or t not in node_index:
            if strict:
                raise TrafficError(f"{where}: demand {dem.get('id')} uses node not in the topology "
                                   f"({s if s not in node_index else t!r})")
            continue
        try:
            v = float((dem.findtext(f"{SNDLIB_NS}demandValue") or "").strip())
        except ValueError:
            raise TrafficError(f"{where}: demand {dem.get('id')} has no numeric demandValue") from None
        if not np.isfinite(v) or v < 0:
            raise TrafficError(f"{where}: demand {dem.get('id')} has invalid value {v}")
        d[node_index[s], node_index[t]] += v * _UNIT_BPS[unit]
    return d, stamp


def read_sndlib_demands(source: str | os.PathLike, topo: Topology, limit: int | None = None,
                        skip_empty: bool = True, strict: bool = True) -> Iterator[TrafficMatrix]:
    """Yield the TMs of an SNDlib demand archive (.tar.xz/.tgz) or single XML file, in time order.

    Node ids must match ``topo`` (SNDlib networks loaded with ``load_sndlib_network`` do).
    Empty matrices (measurement gaps in the real data) are skipped unless ``skip_empty=False``.
    """
    source = Path(source)
    if not source.exists():
        raise TrafficError(f"{source}: no such file")
    idx, n = topo.node_index, topo.num_nodes
    count = 0
    if source.suffix == ".xml":
        d, stamp = _parse_demand_xml(source.read_bytes(), str(source), idx, n, strict)
        yield TrafficMatrix(d, stamp)
        return
    try:
        tar = tarfile.open(source)
    except (tarfile.TarError, OSError) as exc:
        raise TrafficError(f"{source}: not a readable tar archive ({exc})") from None
    with tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")),
                         key=lambda m: m.name)
        if not members:
            raise TrafficError(f"{source}: no .xml demand files inside")
        for m in members:
            fh = tar.extractfile(m)
            if fh is None:
                continue
            d, stamp = _parse_demand_xml(fh.read(), f"{source}:{m.name}", idx, n, strict)
            if skip_empty and not d.any():
                continue
            yield TrafficMatrix(d, stamp)
            count += 1
            if limit is not None and count >= limit:
                return


def find_sndlib_demands(topology_name: str) -> Path | None:
    """The demand archive in the data directory for an SNDlib network name, if any."""
    from .loaders import find_data_dir

    data = find_data_dir()
    if data is None:
        return None
    hits = sorted((data / "sndlib" / "demands").glob(f"directed-{topology_name.lower()}-*.tar.xz"))
    return hits[0] if hits else None
