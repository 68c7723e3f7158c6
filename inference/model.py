"""The TE head: a learned iterative optimiser over candidate paths (PyTorch; training/export only).

Design (one set of weights for any topology, no padding):
- Every quantity the network sees is relative: demands over the largest demand, capacities over the
  largest capacity, path hops/latency over the pair's shortest candidate, link utilisation over the
  current MLU, the MLU gradient of a path over the current MLU. Scaling a TM or all capacities by any
  factor therefore leaves the split unchanged (min-MLU is scale-invariant, so is the model).
- An MLP gives initial logits from static per-path features; then R refinement rounds with shared
  weights: segment softmax per pair -> link loads (scatter-add over the path-link incidence) ->
  utilisation / MLU -> per-path features of the current state (bottleneck utilisation, whether the path
  crosses a near-max link, the path's share of the soft-max link "price", its advantage over the pair's
  average) -> an MLP gives a logit correction, plus a learned-step mirror-descent move along the
  normalised price advantage. Cost per round is a handful of scatter/gather ops: linear in #paths.
- Utilisation-derived features are detached (the rounds are an optimiser whose observations are not
  differentiated through), which keeps training cheap and stable.
- Policy conditioning (``policy`` = [lambda, h, 0, 0], see tellm.contract.policies and
  tecore.objectives): the rounds optimise the policy's objective, not plain MLU. Utilisation is the
  effective one: load plus h times a soft maximum of the path flows on the link (the power mean
  sum f^Q / sum f^(Q-1), a stand-in for the largest pair load that costs two more columns in the
  link sums instead of a scatter-max over every path-link entry: measured 2.3x slower on Kdl); the
  path "price" adds h times the soft indicator (f_p / surge_l)^(Q-1) that the path is that largest
  flow (it factorises, so it is one more column in the path sums), and the gradient adds lambda
  times the path's share of the latency stretch. lambda and h are
  also inputs of both MLPs, which learn to use them in training (policies sampled per instance).
  Unlike min-MLU, latency_aware is not scale-invariant (it trades utilisation for stretch); the
  gradient relative to the current utilisation carries that scale.

Batches of several instances are disjoint unions: ``link_graph``/``pair_graph`` give the instance of
each link/pair; graph-level reductions (max demand, MLU) are per instance. The exported inference
graph (padded_graph.py) computes the same function for one instance in a layout built for ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

BIG = 1.0e4  # logit penalty for paths over a down link (exp(-1e4) == 0 in float32)
SURGE_Q = 4.0  # power of the soft maximum of path flows per link (headroom observation)
TINY = 1.0e-30


@dataclass
class ModelConfig:
    hidden: int = 64
    rounds: int = 8
    beta: float = 20.0  # sharpness of the soft "max link" weights, in units of utilisation / MLU

    def to_dict(self) -> dict:
        return asdict(self)


N_STATIC = 8
MAX_ROUND_PARAMS = 32
N_DYNAMIC = 11


def seg_sum(x: torch.Tensor, idx: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """out[i] = sum of x[j] with idx[j] == i; ``like`` gives the output's shape (dynamic in ONNX)."""
    return torch.zeros_like(like, dtype=x.dtype).scatter_add(0, idx, x)


def seg_max(x: torch.Tensor, idx: torch.Tensor, like: torch.Tensor, floor: float = -3.0e38) -> torch.Tensor:
    """out[i] = max of x[j] with idx[j] == i (``floor`` where none)."""
    return torch.full_like(like, floor, dtype=x.dtype).scatter_reduce(0, idx, x, reduce="amax", include_self=True)


