"""``tellm eval --fail-links``: every router on every TM under each failure scenario."""

from __future__ import annotations

import math


from tellm.errors import CLIError

from . import common


def _geomean(xs) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return float(math.exp(sum(map(math.log, xs)) / len(xs))) if xs else float("nan")


def run_failures(args, topo, paths, tms, names, fns, console) -> int:
    from rich.table import Table

    from tecore import TopologyError
    from tecore.failures import parse_failures, routable_tm, stranded_pairs

    try:
        failures = parse_failures(topo, args.fail_links)
    except TopologyError as exc:
        raise CLIError(f"--fail-links: {exc}") from None
    rows = []
    for f in common.progress(failures, "failures", console):
        up = f.link_up(topo)
        stranded = stranded_pairs(topo, paths, up)
        for tm in tms:
            ok = routable_tm(topo, tm, up)
            d = ok.pair_demands(paths.pairs)
            row = {"failure": f.name, "tm": tm.label, "stranded_pairs": int(stranded.size),
                   "stranded_demand_bps": float(d[stranded].sum()),
                   "disconnected_demand_bps": float(tm.total_bps - ok.total_bps)}
            for n, fn in fns.items():
                out = fn(ok, up)
                if not math.isfinite(out.mlu):
                    raise CLIError(f"router {n} returned a non-finite MLU on {tm.label} with {f.name} down")
                row[f"mlu_{n}"] = out.mlu
                row[f"{n}_seconds"] = out.seconds
            rows.append(row)
    table = Table(title=f"{topo.name}: {len(failures)} failure scenario(s) x {len(tms)} TMs "
                        f"({paths.strategy}, k={paths.k}); MLU on the surviving network")
    for col in ["failure", "TM", "stranded", *[f"mlu_{n}" for n in names]]:
        table.add_column(col, justify="left" if col in ("failure", "TM") else "right")
    for r in rows:
        table.add_row(r["failure"], r["tm"], str(r["stranded_pairs"]), *[f"{r[f'mlu_{n}']:.4f}" for n in names])
    summary = {"failures": len(failures), "failures_stranding_pairs": len({r["failure"] for r in rows
                                                                          if r["stranded_pairs"]}),
               "stranded_pairs_max": max((r["stranded_pairs"] for r in rows), default=0)}
    for base in ("lp", "opt"):
        if base in names:
            for n in names:
                if n not in (base, "opt"):
                    ratios = [r[f"mlu_{n}"] / r[f"mlu_{base}"] for r in rows if r[f"mlu_{base}"] > 0]
                    summary[f"{n}_over_{base}_geomean"] = _geomean(ratios)
                    summary[f"{n}_over_{base}_worst"] = float(max(ratios)) if ratios else float("nan")
    console.print(table)
    for key, val in summary.items():
        console.print(f"{key}: {val:.4f}" if isinstance(val, float) else f"{key}: {val}")
    if args.json:
        common.write_json(args.json, {
            "topology": topo.name, "topology_hash": topo.content_hash, "nodes": topo.num_nodes,
            "links": topo.num_links, "pairs": paths.num_pairs, "paths": paths.num_paths,
            "path_strategy": paths.strategy, "k": paths.k, "tm_source": args.tm, "routers": names,
            "fail_links": args.fail_links, "rows": rows, "summary": summary,
            "stranded_by_failure": {r["failure"]: r["stranded_pairs"] for r in rows}})
    return 0
