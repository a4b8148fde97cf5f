"""The optimiser's batch scoring over HCM's analysis periods (ModelParams.cyclic_periods "bins", issue 5): the
group evaluator scores a candidate as models.evaluate.evaluate_cyclic does the whole network, bin by bin with the
overflow carried over, and reduces to the window mean for an even demand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engine.optimise import OptimiseOptions, build_instance
from engine.optimise.evaluation import GroupEvaluator, outside_departures_veh_h
from engine.optimise.run import network_objective
from models.evaluate import ModelParams

FAST = dict(time_limit_s=3.0, search_rounds=5, workers=2, seed=3)


@pytest.fixture(scope="module")
def single():
    from sim.scenario import compile_scenario

    return compile_scenario("grid-1x1")


def _two_bins(dem, first: float, second: float):
    """The demand's window-mean rates times ``first`` in a first quarter-hour and ``second`` in a second."""
    arr, ent = dem.mean_arrival_veh_h(), dem.mov_entry_veh_h.mean(0)
    return replace(dem, end_s=dem.begin_s + 2 * dem.bin_s, mov_arrival_veh_h=np.stack([arr * first, arr * second]),
                   mov_entry_veh_h=np.stack([ent * first, ent * second]), mov_bus_veh_h=None)


def _scores(comp, dem, params, k: int = 5):
    """(group objectives of the current plan and k - 1 other splits, the network objective of the current plan)."""
    inst = build_instance(comp.net, dem, OptimiseOptions(**FAST), scenario="grid-1x1", model_params=params)
    sigs = [inst.signals[i] for i in inst.groups[0].members]
    ge = GroupEvaluator(inst.ctx, sigs, inst.options.stop_cost_s, outside_departures_veh_h(inst.ctx), inst.template)
    d0 = np.concatenate([s.base_s for s in sigs])
    rng = np.random.default_rng(1)
    d = np.repeat(d0[None], k, 0)
    a, b = np.argsort(d0)[-2:]  # the two longest (green) phases
    for row in d[1:]:  # move 1-2 s between them; the cycle stays
        step = int(rng.integers(1, 3)) * (1 if rng.random() < 0.5 else -1)
        row[a] += step
        row[b] -= step
    o = np.zeros((k, len(sigs)), np.int64)
    sc = ge.score(d, o, per_movement=True)
    return sc, network_objective(inst, None)[0], ge


def test_periods_score_a_candidate_as_the_network_model_does(single):
    """One signal, one group, nothing fed from outside: the group's batch score of the current plan is the network
    objective of evaluate_cyclic (delay + k stops), with periods (a peak carried into a quiet quarter) as without."""
    dem = _two_bins(single.demand, 1.6, 0.3)
    for periods in ("bins", "window"):
        sc, net_obj, ge = _scores(single, dem, replace(ModelParams(), cyclic_periods=periods))
        assert len(ge.periods) == (2 if periods == "bins" else 0)
        assert sc.objective[0] == pytest.approx(net_obj, rel=1e-9)
        # the per-movement costs add up to the objective (no bus or pedestrian terms here)
        np.testing.assert_allclose(sc.mov_cost.sum(1), sc.objective, rtol=1e-9)
    peak = _scores(single, dem, ModelParams())[0].objective
    mean = _scores(single, dem, replace(ModelParams(), cyclic_periods="window"))[0].objective
    assert np.all(peak > 1.2 * mean)  # the peak's overflow, which the window mean hides


def test_periods_of_an_even_demand_score_as_the_window(single):
    """Constant demand below capacity and no random delay (k I = 0): every period is the window's steady state."""
    dem = _two_bins(single.demand, 1.0, 1.0)
    base = ModelParams(overflow_ki=0.0, yield_gap_s=0.0)
    per, _, ge = _scores(single, dem, base)
    win, _, _ = _scores(single, dem, replace(base, cyclic_periods="window"))
    assert len(ge.periods) == 2 and win.max_dos.max() < 1.0
    np.testing.assert_allclose(per.objective, win.objective, rtol=1e-9)
    np.testing.assert_allclose(per.mov_dos, win.mov_dos, rtol=1e-9)
    assert np.ptp(per.objective) > 0  # the candidates differ: the comparison is not of one number
