"""Time-varying queue model: kernel == naive twin; D/D/1, conservation, free-flow travel time, chunked == one-shot,
spillback; and agreement with the cyclic model in the periodic steady state."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import closed_form as cf
from models.cyclic import CyclicNet, CyclicOptions, CyclicPlans, evaluate_batch
from models.queue import QueueDemand, QueueKpis, QueueNet, initial_state, run, run_batch
from tests.naive_models import naive_queue, random_yielding

INF = np.inf


def line(sat, storage, delays, shares=None, approach=None):
    """Movements 0 -> 1 -> ... in series (feed i -> i+1 with delays[i]); each on its own approach unless given."""
    m = len(sat)
    shares = [1.0] * (m - 1) if shares is None else shares
    approach = list(range(m)) if approach is None else approach
    ptr = list(range(m)) + [m - 1]
    return QueueNet(np.array(sat, float), np.array(approach), np.array(storage, float), np.array(ptr),
                    np.arange(1, m), np.array(shares, float), np.array(delays))


def cycle_levels(cycle, red, m=1):
    lv = np.ones((cycle, m))
    lv[:red] = 0.0
    return lv


def ring_to_pending(state):
    t = int(state.t[0])
    r = state.ring_veh.shape[1]
    out = {}
    for m in range(state.ring_veh.shape[0]):
        for dt in range(r):  # slot (t + dt) % r holds the arrivals due at second t + dt
            v = state.ring_veh[m, (t + dt) % r]
            if v:
                out[(m, t + dt)] = v
    return out


def assert_matches_naive(net, dem, level, state, n_steps, rtol=1e-9):
    q0, b0, p0, t0 = state.queue_veh.copy(), state.backlog_veh.copy(), ring_to_pending(state), int(state.t[0])
    state, kpi = run(net, dem, level, state, n_steps)
    q, b, pend, nk = naive_queue(net, dem, level, q0, b0, p0, t0, n_steps)
    np.testing.assert_allclose(state.queue_veh, q, rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(state.backlog_veh, b, rtol=rtol, atol=1e-9)
    pk = ring_to_pending(state)
    for key in set(pk) | set(pend):
        assert pk.get(key, 0.0) == pytest.approx(pend.get(key, 0.0), rel=rtol, abs=1e-9), key
    for f in QueueKpis._fields:
        np.testing.assert_allclose(getattr(kpi, f), nk[f], rtol=rtol, atol=1e-8, err_msg=f)
    return state, kpi


# ---------------------------------------------------------------------------------------------------- theory


@pytest.mark.parametrize("flow,cycle,red", [(0.1, 60, 30), (0.05, 90, 50), (0.2, 45, 20), (0.0, 60, 30)])
def test_dd1_delay_and_stops_equal_webster_per_cycle(flow, cycle, red):
    sat = 0.5
    net = line([sat], [INF], [])
    dem = QueueDemand(np.array([[flow]]), 3600)
    n_cycles = 7
    state, kpi = run(net, dem, cycle_levels(cycle, red), initial_state(net), n_cycles * cycle)
    g = cycle - red
    x = cf.degree_of_saturation(flow * 3600, sat * 3600, g, cycle)
    n_veh = flow * cycle * n_cycles
    assert kpi.delay_veh_s[0] == pytest.approx(float(cf.hcm_uniform_delay(cycle, g, x)) * n_veh, rel=1e-12)
    assert kpi.stops_veh[0] == pytest.approx(float(cf.uniform_stop_rate(cycle, g, flow * 3600, sat * 3600)) * n_veh,
                                             rel=1e-12)
    assert kpi.max_queue_veh[0] == pytest.approx(flow * red, rel=1e-12)
    assert kpi.departures_veh[0] == pytest.approx(n_veh, rel=1e-12)
    assert state.queue_veh[0] == pytest.approx(0.0, abs=1e-12)


def test_initial_queue_discharges_as_a_triangle():
    net = line([0.5], [INF], [])
    dem = QueueDemand(np.zeros((1, 1)), 60)
    state, kpi = run(net, dem, np.ones((1, 1)), initial_state(net, queue_veh=[10.0]), 30)
    assert kpi.delay_veh_s[0] == pytest.approx(100.0)  # 10 veh clear in 20 s: area 10 * 20 / 2
    assert kpi.departures_veh[0] == pytest.approx(10.0)
    assert state.queue_veh[0] == 0.0


def test_free_flow_travel_time_through_a_green_corridor():
    delays = [7, 12, 3]
    net = line([0.5] * 4, [INF] * 4, delays)
    entry = np.zeros((100, 4))
    entry[5, 0] = 0.4  # a small platoon (below the saturation flow) enters at second 5
    dem = QueueDemand(entry, 1)
    state = initial_state(net)
    arrivals = []
    kpi = None
    for _ in range(60):
        state, kpi = run(net, dem, np.ones((1, 4)), state, 1, kpi)
        arrivals.append(kpi.arrivals_veh.copy())
    first = [int(np.argmax(np.array(arrivals)[:, m] > 0)) for m in range(4)]
    assert first == [5, 5 + 7, 5 + 7 + 12, 5 + 7 + 12 + 3]
    assert kpi.delay_veh_s.sum() == 0.0 and kpi.stops_veh.sum() == 0.0
    assert kpi.exited_veh[3] == pytest.approx(0.4)


def test_spillback_blocks_upstream_and_storage_is_never_exceeded():
    # 0 (always green, heavy entries) feeds 1 (red for 100 s), storage 10 on 1's approach, 25 on 0's
    net = line([0.5, 0.5], [25.0, 10.0], [4])
    dem = QueueDemand(np.array([[0.4, 0.0]]), 3600)
    lv = np.array([[1.0, 0.0]] * 100 + [[1.0, 1.0]] * 100)
    state = initial_state(net)
    kpi = None
    for _ in range(200):
        state, kpi = run(net, dem, lv, state, 1, kpi)
        occ1 = state.queue_veh[1] + state.transit_veh[1]
        occ0 = state.queue_veh[0] + state.transit_veh[0]
        assert occ1 <= 10.0 + 1e-9 and occ0 <= 25.0 + 1e-9
    assert kpi.blocked_s[0] > 50
    assert kpi.backlog_delay_veh_s[0] > 0  # entries waited outside once approach 0 filled up
    assert kpi.max_queue_veh[1] == pytest.approx(10.0)


def test_conservation_on_a_network_with_loops_and_spillback():
    rng = np.random.default_rng(11)
    net, dem, level, state = random_network(rng, m=7, storage_lo=3.0)
    contents0 = state.queue_veh.sum() + state.transit_veh.sum()
    backlog0 = state.backlog_veh.sum()
    n = 500
    demand_total = sum(dem.entry_veh_s[min(t // dem.bin_steps, dem.entry_veh_s.shape[0] - 1)].sum()
                       for t in range(n))
    state, kpi = run(net, dem, level, state, n)
    contents = state.queue_veh.sum() + state.transit_veh.sum()
    assert contents0 + kpi.entered_veh.sum() == pytest.approx(kpi.exited_veh.sum() + contents, rel=1e-12)
    assert backlog0 + demand_total == pytest.approx(kpi.entered_veh.sum() + state.backlog_veh.sum(), rel=1e-12)
    assert state.transit_veh.sum() == pytest.approx(state.ring_veh.sum(), rel=1e-9, abs=1e-9)


def test_periodic_steady_state_equals_cyclic_model():
    """Same network, no dispersion: after the warm-up every cycle of the queue model is the cyclic model's period."""
    cycle = 70
    sat = np.array([0.5, 0.45, 0.5])
    # 0 -> 2 (share .6, 23 s), 1 -> 2 (share .3, 11 s)
    qnet = QueueNet(sat, np.array([0, 1, 2]), np.full(3, INF), np.array([0, 1, 2, 2]), np.array([2, 2]),
                    np.array([0.6, 0.3]), np.array([23, 11]))
    entry = np.array([0.14, 0.12, 0.03])
    windows = [(0, 30), (35, 30), (40, 25)]
    lv = np.zeros((cycle, 3))
    for m, (a, g) in enumerate(windows):
        lv[np.arange(a, a + g) % cycle, m] = 1.0
    state, kpi = run(qnet, QueueDemand(entry[None, :], 3600), lv, initial_state(qnet), 20 * cycle)
    before = kpi.delay_veh_s.copy(), kpi.stops_veh.copy(), kpi.arrivals_veh.copy()
    run(qnet, QueueDemand(entry[None, :], 3600), lv, state, cycle, kpi)
    one_delay = kpi.delay_veh_s - before[0]
    one_stops = kpi.stops_veh - before[1]
    one_arr = kpi.arrivals_veh - before[2]
    cnet = CyclicNet(sat, entry, np.array([0, 0, 0, 2]), np.array([0, 1]), np.array([0.6, 0.3]),
                     np.array([23, 11]), np.zeros(2), np.arange(3))
    plans = CyclicPlans(np.array([cycle]), np.array([[[a] for a, _ in windows]], float),
                        np.array([[[g] for _, g in windows]], float), np.ones((1, 3, 1)))
    _, mov = evaluate_batch(cnet, plans, CyclicOptions(1.0, 0.5, 100, 1e-14, 1e-6))
    n_veh = mov.flow_veh_h[0] / 3600 * cycle
    np.testing.assert_allclose(one_arr, n_veh, rtol=1e-10)
    np.testing.assert_allclose(one_delay, mov.uniform_delay_s[0] * n_veh, rtol=1e-9)
    np.testing.assert_allclose(one_stops, mov.stops_per_veh[0] * n_veh, rtol=1e-9)


