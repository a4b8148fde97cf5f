"""The fidelity benchmark's noise ceiling: SUMO's split-half rank correlation and its square root."""

import numpy as np
import pytest

from bench.bench_models_fidelity import approach_rank_costs, noise_ceiling


def _runs(values):
    return [[{"mean_time_loss_s": v} for v in row] for row in values]


def test_same_order_under_other_seeds_gives_ceiling_one():
    judged = np.array([10.0, 20.0, 30.0, 40.0])
    out = noise_ceiling(judged, _runs([[11, 9], [19, 23], [35, 30], [41, 44]]), [4, 5])
    assert out["split_half_spearman"] == 1.0 and out["ceiling"] == 1.0
    assert out["seeds"] == [4, 5]


def test_noisy_seeds_lower_the_ceiling_to_the_root_of_the_split_half():
    rng = np.random.default_rng(3)
    truth = np.linspace(50, 100, 40)
    judged = truth + rng.normal(0, 15, 40)
    other = truth[:, None] + rng.normal(0, 15, (40, 1))
    out = noise_ceiling(judged, _runs(other), [9])
    assert 0.0 < out["split_half_spearman"] < 0.95
    assert out["ceiling"] == pytest.approx(np.sqrt(out["split_half_spearman"]), abs=1e-3)


def test_reversed_order_gives_ceiling_zero():
    out = noise_ceiling(np.array([1.0, 2.0, 3.0]), _runs([[3.0], [2.0], [1.0]]), [2])
    assert out["split_half_spearman"] == -1.0 and out["ceiling"] == 0.0


def test_approach_rank_costs_finds_the_approach_whose_growth_the_model_misses():
    """Three approaches over 30 plans: SUMO's loss at 'b' grows three times as fast as the model's, 'a' and 'c' are
    modelled exactly; 'b' comes first with a negative share, the exact ones have share 0, and the shares add up to
    cov(model total, SUMO total) / var(SUMO total) - 1."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, 30)
    sumo = np.stack([5 + 2 * rng.uniform(0, 1, 30), 2 + 6 * x, 3 + rng.uniform(0, 1, 30)], 1)
    model = sumo.copy()
    model[:, 1] = 2 + 2 * x
    rows = approach_rank_costs(model, sumo, ["a", "b", "c"], 3)
    assert rows[0]["approach"] == "b" and rows[0]["error_share"] < -0.3
    assert {r["approach"]: r["error_share"] for r in rows[1:]} == {"a": 0.0, "c": 0.0}
    assert rows[0]["r"] == 1.0 and rows[0]["sumo_mean_veh_h"] > rows[0]["model_mean_veh_h"]
    tot, mt = sumo.sum(1), model.sum(1)
    want = np.cov(mt, tot)[0, 1] / tot.var(ddof=1) - 1
    assert sum(r["error_share"] for r in rows) == pytest.approx(want, abs=2e-3)
    assert len(approach_rank_costs(model, sumo, ["a", "b", "c"], 1)) == 1
