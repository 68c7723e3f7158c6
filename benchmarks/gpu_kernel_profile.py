"""Where a run's GPU time goes, by kernel: CUDA kernels traced with CUPTI (through torch.profiler).

CUPTI traces every kernel the process launches, so ONNX Runtime's kernels show up although torch
does not launch them. Kernels are grouped by what they do (from their names):

    from gpu_kernel_profile import kernel_profile
    summary = kernel_profile(lambda: head.run(d, u, p), runs=5)

``summary`` gives, per run, the GPU time of each group and of the top kernels, the number of
kernel launches, and the wall time, so "launch-bound" (many tiny kernels, GPU mostly idle) and
"bandwidth-bound" (a few long gathers) can be told apart.
"""

from __future__ import annotations

import re
import time
from typing import Callable

#: (group, pattern over the kernel name), first match wins.
GROUPS = (
    ("matmul", re.compile(r"gemm|gemv|xmma|cutlass|sm\d+_|ampere|hopper|cublas", re.I)),
    ("gather", re.compile(r"gather", re.I)),
    ("reduce", re.compile(r"reduce|reduction|cub::|argmax|softmax", re.I)),
    ("gelu", re.compile(r"gelu|erf", re.I)),
    ("concat/slice/pad/copy", re.compile(r"concat|slice|pad|copy|transpose|memcpy|memset|split|expand|tile", re.I)),
    ("elementwise", re.compile(r"elementwise|binary|unary|_kernel_impl|impl::|where|pow|exp|log|clip|cast|"
                               r"div|mul|add|sub|max|min|sqrt|reciprocal|greater|less", re.I)),
)


def group_of(kernel_name: str) -> str:
    for group, pattern in GROUPS:
        if pattern.search(kernel_name):
            return group
    return "other"


def kernel_profile(fn: Callable[[], object], runs: int = 5, top: int = 12) -> dict:
    """Trace ``runs`` calls of ``fn`` (after one untraced warm-up) and summarise per run."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            fn()
        torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t0) * 1e3 / runs
    per_kernel: dict[str, list[float]] = {}
    for ev in prof.events():  # device-side events: kernels, memcpys, memsets
        if str(getattr(ev, "device_type", "")).endswith("CUDA"):
            per_kernel.setdefault(ev.name, []).append(ev.time_range.elapsed_us() / 1e3)  # us -> ms
    groups: dict[str, dict] = {}
    for name, times in per_kernel.items():
        g = groups.setdefault(group_of(name), {"gpu_ms": 0.0, "launches": 0})
        g["gpu_ms"] += sum(times) / runs
        g["launches"] += len(times) / runs
    gpu_ms = sum(g["gpu_ms"] for g in groups.values())
    kernels = sorted(((sum(t) / runs, len(t) / runs, n) for n, t in per_kernel.items()), reverse=True)[:top]
    return {"runs": runs, "wall_ms_per_run": wall_ms, "gpu_ms_per_run": gpu_ms,
            "launches_per_run": sum(g["launches"] for g in groups.values()),
            "groups": {k: {"gpu_ms": round(v["gpu_ms"], 4), "launches": v["launches"],
                           "share": round(v["gpu_ms"] / gpu_ms, 4) if gpu_ms else 0.0}
                       for k, v in sorted(groups.items(), key=lambda kv: -kv[1]["gpu_ms"])},
            "top_kernels": [{"name": n[:160], "gpu_ms": round(ms, 4), "launches": cnt, "group": group_of(n)}
                            for ms, cnt, n in kernels]}
