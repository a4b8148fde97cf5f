"""Cost tables for the CP-SAT models: per-movement cost over capacity-green, and per-link cost over offset difference.

Cost unit throughout: vehicle-seconds of delay per hour plus ``stop_cost_s`` times stops per hour, each movement's
cost times its objective weight (bus weight) where the caller applies it, plus the weighted pedestrian delay (the
objective of :mod:`engine.optimise.evaluation`).

* :func:`split_cost_table` (closed form, numpy): a movement with demand q and saturation flow s at cycle C and
  capacity-green E (level-weighted effective green, s) costs q (d1 + d2) + k q h, with HCM uniform delay d1,
  incremental delay d2 over the demand window and the uniform-arrival stop rate h (1 above capacity): the isolated,
  random-arrival cost that the cyclic model also charges (its overflow term is the same d2).
* :func:`ped_cost_table`: W_ped P (C - g)^2 / (2 C) over walk greens g (HCM pedestrian delay times the crossing's
  pedestrian flow times the pedestrian weight).
* :func:`offset_tables` (numba, three layers): for each *row* (an upstream signal i and a downstream movement m of
  another signal), the platoon that i's movements send to m (their departure profiles, dispersed by Robertson's
  recursion as in :mod:`models.cyclic`) is shifted by r = 0..C-1 seconds against m's capacity profile, with m's
  other arrivals held where they are. The periodic point queue gives delay and stops for each r: the TRANSYT-style
  offset-difference table of that link, from the steady-state profiles of the full cyclic model.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from models import closed_form
from models.cyclic import robertson

BIG_COST = 10**9  # cost of a movement without capacity (never chosen when anything else is possible)


def split_cost_table(flow_veh_h: float, sat_veh_h: float, cycle_s: float, green_s: np.ndarray, period_h: float,
                     stop_cost_s: float) -> np.ndarray:
    """Cost (veh-s/h + k stops/h) of one movement for each capacity-green in ``green_s`` (s), float64."""
    g = np.asarray(green_s, np.float64)
    if flow_veh_h <= 0:
        return np.zeros(g.shape)
    g_pos = np.clip(g, 1e-6, cycle_s)
    cap = np.maximum(sat_veh_h * g_pos / cycle_s, 1.0)
    x = flow_veh_h / cap
    d1 = closed_form.hcm_uniform_delay(cycle_s, g_pos, x)
    d2 = closed_form.hcm_incremental_delay(x, cap, period_h, 0.5)
    h = closed_form.uniform_stop_rate(cycle_s, g_pos, flow_veh_h, sat_veh_h)
    cost = flow_veh_h * (d1 + d2) + stop_cost_s * flow_veh_h * h
    return np.where(g > 0, np.minimum(cost, BIG_COST), BIG_COST)


def ped_cost_table(ped_flow_h: float, ped_weight: float, cycle_s: float, walk_green_s: np.ndarray) -> np.ndarray:
    """Pedestrian cost (weighted ped-s/h) of one crossing link for each walk green in ``walk_green_s`` (s), float64:
    ped_weight * ped_flow_h * (C - g)^2 / (2 C) (:func:`engine.optimise.evaluation.ped_delay_s`)."""
    from engine.optimise.evaluation import ped_delay_s

    return float(ped_weight) * float(ped_flow_h) * ped_delay_s(float(cycle_s), np.asarray(walk_green_s, np.float64))


# --------------------------------------------------------------------------------------------- offset tables


class OffsetRows(NamedTuple):
    """R rows, each (upstream signal, downstream movement m), with CSR feeds into m from that signal.

    dst: int64 (R,) local movement index of m. feed_ptr: int64 (R+1,). feed_src: int64 (F,) local upstream movement.
    feed_share, feed_keep: float64 (F,) share and Robertson 1 - F. feed_shift: int64 (F,) delay-line shift, s.
    """

    dst: np.ndarray
    feed_ptr: np.ndarray
    feed_src: np.ndarray
    feed_share: np.ndarray
    feed_shift: np.ndarray
    feed_keep: np.ndarray


class Profiles(NamedTuple):
    """Steady-state profiles of one plan, float64 (M, C), vehicles per second in each second of the cycle."""

    arrivals: np.ndarray
    capacity: np.ndarray
    departures: np.ndarray


@njit(cache=True)
def _periodic_queue_cost(arr, contrib, cap, shift, stop_cost):
    """Delay (veh-s) and stops per cycle with arrivals arr[t] + contrib[t - shift] against capacity cap[t]."""
    c = arr.shape[0]
    a_sum = 0.0
    c_sum = 0.0
    for t in range(c):
        a_sum += arr[t] + contrib[t]
        c_sum += cap[t]
    scale = c_sum / a_sum if a_sum > c_sum and a_sum > 0.0 else 1.0
    q = 0.0
    for t in range(c):  # warm-up cycle: afterwards the queue is periodic
        j = t - shift
        if j < 0:
            j += c
        q += scale * (arr[t] + contrib[j]) - cap[t]
        if q < 0.0:
            q = 0.0
    area = 0.0
    stopped = 0.0
    for t in range(c):
        j = t - shift
        if j < 0:
            j += c
        a = scale * (arr[t] + contrib[j])
        q1 = q + a - cap[t]
        if q1 >= 0.0:
            area += 0.5 * (q + q1)
            if q > 0.0 or q1 > 0.0:
                stopped += a
            q = q1
        else:
            if q > 0.0:
                tau = q / (cap[t] - a)
                area += 0.5 * q * tau
                stopped += a * tau
            q = 0.0
    return area + stop_cost * stopped


@njit(cache=True, parallel=True)
def _offset_tables_kernel(rows, arrivals, capacity, departures, stop_cost, out):
    n_rows = rows.dst.shape[0]
    c = arrivals.shape[1]
    for r in prange(n_rows):
        m = rows.dst[r]
        contrib = np.zeros(c)
        tmp = np.zeros(c)
        for f in range(rows.feed_ptr[r], rows.feed_ptr[r + 1]):
            robertson(departures[rows.feed_src[f]], rows.feed_shift[f], rows.feed_keep[f], tmp)
            sh = rows.feed_share[f]
            for t in range(c):
                contrib[t] += sh * tmp[t]
        rest = np.empty(c)
        for t in range(c):
            v = arrivals[m, t] - contrib[t]
            rest[t] = v if v > 0.0 else 0.0
        for s in range(c):
            out[r, s] = _periodic_queue_cost(rest, contrib, capacity[m], s, stop_cost)


def offset_tables(rows: OffsetRows, prof: Profiles, stop_cost_s: float) -> np.ndarray:
    """Cost per cycle of each row for each shift of its platoon, float64 (R, C) in (veh-s + k stops) per cycle.

    Shift s means the upstream signal's program runs s seconds later relative to the downstream one than in the
    plan the profiles come from (s = 0: as in that plan).
    """
    arr = np.ascontiguousarray(prof.arrivals, np.float64)
    cap = np.ascontiguousarray(prof.capacity, np.float64)
    dep = np.ascontiguousarray(prof.departures, np.float64)
    if not (arr.shape == cap.shape == dep.shape) or arr.ndim != 2:
        raise ValueError("profiles must all have shape (M, C)")
    n_rows = rows.dst.shape[0]
    if rows.feed_ptr.shape != (n_rows + 1,):
        raise ValueError("rows.feed_ptr must have R+1 entries")
    rows = OffsetRows(*(np.ascontiguousarray(a, t) for a, t in zip(
        rows, (np.int64, np.int64, np.int64, np.float64, np.int64, np.float64), strict=True)))
    out = np.zeros((n_rows, arr.shape[1]))
    if n_rows:
        _offset_tables_kernel(rows, arr, cap, dep, float(stop_cost_s), out)
    return out