# ------------------------------------------------------------------------------------------- random vs twin


def random_network(rng, m=None, storage_lo=2.0):
    m = int(rng.integers(1, 7)) if m is None else m
    n_appr = int(rng.integers(1, m + 1))
    appr = np.concatenate([np.arange(n_appr), rng.integers(0, n_appr, m - n_appr)])
    ptr, dst, share, delay = [0], [], [], []
    for _ in range(m):
        outs = [j for j in range(m) if rng.random() < 0.35]
        w = rng.dirichlet(np.ones(len(outs) + 1))[:-1] if outs else []
        dst += outs
        share += list(w)
        delay += list(rng.integers(1, 20, len(outs)))
        ptr.append(len(dst))
    storage = rng.uniform(storage_lo, 40, n_appr)
    storage[rng.random(n_appr) < 0.3] = INF
    net = QueueNet(rng.uniform(0.2, 0.6, m), appr, storage, np.array(ptr), np.array(dst, np.int64),
                   np.array(share), np.array(delay, np.int64), random_yielding(rng, m) if rng.random() < 0.6 else None)
    n_bins = int(rng.integers(1, 4))
    dem = QueueDemand(rng.uniform(0, 0.3, (n_bins, m)) * (rng.random((n_bins, m)) < 0.7), int(rng.integers(5, 40)))
    level = rng.choice([0.0, 0.5, 1.0], (int(rng.integers(1, 40)), m))
    state = initial_state(net, rng.uniform(0, 5, m) * (rng.random(m) < 0.5), rng.uniform(0, 2, m) *
                          (rng.random(m) < 0.3), t0=int(rng.integers(0, 50)))
    return net, dem, level, state


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(1, 150))
def test_random_networks_match_naive(seed, n_steps):
    rng = np.random.default_rng(seed)
    net, dem, level, state = random_network(rng)
    # warm up so that the delay lines hold vehicles, then compare from that state
    state, _ = run(net, dem, level, state, int(rng.integers(0, 30)))
    assert_matches_naive(net, dem, level, state, n_steps)


