"""benchmarks/bench_failures.py: the seeded failure sample and continuing a run's file."""

from __future__ import annotations

import json

from ..benchmark_support import load_benchmark

bench = load_benchmark("bench_failures")


def test_sample_is_seeded_and_a_larger_one_extends_a_smaller_one():
    names = [f"f{i}" for i in range(50)]
    small = bench.choose_failures(names, 5, seed=3, max_failures=None)
    assert small == bench.choose_failures(names, 5, seed=3, max_failures=None)
    assert len(set(small)) == 5 and set(small) <= set(names)
    assert bench.choose_failures(names, 12, seed=3, max_failures=None)[:5] == small
    assert bench.choose_failures(names, 5, seed=4, max_failures=None) != small
    assert bench.choose_failures(names, None, seed=3, max_failures=4) == names[:4]
    assert bench.choose_failures(names, 80, seed=3, max_failures=None) != names  # all of them, drawn order
    assert sorted(bench.choose_failures(names, 80, seed=3, max_failures=None)) == sorted(names)


def test_interleave_takes_round_robin():
    assert bench.interleave([[1, 2, 3], ["a"], [10, 20]]) == [1, "a", 10, 2, 20, 3]


def test_resume_keeps_finished_failures_and_runs_only_the_rest(data_dir, tmp_path):
    out = tmp_path / "f.json"
    common = ["--topology", "Abilene", "--router", "ecmp,lp", "--tms", "1", "--json", str(out), "--commit", "abc"]
    assert bench.main(common + ["--sample", "Abilene=2", "--sample-seed", "7"]) == 0
    first = json.loads(out.read_text())["results"][0]
    assert first["failures_run"] == 2 and len(first["rows"]) == 2 and len(first["intact_rows"]) == 1
    assert bench.main(common + ["--sample", "Abilene=4", "--sample-seed", "7", "--resume"]) == 0
    doc = json.loads(out.read_text())
    entry = doc["results"][0]
    names = [r["failure"] for r in entry["rows"]]
    assert names[:2] == [r["failure"] for r in first["rows"]] and len(set(names)) == 4 == entry["failures_run"]
    assert len(entry["intact_rows"]) == 1 and len(doc["runs"]) == 2 and doc["runs"][1]["items_done"] == 2
    # The LP never does worse than ECMP's hop-by-hop split, failed or not.
    assert all(r["mlu_lp"] <= r["mlu_ecmp"] * (1 + 1e-6) for r in entry["rows"] + entry["intact_rows"])
    assert "ecmp_over_opt_geomean" not in entry["summary"]  # no opt router in this run
    table = bench.markdown(doc)
    assert f"| Abilene | {entry['non_bridge_failures']} (sampled 4 x 1) |" in table
