"""`gronvag calibrate` (sim.calibrate): random plans, SUMO measurement, the fit, the file predict/optimise read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import GronvagError
from engine.safety import check_plan
from models.cli_predict import params_from_obj, parse_params
from sim import calibrate as cal


@pytest.fixture(scope="module")
def grid():
    from sim.scenario import compile_scenario

    return compile_scenario("grid-2x2", end_s=900)


def test_random_plans_are_valid_and_demand_proportional(grid):
    net = grid.net
    y = cal.phase_flow_ratios(net, grid.demand)
    assert y.shape == (net.n_phases,) and np.all(y >= 0) and y.max() > 0
    sets = cal.random_plansets(net, 6, np.random.default_rng(3), flow_ratio=y, split_sigma=0.0)
    for ps in sets:
        cycles = {p.cycle_s for p in ps.plans}
        assert len(cycles) == 1 and 50 <= cycles.pop() <= 130
        for s, plan in enumerate(ps.plans):
            assert not check_plan(plan, net.signal_spec(s))
            # without noise the spare green follows the flow ratios (to a second of rounding per phase)
            greens = [(p, ph) for p, ph in zip(net.phases_of(s), plan.phases, strict=True)
                      if ph.kind == "green" and "y" not in ph.state]
            spare = np.array([ph.duration_s - 5 for _, ph in greens], float)
            want = np.array([max(y[p], 0.02) for p, _ in greens])
            want = want / want.sum() * spare.sum()
            assert np.all(np.abs(spare - want) <= len(greens) + 1e-9)
    uniform = cal.random_plansets(net, 3, np.random.default_rng(3))
    assert all(not check_plan(p, net.signal_spec(s)) for ps in uniform for s, p in enumerate(ps.plans))


def test_fit_never_worsens_and_recovers_a_known_scale(grid):
    """Targets made by the model itself at sat_flow_scale 1.25, base loss 7 s: the fit finds them again."""
    from dataclasses import replace

    from models.evaluate import ModelParams

    comp, base = cal.shared_lanes_by_demand(grid, ModelParams())
    sets = cal.random_plansets(comp.net, 6, np.random.default_rng(1),
                               flow_ratio=cal.phase_flow_ratios(comp.net, comp.demand))
    truth = replace(base, sat_flow_scale=1.25, base_loss_s=7.0)
    target = cal.predict(comp, sets, truth)
    params, stats = cal.fit(comp, sets, target, base, max_evals=300)
    assert stats["mape_pct"] <= 1.0
    assert params.sat_flow_scale == pytest.approx(1.25, abs=0.05)
    assert params.base_loss_s == pytest.approx(7.0, abs=1.5)


@pytest.mark.timeout(300)
def test_calibrate_cli_writes_a_file_predict_and_optimise_read(tmp_path, capsys):
    from engine.cli import main

    out = tmp_path / "params.json"
    assert main(["calibrate", "grid-2x2", "--end", "900", "--plans", "4", "--seeds", "1", "--jobs", "2",
                 "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["schema"] == cal.SCHEMA and rec["model"] == "cyclic"
    assert len(rec["calibrated_on"]["sumo_mean_time_loss_s"]) == 4
    assert all(v > 0 for v in rec["calibrated_on"]["sumo_mean_time_loss_s"])
    assert rec["fit_after"]["mape_pct"] <= rec["fit_before"]["mape_pct"]
    params = parse_params(str(out))
    for k in cal.FITTED:
        lo, hi = cal.BOUNDS[k]
        assert lo <= getattr(params, k) <= hi
    capsys.readouterr()
    assert main(["predict", "grid-2x2", "--end", "900", "--params", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"]["cyclic"]["mean_delay_s"] > 0


def test_calibrate_errors(tmp_path):
    from engine.cli import main

    assert main(["calibrate", "grid-2x2", "--plans", "2", "--seeds", "1", "--out", str(tmp_path / "p.json")]) == 2
    assert main(["calibrate", "grid-2x2", "--seeds", "x", "--out", str(tmp_path / "p.json")]) == 2
    assert not (tmp_path / "p.json").exists()
    with pytest.raises(GronvagError, match="params"):
        params_from_obj({"schema": cal.SCHEMA, "params": [1]})
    assert params_from_obj({"schema": cal.SCHEMA, "params": {"base_loss_s": 3.0}}).base_loss_s == 3.0


def test_measure_reuses_cached_runs_and_keys_them_by_plan_and_seed(grid, tmp_path, monkeypatch):
    """measure(..., cache=DIR): the first call runs SUMO and stores each run record; the same plans and seeds again
    come from the cache (SUMO is not started), another seed or another plan runs SUMO."""
    sets = cal.random_plansets(grid.net, 2, np.random.default_rng(5))
    cache = tmp_path / "runs"
    first = cal.measure(grid, sets, [1], workers=2, cache=cache)
    assert len(list(cache.glob("*.json"))) == 2
    ran = []
    real = cal.measure_one

    def counting(comp, ps, seed, workdir, protocol="default"):
        ran.append((seed, ps))
        return real(comp, ps, seed, workdir, protocol)

    monkeypatch.setattr(cal, "measure_one", counting)
    again = cal.measure(grid, sets, [1], workers=2, cache=cache)
    assert ran == [] and again == json.loads(json.dumps(first))
    cal.measure(grid, sets[:1], [2], workers=1, cache=cache)  # another seed: a new run
    cal.measure(grid, cal.random_plansets(grid.net, 1, np.random.default_rng(6)), [1], workers=1, cache=cache)
    assert [s for s, _ in ran] == [2, 1] and len(list(cache.glob("*.json"))) == 4