def test_zero_demand_zero_green_above_capacity():
    net = line([0.5, 0.5], [INF, 30.0], [5])
    # zero demand: nothing happens
    _, kpi = assert_matches_naive(net, QueueDemand(np.zeros((1, 2)), 10), np.ones((1, 2)), initial_state(net), 50)
    assert all(getattr(kpi, f).sum() == 0 for f in QueueKpis._fields)
    # zero green: entries queue up linearly at 0, nothing leaves
    state, kpi = assert_matches_naive(net, QueueDemand(np.array([[0.2, 0.0]]), 10), np.zeros((1, 2)),
                                      initial_state(net), 50)
    assert state.queue_veh[0] == pytest.approx(10.0) and kpi.departures_veh.sum() == 0
    assert kpi.delay_veh_s[0] == pytest.approx(0.5 * 0.2 * 50**2)
    # above capacity: the queue grows by (q - c) per second
    state, _ = assert_matches_naive(net, QueueDemand(np.array([[0.7, 0.0]]), 10), np.ones((1, 2)),
                                    initial_state(net), 40)
    assert state.queue_veh[0] == pytest.approx(0.2 * 40)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chunked_stepping_equals_one_shot(seed):
    rng = np.random.default_rng(seed)
    net, dem, level, state = random_network(rng, m=6, storage_lo=3.0)
    one = initial_state(net, state.queue_veh, state.backlog_veh, int(state.t[0]))
    one, kpi_one = run(net, dem, level, one, 400)
    chunked = initial_state(net, state.queue_veh, state.backlog_veh, int(state.t[0]))
    kpi = None
    done = 0
    while done < 400:
        n = min(int(rng.integers(1, 60)), 400 - done)
        chunked, kpi = run(net, dem, level, chunked, n, kpi)
        done += n
    for a, b in zip(one, chunked, strict=True):
        np.testing.assert_array_equal(a, b)
    for f in QueueKpis._fields:
        np.testing.assert_array_equal(getattr(kpi_one, f), getattr(kpi, f))