class Graph:
    """Index tensors of one batch, with helpers for per-instance (graph-level) reductions."""

    def __init__(self, path_pair, inc_path, inc_link, num_pairs_like, num_links_like, num_paths_like,
                 link_graph=None, pair_graph=None, graphs_like=None, layout: "SparseLayout | None" = None):
        self.path_pair, self.inc_path, self.inc_link = path_pair, inc_path, inc_link
        self.P, self.L, self.Np = num_pairs_like, num_links_like, num_paths_like
        self.link_graph, self.pair_graph, self.G = link_graph, pair_graph, graphs_like
        self.layout = layout

    # Path-link incidence ops. Scatter/gather (ONNX-exportable, used in training) unless a SparseLayout
    # is given (torch inference on large graphs: cuSPARSE SpMV/SpMM instead of atomics on few links).
    def path_sum_links(self, x_link):
        """Sum over each path's links of a per-link quantity: [L] -> [Np] (or [L, k] -> [Np, k])."""
        if self.layout is not None:
            return self.layout.path_link @ x_link if x_link.dim() == 2 else \
                (self.layout.path_link @ x_link.unsqueeze(1)).squeeze(1)
        if x_link.dim() == 2:
            return torch.stack([seg_sum(x_link[:, i][self.inc_link], self.inc_path, self.Np)
                                for i in range(x_link.shape[1])], dim=1)
        return seg_sum(x_link[self.inc_link], self.inc_path, self.Np)

    def path_max_links(self, x_link, floor: float = -3.0e38):
        """Max over each path's links: [L] -> [Np]. (torch.segment_reduce over the CSR rows was measured
        slower than this scatter on an H100 for Kdl: 210 vs 165 ms per TM.)"""
        return seg_max(x_link[self.inc_link], self.inc_path, self.Np, floor=floor)

    def link_sum_paths(self, x_path):
        """Sum over the paths through each link: [Np] -> [L] (or [Np, k] -> [L, k])."""
        if self.layout is not None:
            return self.layout.link_path @ x_path if x_path.dim() == 2 else \
                (self.layout.link_path @ x_path.unsqueeze(1)).squeeze(1)
        if x_path.dim() == 2:
            return torch.stack([seg_sum(x_path[:, i][self.inc_path], self.inc_link, self.L)
                                for i in range(x_path.shape[1])], dim=1)
        return seg_sum(x_path[self.inc_path], self.inc_link, self.L)

    def link_max(self, x):  # -> value per link, broadcast from its instance
        if self.link_graph is None:
            return x.max(dim=0, keepdim=True).values
        return seg_max(x, self.link_graph, self.G)[self.link_graph]

    def link_sum(self, x):
        if self.link_graph is None:
            return x.sum(dim=0, keepdim=True)
        return seg_sum(x, self.link_graph, self.G)[self.link_graph]

    def pair_max(self, x):
        if self.pair_graph is None:
            return x.max(dim=0, keepdim=True).values
        return seg_max(x, self.pair_graph, self.G)[self.pair_graph]

    def path_value(self, x_graph):  # [G] -> value per path ([1] broadcasts for one instance)
        if self.pair_graph is None:
            return x_graph
        return x_graph[self.pair_graph][self.path_pair]

    def link_value(self, x_graph):  # [G] -> value per link ([1] broadcasts for one instance)
        if self.link_graph is None:
            return x_graph
        return x_graph[self.link_graph]

    def graph_pair_max(self, x):  # per-pair values -> max over each instance's pairs [G]
        if self.pair_graph is None:
            return x.max(dim=0, keepdim=True).values
        return seg_max(x, self.pair_graph, self.G)

    def graph_pair_sum(self, x):  # per-pair values -> sum over each instance's pairs [G]
        if self.pair_graph is None:
            return x.sum(dim=0, keepdim=True)
        return seg_sum(x, self.pair_graph, self.G)

    def graph_link_max(self, x):  # -> [G]
        if self.link_graph is None:
            return x.max(dim=0, keepdim=True).values
        return seg_max(x, self.link_graph, self.G)


class SparseLayout:
    """Static CSR incidence matrices of one topology for fast torch inference (built once, reused per TM)."""

    def __init__(self, inc_path: torch.Tensor, inc_link: torch.Tensor, num_paths: int, num_links: int):
        ones = torch.ones(inc_path.shape[0], dtype=torch.float32, device=inc_path.device)
        idx = torch.stack([inc_path, inc_link])
        self.path_link = torch.sparse_coo_tensor(idx, ones, (num_paths, num_links)).coalesce().to_sparse_csr()
        self.link_path = torch.sparse_coo_tensor(idx.flip(0), ones, (num_links, num_paths)).coalesce().to_sparse_csr()


