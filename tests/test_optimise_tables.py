"""engine.optimise.tables: the offset-table kernel against a naive twin; split tables against the closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from engine.optimise.tables import OffsetRows, Profiles, offset_tables, split_cost_table
from models import closed_form
from tests.naive_models import naive_disperse, naive_queue_period


def naive_offset_tables(rows: OffsetRows, prof: Profiles, stop_cost: float) -> np.ndarray:
    """Obviously right and slow: disperse each platoon, shift it, simulate the periodic queue for every shift."""
    n_rows = rows.dst.shape[0]
    c = prof.arrivals.shape[1]
    out = np.zeros((n_rows, c))
    for r in range(n_rows):
        m = int(rows.dst[r])
        contrib = np.zeros(c)
        for f in range(int(rows.feed_ptr[r]), int(rows.feed_ptr[r + 1])):
            d = naive_disperse(list(prof.departures[int(rows.feed_src[f])]), int(rows.feed_shift[f]),
                               float(rows.feed_keep[f]))
            contrib += rows.feed_share[f] * np.array(d)
        rest = np.maximum(prof.arrivals[m] - contrib, 0.0)
        for s in range(c):
            arr = rest + np.roll(contrib, s)
            scale = min(1.0, prof.capacity[m].sum() / arr.sum()) if arr.sum() > 0 else 1.0
            _, area, met, _ = naive_queue_period(list(scale * arr), list(prof.capacity[m]))
            out[r, s] = area + stop_cost * met
    return out


def _random_case(rng, c: int, n_mov: int = 4, overloaded: bool = False):
    cap = np.zeros((n_mov, c))
    for m in range(n_mov):
        g0 = rng.integers(0, c)
        g = rng.integers(c // 4, 3 * c // 4)
        idx = (g0 + np.arange(g)) % c
        cap[m, idx] = 0.5
    dep = rng.random((n_mov, c)) * 0.3
    arr = rng.random((n_mov, c)) * (0.4 if overloaded else 0.12)
    rows = OffsetRows(np.array([1, 2, 3]), np.array([0, 1, 3, 4]), np.array([0, 0, 2, 1]),
                      np.array([0.7, 0.2, 0.5, 1.0]), np.array([5, 0, 12, 3]), np.array([0.3, 0.0, 0.6, 0.1]))
    # the arrivals a movement sees include its platoons
    arr = arr.copy()
    for r in range(3):
        for f in range(rows.feed_ptr[r], rows.feed_ptr[r + 1]):
            d = naive_disperse(list(dep[rows.feed_src[f]]), int(rows.feed_shift[f]), float(rows.feed_keep[f]))
            arr[rows.dst[r]] += rows.feed_share[f] * np.array(d)
    return rows, Profiles(arr, cap, dep)


@pytest.mark.parametrize("c, overloaded", [(20, False), (37, False), (24, True)])
def test_offset_tables_match_naive_twin(c, overloaded):
    rng = np.random.default_rng(c)
    rows, prof = _random_case(rng, c, overloaded=overloaded)
    fast = offset_tables(rows, prof, stop_cost_s=7.0)
    slow = naive_offset_tables(rows, prof, 7.0)
    np.testing.assert_allclose(fast, slow, rtol=1e-7, atol=1e-7)


def test_offset_table_zero_shift_reproduces_profile_cost():
    """Shift 0 keeps the plan: the row cost equals the periodic queue of the unshifted arrivals."""
    rng = np.random.default_rng(5)
    rows, prof = _random_case(rng, 30)
    fast = offset_tables(rows, prof, 0.0)
    for r in range(3):
        m = int(rows.dst[r])
        arr = prof.arrivals[m] * min(1.0, prof.capacity[m].sum() / prof.arrivals[m].sum())
        _, area, _, _ = naive_queue_period(list(arr), list(prof.capacity[m]))
        assert fast[r, 0] == pytest.approx(area, rel=1e-9, abs=1e-9)


def test_offset_tables_empty_rows_and_shape_errors():
    prof = Profiles(np.zeros((2, 10)), np.ones((2, 10)), np.zeros((2, 10)))
    empty = OffsetRows(*(np.zeros(0, t) for t in (np.int64,)), np.zeros(1, np.int64), np.zeros(0, np.int64),
                       np.zeros(0), np.zeros(0, np.int64), np.zeros(0))
    assert offset_tables(empty, prof, 1.0).shape == (0, 10)
    with pytest.raises(ValueError):
        offset_tables(empty, Profiles(np.zeros((2, 10)), np.ones((2, 9)), np.zeros((2, 10))), 1.0)


def test_split_cost_table_is_the_closed_form():
    q, s, c, t_h, k = 400.0, 1800.0, 80.0, 1.0, 12.0
    g = np.arange(5, 70, dtype=float)
    tab = split_cost_table(q, s, c, g, t_h, k)
    cap = s * g / c
    x = q / cap
    want = q * (closed_form.hcm_uniform_delay(c, g, x) + closed_form.hcm_incremental_delay(x, cap, t_h, 0.5)) \
        + k * q * closed_form.uniform_stop_rate(c, g, q, s)
    np.testing.assert_allclose(tab, want, rtol=1e-12)
    assert np.all(np.diff(tab) < 0)  # more green, less cost, for a movement with demand
    assert np.all(split_cost_table(0.0, s, c, g, t_h, k) == 0)
    assert split_cost_table(q, s, c, np.array([0.0]), t_h, k)[0] >= 1e9
