"""Closed forms: Webster's cycle and splits on textbook numbers, HCM delay terms and their limits."""

from __future__ import annotations

import numpy as np
import pytest

from models import closed_form as cf


def test_webster_cycle_worked_example():
    # L = 16 s, Y = 0.5 -> C0 = (1.5*16 + 5) / 0.5 = 58 s
    assert cf.webster_cycle(16, 0.5) == pytest.approx(58.0)
    np.testing.assert_allclose(cf.webster_cycle([16, 10], [0.5, 0.0]), [58.0, 20.0])
    assert cf.webster_cycle(16, 0.99, max_cycle_s=120) == 120
    assert cf.webster_cycle(16, 1.2, max_cycle_s=120) == 120
    assert np.isinf(cf.webster_cycle(16, 1.0))
    assert cf.webster_cycle(4, 0.1, min_cycle_s=30) == 30


def test_webster_splits_are_proportional_and_fill_the_cycle():
    g = cf.webster_splits(np.array([0.3, 0.15, 0.05]), 90, 12)
    assert g.sum() == pytest.approx(78)
    np.testing.assert_allclose(g / g.sum(), [0.6, 0.3, 0.1])
    np.testing.assert_allclose(cf.webster_splits(np.zeros(3), 60, 12), [16, 16, 16])
    with pytest.raises(ValueError):
        cf.webster_splits(np.array([0.1]), 10, 12)
    with pytest.raises(ValueError):
        cf.webster_splits(np.array([-0.1]), 60, 12)


def test_hcm_uniform_delay_is_the_queue_triangle():
    # uniform arrivals, C = 60, g = 30, q = 0.1 veh/s, s = 0.5 veh/s: queue grows 3 veh in the red, clears in 7.5 s
    # area = 0.5 * 3 * (30 + 7.5) = 56.25 veh*s per cycle over 6 vehicles -> 9.375 s/veh
    x = cf.degree_of_saturation(360, 1800, 30, 60)
    assert x == pytest.approx(0.4)
    assert cf.hcm_uniform_delay(60, 30, x) == pytest.approx(9.375)
    # above capacity the uniform term is frozen at X = 1
    assert cf.hcm_uniform_delay(60, 30, 1.7) == pytest.approx(cf.hcm_uniform_delay(60, 30, 1.0))
    assert cf.hcm_uniform_delay(60, 60, 0.5) == 0.0


def test_hcm_incremental_delay_limits():
    # zero flow -> 0; heavy oversaturation -> the deterministic 1800 T (X - 1) asymptote
    assert cf.hcm_incremental_delay(0.0, 900, 0.25) == 0.0
    x, c, t = 1.5, 900.0, 1.0
    d2 = cf.hcm_incremental_delay(x, c, t)
    assert d2 == pytest.approx(1800 * t * (x - 1), rel=1e-2)
    assert d2 > 1800 * t * (x - 1)
    # X = 1: 900 T sqrt(4/(cT))
    assert cf.hcm_incremental_delay(1.0, 900, 0.25) == pytest.approx(900 * 0.25 * np.sqrt(4 / (900 * 0.25)))
    assert np.isinf(cf.hcm_incremental_delay(0.5, 0.0, 1.0))


def test_hcm_delay_is_sum_and_webster_delay_first_term_is_d1():
    d = cf.hcm_delay(60, 30, 360, 1800, 0.25)
    x = 0.4
    assert d == pytest.approx(9.375 + cf.hcm_incremental_delay(x, 900, 0.25))
    w = cf.webster_delay(60, 30, 360, 1800)
    q = 0.1
    expected = 9.375 + x**2 / (2 * q * (1 - x)) - 0.65 * (60 / q**2) ** (1 / 3) * x ** (2 + 5 * 0.5)
    assert w == pytest.approx(expected)
    assert np.isinf(cf.webster_delay(60, 30, 900, 1800))
    assert cf.webster_delay(60, 30, 0, 1800) == pytest.approx(0.5 * 60 * 0.25)


def test_uniform_stop_rate():
    assert cf.uniform_stop_rate(60, 30, 360, 1800) == pytest.approx(0.5 / 0.8)
    assert cf.uniform_stop_rate(60, 30, 1900, 1800) == 1.0
    assert cf.uniform_stop_rate(60, 60, 100, 1800) == 0.0


def test_random_delay_is_d2_less_its_deterministic_asymptote():
    c, t = 900.0, 1.0
    x = np.array([0.0, 0.5, 0.9, 1.0, 1.2, 2.0, 10.0])
    r = cf.random_delay(x, c, t, 0.5)
    d2 = cf.hcm_incremental_delay(x, c, t, 0.5)
    # below and at capacity all of d2 is random delay
    np.testing.assert_allclose(r[:4], d2[:4])
    assert r[0] == 0.0
    # at X = 1: 900 sqrt(8 kI T / c)
    assert r[3] == pytest.approx(900.0 * np.sqrt(8 * 0.5 * t / c))
    # above: d2 - 1800 T (X - 1), falling towards 3600 kI / c (the queue model steps the deterministic part itself)
    np.testing.assert_allclose(r[4:], d2[4:] - 1800.0 * t * (x[4:] - 1.0))
    assert np.all(np.diff(r[3:]) < 0)
    np.testing.assert_allclose(r[4:], 3600 * 0.5 / c * x[4:] / (x[4:] - 1), rtol=0.15)
    assert cf.random_delay(1e4, c, t, 0.5) == pytest.approx(3600 * 0.5 / c, rel=1e-3)
    assert np.all(cf.random_delay(x, c, t, 0.0) == 0.0)