def test_batch_equals_single_runs_with_any_thread_count():
    rng = np.random.default_rng(5)
    net, dem, level, state = random_network(rng, m=5, storage_lo=3.0)
    state, _ = run(net, dem, level, state, 30)  # something in transit
    k = 9
    levels = rng.choice([0.0, 1.0], (k, 25, 5))
    ring0 = state.ring_veh.copy()
    b1 = run_batch(net, dem, levels, state, 200, n_threads=1)
    b2 = run_batch(net, dem, levels, state, 200, n_threads=2)
    np.testing.assert_array_equal(state.ring_veh, ring0)  # the given state is left alone
    for i in (0, 4, 8):
        s = initial_state(net, state.queue_veh, state.backlog_veh, int(state.t[0]))
        s.ring_veh[:] = state.ring_veh
        s.transit_veh[:] = state.transit_veh
        _, kpi = run(net, dem, levels[i], s, 200)
        for f in QueueKpis._fields:
            np.testing.assert_array_equal(getattr(b1, f)[i], getattr(kpi, f))
            np.testing.assert_array_equal(getattr(b2, f)[i], getattr(kpi, f))


def test_bad_inputs_raise():
    net = line([0.5, 0.5], [INF, 30.0], [5])
    dem = QueueDemand(np.zeros((1, 2)), 10)
    with pytest.raises(ValueError):
        run(net._replace(out_delay_s=np.array([0])), dem, np.ones((1, 2)), initial_state(net), 5)
    with pytest.raises(ValueError):
        run(net, dem, np.ones((1, 3)), initial_state(net), 5)
    with pytest.raises(ValueError):
        run(net._replace(out_share=np.array([1.5])), dem, np.ones((1, 2)), initial_state(net), 5)
    with pytest.raises(ValueError):
        initial_state(net, queue_veh=[-1.0, 0.0])
    with pytest.raises(ValueError):
        run(net, dem, np.ones((1, 2)), initial_state(line([0.5, 0.5], [INF, 30.0], [9])), 5)