def _mlp(n_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                         nn.Linear(hidden, 1))


class TEHead(nn.Module):
    def __init__(self, cfg: ModelConfig | None = None):
        super().__init__()
        self.cfg = cfg or ModelConfig()
        h = self.cfg.hidden
        self.init_mlp = _mlp(N_STATIC, h)
        self.refine_mlp = _mlp(N_STATIC + N_DYNAMIC, h)
        # Per-round step sizes: the MLP's correction and the mirror-descent move (softplus'd).
        # Indexed by round; rounds past the table reuse its last entry (inference may run more rounds).
        self.mlp_step = nn.Parameter(torch.ones(MAX_ROUND_PARAMS))
        self.md_step = nn.Parameter(torch.full((MAX_ROUND_PARAMS,), 1.0))
        nn.init.zeros_(self.init_mlp[-1].weight)
        nn.init.zeros_(self.init_mlp[-1].bias)
        nn.init.zeros_(self.refine_mlp[-1].weight)
        nn.init.zeros_(self.refine_mlp[-1].bias)

    # ------------------------------------------------------------------ pieces
    def _softmax(self, z, g: Graph):
        zmax = seg_max(z.detach(), g.path_pair, g.P)[g.path_pair]
        e = torch.exp(z - zmax)
        return e / seg_sum(e, g.path_pair, g.P)[g.path_pair]

    def _loads(self, split, demand, g: Graph):
        return g.link_sum_paths(split * demand[g.path_pair])

    def forward(self, demand_bps, capacity_bps, latency_seconds, link_up, path_pair, inc_path, inc_link,
                policy, link_graph=None, pair_graph=None, graphs_like=None, rounds: int | None = None,
                return_all: bool = False, layout: SparseLayout | None = None):
        g = Graph(path_pair, inc_path, inc_link, demand_bps, capacity_bps,
                  torch.zeros_like(path_pair, dtype=demand_bps.dtype), link_graph, pair_graph, graphs_like, layout)
        R = rounds or self.cfg.rounds
        up = (link_up > 0.5).to(capacity_bps.dtype)
        hops = g.path_sum_links(torch.ones_like(capacity_bps))
        cap_rel = capacity_bps / g.link_max(capacity_bps)
        path_cap_rel = -g.path_max_links(-cap_rel)  # bottleneck capacity / max capacity
        lat = latency_seconds.clamp_min(0.0) + 1.0e-6  # 1 us floor: zero-latency files stay finite
        path_lat = g.path_sum_links(lat)
        path_down = g.path_max_links(1.0 - up)
        mask = -BIG * path_down
        # Pair-relative static features (min over the pair's *usable* candidates).
        hops_usable = hops + BIG * path_down
        min_hops = -seg_max(-hops_usable, path_pair, g.P)[path_pair]
        lat_usable = path_lat * (1.0 + BIG * path_down)
        min_lat = -seg_max(-lat_usable, path_pair, g.P)[path_pair]
        n_paths = seg_sum(torch.ones_like(hops), path_pair, g.P)[path_pair]
        dmax = g.pair_max(demand_bps).clamp_min(TINY)
        d_rel = demand_bps / dmax
        d_path = demand_bps[path_pair]
        # Policy knobs: policy is [4] (one instance) or [G, 4] (a training batch, one row per instance).
        pol = policy.reshape(-1, policy.shape[-1])
        lam_path = g.path_value(pol[:, 0]) * torch.ones_like(hops)
        h_path = g.path_value(pol[:, 1]) * torch.ones_like(hops)
        h_link = g.link_value(pol[:, 1]) * torch.ones_like(capacity_bps)
        # d(lambda * stretch)/dx_p = lambda * d_i * lat_p / sum_i d_i * (pair i's lowest candidate latency).
        pair_min_lat = -seg_max(-path_lat, path_pair, g.P)
        lat_base = g.path_value(g.graph_pair_sum(demand_bps * pair_min_lat).clamp_min(TINY))
        lat_grad = lam_path * d_path * path_lat / lat_base
        static = torch.stack([
            (hops / min_hops.clamp_min(1.0) - 1.0).clamp(max=4.0),
            (path_lat / min_lat - 1.0).clamp(0.0, 4.0),
            torch.log(n_paths),
            path_cap_rel,
            torch.log(d_rel[path_pair] + 1.0e-6) / 14.0,
            path_down,
            lam_path,
            h_path * 2.0,
        ], dim=1)

        z = self.init_mlp(static).squeeze(1) + mask
        outs = []
        for t in range(R):
            split = self._softmax(z, g)
            loads = self._loads(split, demand_bps, g)
            util = loads / capacity_bps * up
            if return_all:
                outs.append((split, loads, util))
            # ---- observations (detached): the state of the network under the current split
            with torch.no_grad():
                f = split * d_rel[path_pair]  # path flow / largest demand, <= 1 (no float32 overflow below)
                fq = g.link_sum_paths(torch.stack([f ** SURGE_Q, f ** (SURGE_Q - 1.0)], dim=1))
                surge_rel = fq[:, 0] / fq[:, 1].clamp_min(TINY)  # soft max of the path flows per link
                eff = (loads + h_link * surge_rel * g.link_value(g.graph_pair_max(demand_bps))) / capacity_bps * up
                m = g.link_max(eff).clamp_min(TINY)
                ur = eff / m  # [L] in [0, 1]
                hot = torch.exp(self.cfg.beta * (ur - 1.0)) * up
                w = hot / g.link_sum(hot).clamp_min(TINY)  # soft arg-max link weights, sum 1 per graph
                top_l = surge_rel.clamp_min(1.0e-12) ** (1.0 - SURGE_Q)
                sums = g.path_sum_links(torch.stack([w / capacity_bps, ur, w / capacity_bps * top_l], dim=1))
                # Soft indicator that the path is its link's largest flow, (f_p / surge_l)^(Q-1): the surge
                # term's gradient, one more column of the path sums.
                surge_price = h_path * f ** (SURGE_Q - 1.0) * sums[:, 2]
                price = sums[:, 0] + surge_price  # soft "dual price" of a path
                m_path = g.path_value(g.graph_link_max(eff).clamp_min(TINY))
                # Gradient of the soft objective w.r.t. the path's split, relative to the current
                # effective utilisation: d * price / m (+ the latency stretch term).
                lat_rel = (lat_grad / m_path).clamp(max=10.0)
                grad_rel = (d_path * price / m_path).clamp(max=10.0) + lat_rel
                gbar = seg_sum(split * grad_rel, path_pair, g.P)[path_pair]
                adv = grad_rel - gbar
                bott = g.path_max_links(ur, floor=0.0)
                bott_min = -seg_max(-(bott + 2.0 * path_down), path_pair, g.P)[path_pair]
                cross = torch.exp(self.cfg.beta * (bott - 1.0))  # = max over the path's links of "hot"
                mean_u = sums[:, 1] / hops
                pmax = seg_max(price * (1.0 - path_down), path_pair, g.P)[path_pair].clamp_min(TINY)
                price_rel = price / pmax
                dyn = torch.stack([adv * 10.0, grad_rel * 10.0, bott, bott - bott_min, cross, mean_u,
                                   split, price_rel.clamp(max=2.0), torch.full_like(split, t / max(R - 1, 1)),
                                   lat_rel * 10.0, surge_price / price.clamp_min(TINY)], dim=1)
                feats = torch.cat([static, dyn], dim=1)
            step_mlp = torch.nn.functional.softplus(self.mlp_step[min(t, self.mlp_step.shape[0] - 1)])
            step_md = torch.nn.functional.softplus(self.md_step[min(t, self.md_step.shape[0] - 1)])
            z = z + step_mlp * self.refine_mlp(feats).squeeze(1) - step_md * 10.0 * adv

        split = self._softmax(z, g)
        loads = self._loads(split, demand_bps, g)
        util = loads / capacity_bps * up
        if return_all:
            outs.append((split, loads, util))
            return outs
        mlu = util.max(dim=0, keepdim=True).values
        return split, loads, mlu
