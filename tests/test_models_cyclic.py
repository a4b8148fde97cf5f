"""Cyclic flow profile model: kernel == naive twin, and agreement with theory (HCM d1/d2, Webster stops, D/D/1)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import closed_form as cf
from models.cyclic import (
    CyclicEvaluator,
    CyclicNet,
    CyclicOptions,
    CyclicPlans,
    evaluate_batch,
    evaluate_profiles,
    robertson,
)
from tests.naive_models import naive_cyclic, naive_disperse, random_yielding

OPTS = CyclicOptions(period_h=0.25, overflow_ki=0.5, max_sweeps=400, tol_veh=1e-13, min_capacity_veh_s=1e-6)
FIELDS = ("flow_veh_h", "capacity_veh_h", "dos", "uniform_delay_s", "overflow_delay_s", "stops_per_veh",
          "max_queue_veh", "overflow_queue_veh")


def isolated(entry_veh_s, sat_veh_s, windows, period):
    """One candidate, movements without feeds; windows: per movement a list of (start, length, level)."""
    m = len(entry_veh_s)
    w = max(1, max(len(ws) for ws in windows))
    st_, ln, lv = np.zeros((1, m, w)), np.zeros((1, m, w)), np.zeros((1, m, w))
    for i, ws in enumerate(windows):
        for j, (a, b, c) in enumerate(ws):
            st_[0, i, j], ln[0, i, j], lv[0, i, j] = a, b, c
    net = CyclicNet(np.asarray(sat_veh_s, float), np.asarray(entry_veh_s, float), np.zeros(m + 1, np.int64),
                    np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64), np.zeros(0), np.arange(m))
    return net, CyclicPlans(np.array([period]), st_, ln, lv)


def assert_matches_naive(net, plans, opts=OPTS, rtol=1e-9):
    tot, mov = evaluate_batch(net, plans, opts)
    ntot, nmov = naive_cyclic(net, plans, opts)
    for f in FIELDS:
        np.testing.assert_allclose(getattr(mov, f), nmov[f], rtol=rtol, atol=1e-9, err_msg=f)
    for f in ("delay_veh_s_h", "stops_veh_h", "max_dos"):
        np.testing.assert_allclose(getattr(tot, f), ntot[f], rtol=rtol, atol=1e-9, err_msg=f)
    return tot, mov


# ---------------------------------------------------------------------------------------------------- theory


@pytest.mark.parametrize("flow_veh_h", [0.0, 100.0, 450.0, 700.0, 899.0])
@pytest.mark.parametrize("cycle,red", [(60, 30), (90, 37), (45, 5)])
def test_uniform_arrivals_equal_hcm_d1_and_webster_stops(flow_veh_h, cycle, red):
    sat_h = 1800.0
    net, plans = isolated([flow_veh_h / 3600], [sat_h / 3600], [[(red, cycle - red, 1.0)]], cycle)
    tot, mov = evaluate_batch(net, plans, OPTS)
    g = cycle - red
    x = cf.degree_of_saturation(flow_veh_h, sat_h, g, cycle)
    assert mov.dos[0, 0] == pytest.approx(float(x), rel=1e-12, abs=1e-15)
    assert mov.capacity_veh_h[0, 0] == pytest.approx(sat_h * g / cycle, rel=1e-12)
    if flow_veh_h > 0:
        assert mov.uniform_delay_s[0, 0] == pytest.approx(float(cf.hcm_uniform_delay(cycle, g, x)), rel=1e-12)
        assert mov.stops_per_veh[0, 0] == pytest.approx(float(cf.uniform_stop_rate(cycle, g, flow_veh_h, sat_h)),
                                                        rel=1e-12)
        # the queue peaks at the end of the red
        assert mov.max_queue_veh[0, 0] == pytest.approx(flow_veh_h / 3600 * red, rel=1e-12)
        cap_h = sat_h * g / cycle
        d2 = cf.hcm_incremental_delay(x, cap_h, OPTS.period_h, OPTS.overflow_ki)
        assert mov.overflow_delay_s[0, 0] == pytest.approx(float(d2), rel=1e-12)
        d = float(cf.hcm_uniform_delay(cycle, g, x) + d2)
        assert tot.delay_veh_s_h[0] == pytest.approx(flow_veh_h * d, rel=1e-12)
    else:
        assert tot.delay_veh_s_h[0] == 0.0 and tot.stops_veh_h[0] == 0.0


@pytest.mark.parametrize("x", [1.0, 1.2, 3.0])
def test_above_capacity_uniform_part_at_x1_and_overflow_is_hcm_d2(x):
    cycle, g, sat_h = 80, 32, 1900.0
    flow_h = x * sat_h * g / cycle
    net, plans = isolated([flow_h / 3600], [sat_h / 3600], [[(10, g, 1.0)]], cycle)
    _, mov = evaluate_batch(net, plans, OPTS)
    assert mov.dos[0, 0] == pytest.approx(x, rel=1e-12)
    assert mov.uniform_delay_s[0, 0] == pytest.approx(float(cf.hcm_uniform_delay(cycle, g, 1.0)), rel=1e-9)
    d2 = cf.hcm_incremental_delay(x, sat_h * g / cycle, OPTS.period_h, OPTS.overflow_ki)
    assert mov.overflow_delay_s[0, 0] == pytest.approx(float(d2), rel=1e-12)
    # all vehicles stop at or above capacity: Webster's h = (1 - lambda)/(1 - y) = 1 at X = 1
    assert mov.stops_per_veh[0, 0] == pytest.approx(1.0, rel=1e-9)
    # departures run at the saturation flow through the whole green
    _, cap, dep = evaluate_profiles(net, plans, OPTS)
    np.testing.assert_allclose(dep[0], cap[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("x", [0.6, 0.95, 1.3])
def test_overflow_delay_of_a_lane_group_is_hcm_d2_of_the_pooled_queue(x):
    """Two movements that share lanes (one lane group), green together: each gets HCM's d2 of one queue with their
    summed flow and capacity, not of a queue of its own; the uniform delay and X stay per movement."""
    cycle, g = 80, 32
    sat = np.array([1500.0, 300.0])  # a through movement and a turn with a small share of the shared lane
    flow = x * sat * g / cycle
    net, plans = isolated(flow / 3600, sat / 3600, [[(10, g, 1.0)], [(10, g, 1.0)]], cycle)
    alone = evaluate_batch(net, plans, OPTS)[1]
    pooled = evaluate_batch(net._replace(lane_group=np.array([0, 0])), plans, OPTS)[1]
    want = cf.hcm_incremental_delay(x, sat.sum() * g / cycle, OPTS.period_h, OPTS.overflow_ki)
    np.testing.assert_allclose(pooled.overflow_delay_s[0], want, rtol=1e-12)
    np.testing.assert_allclose(alone.overflow_delay_s[0], cf.hcm_incremental_delay(x, sat * g / cycle, OPTS.period_h,
                                                                                   OPTS.overflow_ki), rtol=1e-12)
    assert pooled.overflow_delay_s[0, 1] < alone.overflow_delay_s[0, 1]
    np.testing.assert_array_equal(pooled.dos, alone.dos)
    np.testing.assert_array_equal(pooled.uniform_delay_s, alone.uniform_delay_s)
    assert_matches_naive(net._replace(lane_group=np.array([0, 0])), plans)


def test_fractional_window_matches_deterministic_queue_area():
    """Green window starting mid-second: capacity is spread uniformly over the partial second; D/D/1 still holds."""
    cycle, sat, q = 50, 0.5, 0.12
    net, plans = isolated([q], [sat], [[(20.5, 25.0, 1.0)]], cycle)
    _, mov = evaluate_batch(net, plans, OPTS)
    # compare with a 1000x finer time grid of the same capacity profile
    _, cap, _ = evaluate_profiles(net, plans, OPTS)
    n = 1000
    rate = np.repeat(cap[0], n) / 1.0  # veh/s in every sub-step (capacity uniform within the second)
    dt = 1.0 / n
    qq, area = 0.0, 0.0
    for _ in range(2):
        area = 0.0
        for c in rate:
            q1 = max(0.0, qq + (q - c) * dt)
            area += 0.5 * (qq + q1) * dt
            qq = q1
    assert mov.uniform_delay_s[0, 0] == pytest.approx(area / (q * cycle), rel=1e-4)


def test_zero_demand_zero_green_full_green():
    net, plans = isolated([0.0, 0.1, 0.1, 0.0], [0.5, 0.5, 0.5, 0.5],
                          [[(0, 30, 1.0)], [], [(0, 60, 0.7)], []], 60)
    tot, mov = assert_matches_naive(net, plans)
    assert mov.uniform_delay_s[0, 0] == 0.0 and mov.dos[0, 0] == 0.0
    # zero green with demand: no service, capacity floored, huge but finite overflow delay, everyone stops
    assert np.isfinite(mov.overflow_delay_s[0, 1]) and mov.overflow_delay_s[0, 1] > 1e5
    assert mov.stops_per_veh[0, 1] == 1.0
    assert mov.capacity_veh_h[0, 1] == pytest.approx(OPTS.min_capacity_veh_s * 3600)
    # always green below saturation: no delay at all apart from the random term
    assert mov.uniform_delay_s[0, 2] == 0.0 and mov.stops_per_veh[0, 2] == 0.0
    assert mov.dos[0, 2] == pytest.approx(0.1 / 0.35)
    assert np.isfinite(tot.delay_veh_s_h).all()


# ------------------------------------------------------------------------------------------------ dispersion


@pytest.mark.parametrize("keep", [0.0, 0.2, 0.6, 0.9])
def test_robertson_conserves_volume_and_matches_naive(keep):
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, 73)
    out = np.zeros_like(x)
    robertson(x, 17, keep, out)
    assert out.sum() == pytest.approx(x.sum(), rel=1e-12)
    np.testing.assert_allclose(out, naive_disperse(list(x), 17, keep), rtol=1e-11, atol=1e-13)


def test_robertson_mean_delay_is_shift_plus_geometric_lag():
    p, shift, keep = 2000, 12, 0.7
    x = np.zeros(p)
    x[0] = 1.0
    out = np.zeros(p)
    robertson(x, shift, keep, out)
    mean = (np.arange(p) * out).sum()
    assert mean == pytest.approx(shift + keep / (1 - keep), rel=1e-12)


def chain(period, up_window, down_window, travel, keep, entry=0.15, sat=0.5, share=1.0):
    """Two movements in series: 0 feeds 1 with ``share``, travel time ``travel`` (shift), dispersion ``keep``."""
    net = CyclicNet(np.array([sat, sat]), np.array([entry, 0.0]), np.array([0, 0, 1]), np.array([0]),
                    np.array([share]), np.array([travel]), np.array([keep]), np.array([0, 1]))
    st_ = np.array([[[up_window[0]], [down_window[0]]]], float)
    ln = np.array([[[up_window[1]], [down_window[1]]]], float)
    return net, CyclicPlans(np.array([period]), st_, ln, np.ones_like(st_))


def test_free_flow_travel_time_green_wave_has_no_downstream_delay():
    period, travel = 60, 23
    net, plans = chain(period, (0, 30), (travel, 30), travel, 0.0)
    arr, _, dep = evaluate_profiles(net, plans, OPTS)
    np.testing.assert_allclose(arr[1], np.roll(dep[0], travel), atol=1e-15)
    _, mov = assert_matches_naive(net, plans)
    assert mov.uniform_delay_s[0, 1] == 0.0 and mov.stops_per_veh[0, 1] == 0.0
    assert mov.flow_veh_h[0, 1] == pytest.approx(mov.flow_veh_h[0, 0])
    # the same platoon against a red wall: it waits
    net, plans = chain(period, (0, 30), (travel + 30, 30), travel, 0.0)
    _, mov = evaluate_batch(net, plans, OPTS)
    assert mov.uniform_delay_s[0, 1] > 10.0


def test_upstream_oversaturation_caps_downstream_flow():
    net, plans = chain(60, (0, 20), (0, 60), 10, 0.3, entry=0.4, sat=0.5)
    _, mov = assert_matches_naive(net, plans)
    assert mov.dos[0, 0] > 1
    assert mov.flow_veh_h[0, 1] == pytest.approx(mov.capacity_veh_h[0, 0], rel=1e-12)


def test_feed_loop_converges_to_naive():
    # 0 -> 1 -> 2 -> 0 loop with partial shares, plus entries everywhere
    net = CyclicNet(np.full(3, 0.5), np.array([0.1, 0.05, 0.08]), np.array([0, 1, 2, 3]), np.array([2, 0, 1]),
                    np.array([0.3, 0.6, 0.5]), np.array([15, 22, 9]), np.array([0.4, 0.5, 0.2]),
                    np.array([0, 1, 2]))
    st_ = np.array([[[0.0], [31.0], [12.0]]])
    ln = np.array([[[35.0], [28.0], [40.0]]])
    plans = CyclicPlans(np.array([70]), st_, ln, np.ones_like(st_))
    tot, _ = assert_matches_naive(net, plans)
    assert 2 < tot.sweeps[0] <= OPTS.max_sweeps


# ------------------------------------------------------------------------------------------- random vs twin


@st.composite
def random_case(draw):
    m = draw(st.integers(1, 5))
    k = draw(st.integers(1, 3))
    w = 2
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # DAG feeds: movement i takes feeds only from j < i (the order is 0..M-1)
    ptr, src = [0], []
    for i in range(m):
        ups = [j for j in range(i) if rng.random() < 0.5]
        src += ups
        ptr.append(len(src))
    e = len(src)
    net = CyclicNet(
        rng.uniform(0.2, 0.6, m), rng.uniform(0.0, 0.25, m) * (rng.random(m) < 0.85), np.array(ptr, np.int64),
        np.array(src, np.int64), rng.uniform(0.1, 0.7, e), rng.integers(0, 90, e), rng.uniform(0, 0.8, e) *
        (rng.random(e) < 0.8), np.arange(m), rng.uniform(0, 6, m) if rng.random() < 0.5 else None,
        random_yielding(rng, m) if rng.random() < 0.6 else None,
        rng.integers(0, max(1, m // 2 + 1), m) if rng.random() < 0.5 else None,  # lane groups (ids < M)
    )
    period = rng.integers(10, 91, k)
    st_ = np.zeros((k, m, w))
    ln = np.zeros((k, m, w))
    lv = np.zeros((k, m, w))
    for kk in range(k):
        p = period[kk]
        half = p / 2
        st_[kk, :, 0] = rng.uniform(0, half, m)
        ln[kk, :, 0] = rng.uniform(0, 1, m) * (half - st_[kk, :, 0])
        st_[kk, :, 1] = rng.uniform(half, p, m)
        ln[kk, :, 1] = rng.uniform(0, half, m) * (rng.random(m) < 0.5)  # may wrap past the period end
        if rng.random() < 0.2:
            st_[kk, :, :] = np.round(st_[kk])  # integer windows too
            ln[kk, :, :] = np.round(ln[kk])
        lv[kk] = rng.choice([1.0, 0.5, 0.3], (m, w))
    return net, CyclicPlans(period, st_, ln, lv)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_case(), st.booleans())
def test_random_cases_match_naive(case, in_window):
    net, plans = case
    assert_matches_naive(net, plans, OPTS._replace(overflow_in_window=in_window))


def test_overflow_in_window_and_stop_penalty():
    cycle, g, sat_h, x = 80, 32, 1900.0, 2.5
    flow_h = x * sat_h * g / cycle
    net, plans = isolated([flow_h / 3600], [sat_h / 3600], [[(10, g, 1.0)]], cycle)
    tot, mov = evaluate_batch(net, plans, OPTS)
    tot_w, mov_w = evaluate_batch(net, plans, OPTS._replace(overflow_in_window=True))
    assert mov_w.overflow_delay_s[0, 0] == pytest.approx(mov.overflow_delay_s[0, 0] / x, rel=1e-12)
    # deterministic limit: the delay incurred within T by vehicles arriving in T is T (1 - 1/X) / 2
    assert mov_w.overflow_delay_s[0, 0] == pytest.approx(OPTS.period_h * 3600 * (1 - 1 / x) / 2, rel=0.02)
    tot_p, mov_p = evaluate_batch(net._replace(stop_penalty_s=np.array([4.0])), plans, OPTS)
    assert tot_p.delay_veh_s_h[0] == pytest.approx(tot.delay_veh_s_h[0] + flow_h * mov.stops_per_veh[0, 0] * 4.0)


def test_batch_equals_one_by_one_and_threads_agree():
    import numba

    net, plans = chain(60, (0, 30), (17, 25), 17, 0.35)
    k = 37
    rng = np.random.default_rng(0)
    plans = CyclicPlans(np.full(k, 60), rng.uniform(0, 60, (k, 2, 1)), rng.uniform(5, 50, (k, 2, 1)),
                        np.ones((k, 2, 1)))
    tot, mov = evaluate_batch(net, plans, OPTS, n_threads=1)
    tot2, mov2 = evaluate_batch(net, plans, OPTS, n_threads=2)
    _, nomov = evaluate_batch(net, plans, OPTS, per_movement=False)
    assert nomov.dos.shape == (0, 2)
    np.testing.assert_array_equal(tot.delay_veh_s_h, tot2.delay_veh_s_h)
    np.testing.assert_array_equal(mov.dos, mov2.dos)
    for i in (0, 13, 36):
        one = CyclicPlans(plans.period_s[i:i + 1], plans.win_start_s[i:i + 1], plans.win_len_s[i:i + 1],
                          plans.win_level[i:i + 1])
        t1, _ = evaluate_batch(net, one, OPTS)
        assert t1.delay_veh_s_h[0] == tot.delay_veh_s_h[i]
    assert numba.get_num_threads() >= 1


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_case(), st.integers(1, 2))
def test_reusable_evaluator_equals_evaluate_batch(case, n_threads):
    net, plans = case
    ev = CyclicEvaluator(net, OPTS, n_threads=n_threads)
    for _ in range(2):  # scratch reused across calls
        tot, mov = ev(plans, per_movement=True)
        tot0, mov0 = evaluate_batch(net, plans, OPTS, n_threads=n_threads)
        for a, b in zip(tot + mov, tot0 + mov0, strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        ev(plans._replace(win_len_s=plans.win_len_s[:, :0]))


def test_bad_shapes_raise():
    net, plans = chain(60, (0, 30), (17, 25), 17, 0.35)
    with pytest.raises(ValueError):
        evaluate_batch(net, plans._replace(win_len_s=plans.win_len_s[:, :1]), OPTS)
    with pytest.raises(ValueError):
        evaluate_batch(net._replace(order=np.array([0, 0])), plans, OPTS)
    with pytest.raises(ValueError):
        evaluate_batch(net._replace(in_keep=np.array([1.0])), plans, OPTS)
    with pytest.raises(ValueError, match="lane_group"):
        evaluate_batch(net._replace(lane_group=np.array([0, 2])), plans, OPTS)
