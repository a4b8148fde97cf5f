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
