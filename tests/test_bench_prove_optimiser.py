"""bench.prove_optimiser's table: the plan against the fixed plan, paired by seed."""

import pytest

from bench.prove_optimiser import paired_against_fixed, render


def _stats(fixed, plan, seeds=(1, 2, 3, 4)):
    def one(vals, ss):
        return {"n": len(vals), "failed": 0, "mean": sum(vals) / len(vals), "median": sorted(vals)[len(vals) // 2],
                "values": list(vals), "seeds": list(ss)}

    st = {c: one([100.0] * len(seeds), seeds) for c in ("webster", "webster-coord")}
    st["fixed"] = one(fixed, seeds)
    st["plan"] = one(plan, seeds[::-1])  # records in another order: pairing goes by seed, not position
    return st


def test_paired_difference_goes_by_seed():
    st = _stats([80.0, 70.0, 90.0, 60.0], [59.0, 89.0, 69.0, 79.0])  # plan seeds 4, 3, 2, 1: each 1 s lower
    pa = paired_against_fixed(st)
    assert pa["n"] == 4 and pa["mean"] == pytest.approx(-1.0) and pa["se"] == pytest.approx(0.0)
    assert pa["lower"] == 4


def test_rows_without_per_seed_records_get_no_pairing_and_the_table_says_which_do():
    old = _stats([80.0, 70.0], [79.0, 69.0], seeds=(1, 2))
    for c in old.values():
        del c["seeds"]
    assert paired_against_fixed(old) is None
    rows = [{"scenario": "a", "stats": _stats([80.0, 70.0, 90.0, 60.0], [82.0, 71.0, 85.0, 65.0])},
            {"scenario": "b", "stats": old}]
    text = render(rows, "cmd", "1-4", "")
    line = next(ln for ln in text.splitlines() if ln.startswith("- a:"))
    assert "lower on 2 of 4 seeds" in line and "+0.75" in line  # by seed: 65-80, 85-70, 71-90, 82-60
    assert not any(ln.startswith("- b:") for ln in text.splitlines())


def test_exact_never_departed_table_pairs_the_plan_with_the_best_baseline_by_seed(tmp_path):
    """The exact set's table: kept per seed in the row, or read from OUT/runs/NAME/summary.json for older rows; the
    plan set against the best baseline by that measure (here webster-coord), by seed."""
    import json

    from bench.prove_optimiser import exact_section

    kept = _stats([80.0, 70.0, 90.0, 60.0], [59.0, 89.0, 69.0, 79.0])
    for c, vals in (("fixed", [81, 71, 91, 61]), ("webster", [100] * 4), ("webster-coord", [50, 50, 50, 50]),
                    ("plan", [40, 60, 45, 47])):  # plan seeds 4, 3, 2, 1
        kept[c]["exact"] = [float(v) for v in vals]
    old = _stats([80.0, 70.0], [79.0, 69.0], seeds=(1, 2))  # no "exact": read from the runs' summary
    recs = [{"controller": c, "seed": s, "status": "ok", "benchmark_delay_exact_s": v}
            for c, vs in (("fixed", (90.0, 70.0)), ("webster", (99.0, 99.0)), ("webster-coord", (98.0, 98.0)),
                          ("plan", (88.0, 60.0))) for s, v in zip((1, 2), vs, strict=True)]
    (tmp_path / "runs" / "b").mkdir(parents=True)
    (tmp_path / "runs" / "b" / "summary.json").write_text(json.dumps(recs))
    rows = [{"scenario": "a", "stats": kept}, {"scenario": "b", "stats": old}, {"scenario": "c", "stats": old}]
    lines = exact_section(rows, tmp_path)
    a = next(ln for ln in lines if ln.startswith("| a |"))
    # plan mean 48 against webster-coord 50: by seed 47-50, 45-50, 60-50, 40-50 -> -2.0, lower on 3 of 4
    assert "| 48.0 |" in a and "(webster-coord)" in a and "-2.00" in a and "3 of 4" in a
    b = next(ln for ln in lines if ln.startswith("| b |"))
    # old row: the plan's seeds are (2, 1): 60 at seed 2 and 88 at seed 1 against fixed 70 and 90
    assert "(fixed)" in b and "-6.00 (4.00); 2 of 2" in b
    assert not any(ln.startswith("| c |") for ln in lines)  # no summary for c: left out, not guessed


def test_stress_cell_names_what_the_stress_test_turned_down_and_kept():
    from bench.prove_optimiser import stress_cell

    sc = {"stress": {"scale": 1.1, "seeds": list(range(2001, 2031)), "reference": "current plan"},
          "candidates": [
              {"candidate": "model at cycle 65 s", "stress_delay_s": 70.91, "turned_down_by_stress": True},
              {"candidate": "current plan", "stress_delay_s": 43.07, "turned_down_by_stress": False},
              {"candidate": "model at cycle 40 s", "stress_delay_s": None},
          ]}
    assert stress_cell(sc) == ("x1.1, seeds 2001-2030: turned down: model at cycle 65 s 70.9; current plan 43.1")
    sc["candidates"][0]["turned_down_by_stress"] = False
    assert "kept: model at cycle 65 s 70.9" in stress_cell(sc)
    assert stress_cell({"candidates": sc["candidates"]}) == "-"  # a summary from before the stress test
    assert stress_cell({"stress": {"scale": 1.1, "seeds": [1]}, "candidates": [{"candidate": "x"}]}) == "-"
