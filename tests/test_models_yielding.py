"""Movements that give way (models.yielding): gap-acceptance capacity, mixed-lane blocking, sneakers, and the
opposing movements the compiler's foe matrices give. The kernels' agreement with their twins is in
test_models_cyclic.py / test_models_queue.py (random cases carry random Yielding structures)."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest

from models.cyclic import CyclicNet, CyclicOptions, CyclicPlans, evaluate_batch, evaluate_profiles
from models.evaluate import MODELS, ModelParams
from models.yielding import Yielding, build_yielding, opposing_movements

OPTS = CyclicOptions(period_h=1.0, overflow_ki=0.5, max_sweeps=200, tol_veh=1e-13, min_capacity_veh_s=1e-6)


def two_movements(opp_entry, yield_entry, gap, mix=1.0, sneak=0.0, cycle=60, green=(0.0, 30.0), sat=(1.0, 0.5)):
    """Movement 0 (opposing, 'G') and movement 1 (gives way to 0 on lanes of its own share ``mix``), both green
    over the same window each cycle."""
    y = Yielding(gap, np.array([0, 1]), np.array([0]), np.array([mix]), np.array([0, 0, 1]), np.array([0]),
                 np.array([1.0]), np.array([0.0, sneak]))
    net = CyclicNet(np.array(sat, float), np.array([opp_entry, yield_entry], float), np.zeros(3, np.int64),
                    np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64), np.zeros(0), np.arange(2),
                    None, y)
    a, g = green
    plans = CyclicPlans(np.array([cycle]), np.array([[[a], [a]]]), np.array([[[g], [g]]]), np.ones((1, 2, 1)))
    return net, plans


def test_own_lane_capacity_is_siegloch_and_a_shared_lane_discharges_as_a_mixed_queue():
    q, gap, sat = 0.2, 3.0, 0.5
    # the opposing movement is green all the time with uniform arrivals: it departs at q every second
    for mix in (1.0, 0.5, 0.25):
        net, plans = two_movements(q, 0.05, gap, mix=mix, cycle=60, green=(0.0, 60.0))
        _, cap, dep = evaluate_profiles(net, plans, OPTS)
        np.testing.assert_allclose(dep[0], q)
        phi = math.exp(-gap * q)
        want = sat * phi / ((1 - mix) * phi + mix)  # each vehicle takes 1/s, a giving-way one 1/(s phi)
        np.testing.assert_allclose(cap[1], want, rtol=1e-12)
        assert mix < 1 or cap[1][0] == pytest.approx(sat * phi)


def test_no_opposing_flow_leaves_the_capacity_alone():
    net, plans = two_movements(0.0, 0.1, 4.0)
    _, mov = evaluate_batch(net, plans, OPTS)
    assert mov.capacity_veh_h[0, 1] == pytest.approx(0.5 * 30 / 60 * 3600)


def test_against_a_saturated_opposing_queue_only_the_sneakers_get_through():
    # the opposing movement is over capacity: it discharges at saturation (1 veh/s) all its green
    sneak, cycle = 1.5, 60
    net, plans = two_movements(0.8, 0.05, gap=8.0, sneak=sneak, cycle=cycle)
    _, mov = evaluate_batch(net, plans, OPTS)
    assert mov.dos[0, 0] > 1.0
    per_cycle = mov.capacity_veh_h[0, 1] * cycle / 3600
    assert per_cycle == pytest.approx(sneak, rel=0.01)  # 30 s * 0.5 veh/s * exp(-8) ~ 0.005 veh besides them
    # without giving way the same movement would have 15 veh per cycle
    net0 = net._replace(yielding=None)
    _, mov0 = evaluate_batch(net0, plans, OPTS)
    assert mov0.capacity_veh_h[0, 1] * cycle / 3600 == pytest.approx(15.0)


def test_capacity_falls_as_the_opposing_flow_grows_and_the_opposing_queue_takes_the_start_of_green():
    caps = []
    for q in (0.0, 0.05, 0.1, 0.2, 0.3, 0.4):
        net, plans = two_movements(q, 0.02, gap=3.0)
        _, cap, dep = evaluate_profiles(net, plans, OPTS)
        caps.append(cap[1].sum())
        if q > 0:
            # the opposing queue built over the red discharges first, at saturation: nothing gets through then
            assert dep[0][0] == pytest.approx(1.0)
            assert cap[1][0] == pytest.approx(0.5 * math.exp(-3.0), rel=1e-9)
    assert all(a > b for a, b in zip(caps, caps[1:], strict=False))


def test_opposing_movements_of_the_bundled_corridor():
    from sim.scenario import compile_scenario

    net = compile_scenario("stockholm-corridor").net
    opp = opposing_movements(net)
    index = {(net.mov_from_edge[m], net.mov_to_edge[m]): m for m in range(net.n_movements)}
    # J3's side-street left turns are permissive ('g') and cross the opposing side-street through traffic ('G')
    left = index[("N3-J3", "J3-P3e")]
    assert [(net.mov_from_edge[o], net.mov_to_edge[o]) for o in opp[left]] == [("S3-J3", "J3-N3")]
    # the main-street through movements ('G' only) give way to nobody
    assert opp[index[("P3w-J3", "J3-P3e")]] == []
    q = np.full(net.n_movements, 100.0)
    y = build_yielding(net, q, 2.5, sneakers_per_lane=1.0)
    groups = {int(y.mg_group[e]) for e in range(y.mg_ptr[left], y.mg_ptr[left + 1])}
    assert len(groups) == 1  # the left turn uses one lane, shared with the through movement
    g = groups.pop()
    through = index[("N3-J3", "J3-S3")]
    assert g in y.mg_group[y.mg_ptr[through]:y.mg_ptr[through + 1]]
    assert y.mix[g] == pytest.approx(100.0 / (100.0 + 100.0 / 2))  # the through's 100 veh/h over its two lanes
    assert y.sneak_veh[left] == 1.0 and y.sneak_veh[through] == 0.0
    # a movement without demand holds nobody up
    q[left] = 0.0
    y0 = build_yielding(net, q, 2.5)
    assert y0.mg_ptr[left + 1] == y0.mg_ptr[left]


def test_giving_way_in_both_models_raises_the_delay_of_the_grid_and_gap_zero_switches_it_off():
    from sim.scenario import compile_scenario

    comp = compile_scenario("grid-2x2")
    for fn in MODELS.values():
        off = fn(comp.net, comp.demand, None, ModelParams(yield_gap_s=0.0, yield_sneakers=0.0))
        none = fn(comp.net, comp.demand, None, ModelParams(yield_gap_s=0.0, yield_sneakers=5.0))
        on = fn(comp.net, comp.demand, None, ModelParams(yield_gap_s=2.5, yield_sneakers=1.0))
        assert none.mean_delay_s == off.mean_delay_s  # gap 0: no groups, the sneakers go with them
        assert on.mean_delay_s > off.mean_delay_s


def test_kernels_load_from_numba_cache_in_a_fresh_process(tmp_path):
    """The kernels take structs whose types are built at import (models.yielding.kernel_struct); numba's on-disk
    cache must still store and find them: with an empty cache directory, a first fresh process compiles and saves
    the kernels, a second one loads them and compiles nothing."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    script = (
        "import json\n"
        "from models import cyclic, queue\n"
        "from models.evaluate import evaluate_cyclic, evaluate_queue\n"
        "from sim.scenario import compile_scenario\n"
        "c = compile_scenario('grid-2x2')\n"
        "evaluate_cyclic(c.net, c.demand); evaluate_queue(c.net, c.demand)\n"
        "k = {'cyclic': cyclic._serial_kernel, 'queue': queue._run_kernel}\n"
        "print(json.dumps({n: [sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values())]"
        " for n, f in k.items()}))\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))

    def run() -> dict:
        res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO,
                             env=env)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1])

    first = run()
    assert all(hits == 0 for hits, _ in first.values())  # the cache directory was empty
    for name, (hits, misses) in run().items():
        assert hits >= 1 and misses == 0, (name, hits, misses)


