"""The cyclic model's fast paths give the same numbers, bit for bit, as the plain second-by-second forms they
replace (models.cyclic: capacity without a modulo per second, the periodic queue in two ranges with red seconds
written out, the departures-only queue, the giving-way factor per lane group); the naive twins check the model
itself (test_models_cyclic.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import cyclic
from tests.naive_models import naive_capacity


def plain_capacity(sat, starts, lens, levels, p):
    """The second-by-second form: every second of a window, modulo P."""
    cap = np.zeros(p)
    for w in range(starts.shape[0]):
        length = lens[w]
        if length <= 0.0:
            continue
        v = levels[w] * sat
        if length >= p:
            cap += v
            continue
        a = starts[w]
        b = a + length
        i = int(np.floor(a))
        while i < b:
            lo = a if a > i else float(i)
            hi = b if b < i + 1 else float(i + 1)
            cap[i % p] += v * (hi - lo)
            i += 1
    return cap


def plain_queue(arr, cap, scale, p, r):
    """The periodic queue second by second from r, with the one-second update for every second."""
    dep = np.zeros(p)
    q0 = 0.0
    for _ in range(2):
        q, area, stopped, q_max = q0, 0.0, 0.0, q0
        t = r
        for _i in range(p):
            q, d, ar, st = cyclic._queue_second.py_func(q, scale * arr[t], cap[t])
            area += ar
            stopped += st
            q_max = max(q_max, q)
            dep[t] = d
            t = (t + 1) % p
        if q <= 0.0:
            break
        q0 = q
    return area, stopped, q_max, dep


def random_windows(rng, p):
    w = int(rng.integers(1, 4))
    starts = rng.uniform(0, p, w)
    lens = rng.uniform(0, 0.7 * p, w) * (rng.random(w) < 0.85)
    if rng.random() < 0.3:
        starts, lens = np.floor(starts), np.round(lens)
    if rng.random() < 0.05:
        lens[0] = p + rng.random()
    if rng.random() < 0.1:
        starts[0] = rng.choice([-1.0, 1.0]) * rng.uniform(0, 2 * p) + (p if rng.random() < 0.5 else 0.0)
    return starts, lens, rng.choice([1.0, 0.5, 0.3], w)


@pytest.mark.parametrize("seed", range(4))
def test_capacity_equals_the_second_by_second_form(seed):
    rng = np.random.default_rng(seed)
    for _ in range(500):
        p = int(rng.integers(1, 130))
        starts, lens, levels = random_windows(rng, p)
        sat = float(rng.uniform(0.1, 0.6))
        cap = np.full(p + 2, -1.0)
        cyclic._build_capacity(sat, starts, lens, levels, p, cap)
        assert np.array_equal(cap[:p], plain_capacity(sat, starts, lens, levels, p))
        if np.all((starts >= 0) & (starts < p)):
            np.testing.assert_allclose(cap[:p], naive_capacity(sat, starts, lens, levels, p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_periodic_queue_and_departures_equal_the_second_by_second_form(seed):
    rng = np.random.default_rng(seed)
    for _ in range(300):
        p = int(rng.integers(1, 120))
        starts, lens, levels = random_windows(rng, p)
        cap = np.zeros(p)
        cyclic._build_capacity(float(rng.uniform(0.2, 0.6)), starts, lens, levels, p, cap)
        arr = rng.uniform(0.0, 0.4, p) * (rng.random(p) < 0.9) if rng.random() < 0.5 else np.full(p, rng.uniform(0, .3))
        a_sum, c_sum = arr.sum(), cap.sum()
        scale = c_sum / a_sum if a_sum > c_sum else 1.0
        r = int(rng.integers(0, p))
        dep = np.full(p, -1.0)
        got = cyclic._periodic_queue(arr, cap, scale, p, r, dep)
        area, stopped, q_max, want = plain_queue(arr, cap, scale, p, r)
        assert got == (area, stopped, q_max)
        assert np.array_equal(dep, want)
        dep_only = np.full(p, -1.0)
        cyclic._periodic_departures(arr, cap, scale, p, r, dep_only)
        assert np.array_equal(dep_only, want)


def plain_give_way(net, m, dep, p, cap):
    """The factor movement by movement: for every second with capacity, every group's opposing flow and exponential."""
    n_mov = net.sat_veh_s.shape[0]
    acc = np.zeros(p)
    for e in range(net.yield_mg_ptr[m], net.yield_mg_ptr[m + 1]):
        g = net.yield_mg_group[e]
        for t in range(p):
            if cap[t] <= 0.0:
                continue
            q = 0.0
            for i in range(net.yield_opp_ptr[g], net.yield_opp_ptr[g + 1]):
                q += dep[n_mov + net.yield_opp_mov[i], t]
            if q > 0.0:
                phi = math.exp(-net.yield_gap_s * q)  # libm, as the kernels (numpy may differ by an ulp)
                acc[t] += net.yield_mg_weight[e] * (phi / ((1.0 - net.yield_mix[g]) * phi + net.yield_mix[g]) - 1.0)
    return cap * (1.0 + acc)


def test_giving_way_by_lane_group_equals_the_movement_by_movement_form():
    from tests.naive_models import random_yielding

    rng = np.random.default_rng(7)
    n_checked = 0
    for _ in range(200):
        n_mov = int(rng.integers(2, 7))
        y = random_yielding(rng, n_mov)
        if y is None or y.mix.shape[0] == 0:
            continue
        net = cyclic.CyclicNet(np.full(n_mov, 0.5), np.zeros(n_mov), np.zeros(n_mov + 1, np.int64),
                               np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64), np.zeros(0),
                               np.arange(n_mov), None, y)
        p = int(rng.integers(1, 100))
        plans = cyclic.CyclicPlans(np.array([p]), np.zeros((1, n_mov, 1)), np.ones((1, n_mov, 1)),
                                   np.ones((1, n_mov, 1)))
        knet = cyclic._normalise(net, plans, cyclic.CyclicOptions(1.0, 0.5, 1, 1e-9, 1e-6))[0]
        dep = rng.uniform(0, 0.6, (2 * n_mov, p)) * (rng.random((2 * n_mov, p)) < 0.7)
        dep[:, rng.random(p) < 0.3] = dep[0, 0]  # flat runs: the exponential is reused
        gfac = np.zeros((y.mix.shape[0], p))
        for g in range(y.mix.shape[0]):
            cyclic._group_factor(knet, g, dep, p, gfac[g])
        for m in range(n_mov):
            if y.mg_ptr[m + 1] == y.mg_ptr[m]:
                continue
            cap = rng.uniform(0, 0.5, p) * (rng.random(p) < 0.6)
            got = cap.copy()
            cyclic._give_way(knet, m, gfac, p, got, np.zeros(p))
            assert np.array_equal(got, plain_give_way(knet, m, dep, p, cap))
            n_checked += 1
    assert n_checked > 50