def test_restricted_to_one_signal_the_giving_way_is_the_networks():
    """models.yielding.restrict cuts one signal's movements out (as the optimiser's group evaluator does): every
    movement's capacity factor, for any departure rates, is what the whole network's structure gives it."""
    from models.evaluate import prepare
    from models.yielding import factor_now, kernel_struct, normalise, restrict
    from sim.scenario import compile_scenario

    comp = compile_scenario("stockholm-corridor")
    full = prepare(comp.net, comp.demand, ModelParams()).cyclic_net.yielding
    net = comp.net
    s = net.signal_index["J3"]
    movs = np.flatnonzero(np.asarray(net.mov_signal) == s)
    part = restrict(full, movs)
    assert part.mix.size > 0  # J3 has movements that give way

    struct = kernel_struct("_Y", collections.namedtuple("_OnlyYielding", ["yielding"]))  # the kernels' flat form

    def factors(y, m_ids, rate):
        y = normalise(y, rate.size)
        k = struct(**{f"yield_{f}": getattr(y, f) for f in Yielding._fields})
        return np.array([factor_now(k, m, rate) for m in m_ids])

    rng = np.random.default_rng(0)
    for _ in range(5):
        rate = rng.uniform(0.0, 0.5, net.n_movements)
        want = factors(full, movs, rate)
        got = factors(part, np.arange(movs.size), rate[movs])
        np.testing.assert_allclose(got, want, rtol=1e-12)
        assert np.any(got < 1.0)
    # a part that leaves out a movement some kept lane group gives way to is refused
    with pytest.raises(ValueError, match="outside the part"):
        restrict(full, movs[part.mg_ptr[1:] > part.mg_ptr[:-1]][:1])
