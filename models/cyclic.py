"""TRANSYT-style cyclic flow profile model: K candidate fixed-time plans evaluated in one call.

Every movement gets a one-second arrival profile over the common period P of a candidate (the cycle, or the least
common multiple of the signals' cycles). The arrival profile is the movement's entry flow (uniform) plus, for each
upstream movement u that feeds it, ``share * disperse(departures_u)``: the departure profile shifted by the travel
time and smoothed by Robertson's recursive platoon dispersion,

    y[t] = F x[t - shift] + (1 - F) y[t - 1],       F = 1 / (1 + alpha beta T_a),  shift = round(beta T_a),

solved exactly for the periodic profile. A deterministic point queue per movement discharges at
``sat_flow * level(t)`` (effective green windows: start-up lost time and end gain already applied, permissive
greens at a reduced level). A movement that gives way (models.yielding) has that capacity multiplied, second by
second, by its gap-acceptance factor from the opposing movements' departure profiles, plus its sneakers at the end
of each window. Movements are swept in a given order until the departure profiles stop changing (the
periodic steady state); on a network without feeds one sweep is exact.

Within each second arrivals and capacity are uniform, so the queue is piecewise linear and the delay (area under
the queue) is exact: for uniform arrivals and integer windows the uniform delay equals HCM d1 to rounding.
Above capacity (X > 1) the profile is scaled to capacity (the queue's periodic part; downstream receives the
capacity flow) and the excess goes into the overflow term, the HCM / Kimber-Hollis form over the analysis period T:

    d2 = 900 T [(X - 1) + sqrt((X - 1)^2 + 8 kI X / (c T))]   (s/veh, c in veh/h, T in h).

The periodic queue: starting from an empty queue at any second, one period later the queue equals the periodic
one (when arrivals per period do not exceed capacity, a longer history only adds whole periods of net outflow), so
at most two passes are needed; the pass starts where the movement's green ends, where the queue is usually already
empty and one pass suffices. A movement whose upstream profiles did not change since its last evaluation is not
evaluated again.

Stops: arrivals during the part of a second in which a queue is present (Webster's (1 - lambda) / (1 - y) for
uniform arrivals); above capacity the excess share of vehicles counts as stopped. Outputs per movement and totals.

Layers: :func:`evaluate_batch` checks shapes and allocates; :func:`_batch_kernel` runs ``prange`` over thread
chunks, each with its own scratch buffers (memory does not grow with K beyond the outputs); :func:`_evaluate_one`
does one candidate; :func:`_queue_second` is the exact one-second queue update shared with the queue model.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from models.jit import kernel_no_refcount
from models.yielding import Yielding, kernel_struct, lane_factor
from models.yielding import normalise as _normalise_yielding

__all__ = [
    "CyclicEvaluator",
    "CyclicMovementOut",
    "CyclicNet",
    "CyclicOptions",
    "CyclicPlans",
    "CyclicTotals",
    "allocate_movement_out",
    "evaluate_batch",
    "evaluate_profiles",
    "robertson",
]


class CyclicNet(NamedTuple):
    """Static inputs, shared by all candidates. M movements, E feed edges (CSR grouped by destination movement).

    sat_veh_s: float64 (M,) saturation flow at level 1, veh/s.
    entry_veh_s: float64 (M,) arrival rate that enters the network at the movement (uniform over the cycle), veh/s.
    in_ptr: int64 (M+1,) feeds into movement m are in_ptr[m]:in_ptr[m+1].
    in_src: int64 (E,) upstream movement of each feed.
    in_share: float64 (E,) share of the upstream departures that go on to m.
    in_shift_s: int64 (E,) delay-line shift, s (round(beta * travel time)).
    in_keep: float64 (E,) Robertson 1 - F (0: no dispersion, a pure delay line).
    order: int64 (M,) the order in which movements are evaluated in a sweep (upstream first converges fastest).
    stop_penalty_s: float64 (M,) time lost per stop (deceleration and acceleration), added to the totals'
        delay; None for none.
    yielding: permissive movements that give way and the lanes they hold up (models.yielding): a movement's
        capacity in second t is multiplied by its factor from the opposing departure profiles; None for none.
    lane_group: int64 (M,) lane group of each movement, ids < M (models.evaluate.lane_groups): the overflow delay d2
        comes from the summed flows and capacities of the movements that share lanes, as HCM computes it per lane
        group; None: every movement is a group of its own.
    """

    sat_veh_s: np.ndarray
    entry_veh_s: np.ndarray
    in_ptr: np.ndarray
    in_src: np.ndarray
    in_share: np.ndarray
    in_shift_s: np.ndarray
    in_keep: np.ndarray
    order: np.ndarray
    stop_penalty_s: np.ndarray | None = None
    yielding: Yielding | None = None
    lane_group: np.ndarray | None = None


# CyclicNet as the kernels take it: normalised, its Yielding's fields flat (yield_*), and yield_is_opp, bool (M,):
# some movement gives way to this one
_KernelNet = kernel_struct("_KernelNet", CyclicNet, ("yield_is_opp",))


class CyclicPlans(NamedTuple):
    """K candidate plans as effective green windows in the candidate's common period (simulation time mod P).

    period_s: int64 (K,) common period of the candidate, s (>= 1).
    win_start_s: float64 (K, M, W) start of window w of movement m, s, in [0, P).
    win_len_s: float64 (K, M, W) length, s (0: unused window; >= P: the whole period).
    win_level: float64 (K, M, W) discharge level in the window as a fraction of the saturation flow
        (1: protected green; less for permissive). Windows of one movement must not overlap.
    """

    period_s: np.ndarray
    win_start_s: np.ndarray
    win_len_s: np.ndarray
    win_level: np.ndarray


class CyclicOptions(NamedTuple):
    period_h: float  # analysis period T of the overflow term, h
    overflow_ki: float  # k * I of the HCM incremental delay (0.5: pretimed, isolated)
    max_sweeps: int  # sweeps over the movements before giving up on convergence
    tol_veh: float  # convergence: max change of any departure profile value, veh per second
    min_capacity_veh_s: float  # capacity floor for X and d2 (keeps zero-green penalties finite)
    # d2 counts only the delay incurred within the period T (divided by X above capacity), as a simulation measured
    # over the same window sees it, instead of HCM's delay until the overflow has cleared
    overflow_in_window: bool = False


class _Links(NamedTuple):
    """Internal: the distinct dispersion links (source, shift, keep) of the feeds, so that a profile that feeds
    several movements of one downstream approach is dispersed once. CSR by source movement."""

    out_ptr: np.ndarray  # int64 (M+1,): links of source movement u are out_ptr[u]:out_ptr[u+1]
    shift_s: np.ndarray  # int64 (L,)
    keep: np.ndarray  # float64 (L,)
    feed_link: np.ndarray  # int64 (E,): the link of each feed (in the order of CyclicNet.in_*)


def _links(net: CyclicNet) -> _Links:
    n_mov = net.sat_veh_s.shape[0]
    rows = np.stack([net.in_src.astype(np.float64), net.in_shift_s.astype(np.float64), net.in_keep], axis=1)
    uniq, feed_link = np.unique(rows, axis=0, return_inverse=True)
    src = uniq[:, 0].astype(np.int64)  # sorted by source first
    out_ptr = np.zeros(n_mov + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n_mov), out=out_ptr[1:])
    return _Links(out_ptr, uniq[:, 1].astype(np.int64), uniq[:, 2].copy(), feed_link.reshape(-1).astype(np.int64))


class CyclicTotals(NamedTuple):
    """Per-candidate totals, float64 (K,) (sweeps: int64 (K,))."""

    delay_veh_s_h: np.ndarray  # sum over movements of flow (veh/h) * (uniform + overflow delay + stops * stop
    # penalty) (s): veh-s per hour
    stops_veh_h: np.ndarray  # stops per hour
    max_dos: np.ndarray  # largest degree of saturation
    sweeps: np.ndarray  # sweeps used (max_sweeps + 1 when not converged)


class CyclicMovementOut(NamedTuple):
    """Per-candidate, per-movement results, float64 (K, M) or (0, M) when not wanted."""

    flow_veh_h: np.ndarray  # arrival flow (entries + capacity-limited upstream departures)
    capacity_veh_h: np.ndarray
    dos: np.ndarray  # degree of saturation X = flow / capacity
    uniform_delay_s: np.ndarray  # area under the periodic queue per vehicle (X capped at 1)
    overflow_delay_s: np.ndarray  # d2
    stops_per_veh: np.ndarray
    max_queue_veh: np.ndarray  # largest periodic (uniform) queue
    overflow_queue_veh: np.ndarray  # mean overflow queue = flow * d2 (Little)


# The kernels below allocate nothing and only see arrays that their caller holds for the whole call: compiled
# without numba's reference counting (models.jit). A kernel that allocates (np.zeros, ...) must not use this.
_kernel = kernel_no_refcount


def allocate_movement_out(k: int, m: int) -> CyclicMovementOut:
    return CyclicMovementOut(*(np.zeros((k, m)) for _ in CyclicMovementOut._fields))


@njit(cache=True, inline="always")
def _queue_second(q0, a, c):
    """Exact point queue over one second with uniform arrivals ``a`` and service capacity ``c`` (veh in the second).

    Returns (queue at the end, departures, area under the queue in veh*s, vehicles that met a queue).
    """
    q1 = q0 + a - c
    if q1 >= 0.0:
        # the queue never empties: linear over the whole second
        stopped = a if (q0 > 0.0 or q1 > 0.0) else 0.0
        return q1, c, 0.5 * (q0 + q1), stopped
    if q0 > 0.0:
        tau = q0 / (c - a)  # the queue empties at tau < 1
        return 0.0, q0 + a, 0.5 * q0 * tau, a * tau
    return 0.0, q0 + a, 0.0, 0.0


@_kernel
def robertson(x, shift, keep, out):
    """Periodic Robertson dispersion of profile ``x`` (length P): out[t] = F x[t-shift] + keep out[t-1], F = 1-keep.

    Exact periodic solution: one pass from zero, then the geometric tail of the previous periods.
    """
    p = x.shape[0]
    f = 1.0 - keep
    s = shift % p
    if keep == 0.0:
        for t in range(p):
            j = t - s
            if j < 0:
                j += p
            out[t] = x[j]
        return
    y = 0.0
    for t in range(p):
        j = t - s
        if j < 0:
            j += p
        y = f * x[j] + keep * y
        out[t] = y
    # periodic: y[t] = y0[t] + keep^(t+1) * y[P-1], with y[P-1] = y0[P-1] / (1 - keep^P)
    keep_p = keep**p
    tail = out[p - 1] / (1.0 - keep_p)
    w = keep
    for t in range(p):
        out[t] += w * tail
        w *= keep


@_kernel
def _build_capacity(sat, starts, lens, levels, p, cap):
    """cap[t] = sat * sum over windows of level * overlap([t, t+1), window mod P), t < P."""
    for t in range(p):
        cap[t] = 0.0
    for w in range(starts.shape[0]):
        length = lens[w]
        if length <= 0.0:
            continue
        v = levels[w] * sat
        if length >= p:
            for t in range(p):
                cap[t] += v
            continue
        a = starts[w]
        b = a + length
        i = int(np.floor(a))
        if not (0.0 <= a < p and b < 2 * p):  # a start outside [0, P): second by second, modulo P
            while i < b:
                lo = a if a > i else float(i)
                hi = b if b < i + 1 else float(i + 1)
                cap[i % p] += v * (hi - lo)
                i += 1
            continue
        # the same overlaps without the modulo: the first second, the whole seconds between (overlap exactly 1), the
        # part of the last one (b < 2P)
        lo = a if a > i else float(i)
        hi = b if b < i + 1 else float(i + 1)
        cap[i] += v * (hi - lo)
        i_end = int(np.floor(b))
        for j in range(i + 1, min(i_end, p)):
            cap[j] += v
        for j in range(max(i + 1, p), i_end):
            cap[j - p] += v
        if i < i_end < b:
            cap[i_end if i_end < p else i_end - p] += v * (b - float(i_end))


@_kernel
def _arrivals(net, links, disp, m, p, arr):
    """Movement m's arrival profile into arr: its entries plus the dispersed departures of the movements feeding it."""
    e = net.entry_veh_s[m]
    for t in range(p):
        arr[t] = e
    for f in range(net.in_ptr[m], net.in_ptr[m + 1]):
        li = links.feed_link[f]
        sh = net.in_share[f]
        for t in range(p):
            arr[t] += sh * disp[li, t]


@njit(cache=True, inline="always")
def _sums(x, y, p):
    """(sum of x[:p], sum of y[:p]), each in index order; one loop, so that the two addition chains overlap."""
    sx = 0.0
    sy = 0.0
    for t in range(p):
        sx += x[t]
        sy += y[t]
    return sx, sy


@_kernel
def _departures_as_is(arr, cap, a_sum, c_sum, p, starts, lens, tmp, out):
    """The periodic departures with capacity ``cap`` (scaled to capacity above it; a_sum, c_sum: the profiles'
    sums) into ``out``; the largest change of ``out``. tmp (P,) scratch."""
    if a_sum > 0.0:
        _periodic_departures(arr, cap, c_sum / a_sum if a_sum > c_sum else 1.0, p, _green_end(starts, lens, p),
                             tmp)
    else:
        for t in range(p):
            tmp[t] = 0.0
    return _replace(tmp, out, p)


@njit(cache=True, inline="always")
def _replace(src, out, p):
    """out[:p] = src[:p]; returns the largest change of a value."""
    moved = 0.0
    for t in range(p):
        diff = abs(src[t] - out[t])
        if diff > moved:
            moved = diff
        out[t] = src[t]
    return moved


@_kernel
def _group_factor(net, g, dep, p, out):
    """out[t] = lane group g's factor minus 1 (models.yielding.lane_factor of phi(q) - 1, 0 where q = 0) from the
    summed departures q of the movements it gives way to, before their own giving way (rows M + o of dep), t < P. The
    exponential only where they depart, and again only when their flow changes (profiles are often flat: saturated
    discharge, steady arrivals)."""
    n_mov = net.sat_veh_s.shape[0]
    mix = net.yield_mix[g]
    gap = net.yield_gap_s
    o0, o1 = net.yield_opp_ptr[g], net.yield_opp_ptr[g + 1]
    q_last = -1.0
    b_last = 0.0
    single = o1 - o0 == 1  # one opposing movement: its row read directly (q = 0.0 + its departures: the same value)
    row = dep[n_mov + net.yield_opp_mov[o0]] if single else dep[0]
    for t in range(p):
        if single:
            q = row[t]
        else:
            q = 0.0
            for i in range(o0, o1):
                q += dep[n_mov + net.yield_opp_mov[i], t]
        if q > 0.0:
            if q != q_last:
                q_last = q
                b_last = lane_factor(np.exp(-gap * q), mix) - 1.0
            out[t] = b_last
        else:
            out[t] = 0.0


@_kernel
def _give_way(net, m, gfac, p, cap, acc):
    """cap[t] *= movement m's capacity factor (the same as models.yielding.factor_now), 1 + sum over the lane groups
    g it uses of weight * gfac[g, t] (:func:`_group_factor`), for the seconds with capacity; acc (P,) scratch.
    With one group, a second without capacity stays 0 (its factor is >= 0: weight <= 1, gfac >= -1)."""
    e0, e1 = net.yield_mg_ptr[m], net.yield_mg_ptr[m + 1]
    if e1 - e0 == 1:
        w = net.yield_mg_weight[e0]
        fg = gfac[net.yield_mg_group[e0]]
        for t in range(p):
            cap[t] *= 1.0 + w * fg[t]
        return
    for t in range(p):
        acc[t] = 0.0
    for e in range(e0, e1):
        w = net.yield_mg_weight[e]
        fg = gfac[net.yield_mg_group[e]]
        for t in range(p):
            if cap[t] > 0.0:
                acc[t] += w * fg[t]
    for t in range(p):
        cap[t] *= 1.0 + acc[t]


@_kernel
def _add_sneakers(starts, lens, p, veh, cap):
    """cap[t] += veh in the last second of every window (not for a window covering the whole period)."""
    for w in range(starts.shape[0]):
        if 0.0 < lens[w] < p:
            t = int(np.ceil(starts[w] + lens[w])) - 1
            cap[t % p] += veh


@_kernel
def _green_end(starts, lens, p):
    """A second at which the movement's longest window has just ended (where a queue is least likely), or 0."""
    best = -1.0
    r = 0
    for w in range(starts.shape[0]):
        if lens[w] > best and lens[w] < p:
            best = lens[w]
            r = int(np.ceil(starts[w] + lens[w])) % p
    return r


@njit(cache=True, inline="always")
def _queue_run(arr, cap, scale, lo, hi, q, area, stopped, q_max, out_dep):
    """Seconds lo:hi of the point queue from queue q: departures into out_dep; adds to area, stopped and q_max.
    Returns (q, area, stopped, q_max). A second without capacity (red) is :func:`_queue_second` with c = 0, written
    out: the queue only grows (one addition on the queue's dependency chain instead of two), every arrival stops."""
    for t in range(lo, hi):
        a = scale * arr[t]
        c = cap[t]
        if c == 0.0:
            q1 = q + a
            area += 0.5 * (q + q1)
            stopped += a
            q = q1
            out_dep[t] = c
        else:
            q, d, ar, st = _queue_second(q, a, c)
            area += ar
            stopped += st
            out_dep[t] = d
        if q > q_max:
            q_max = q
    return q, area, stopped, q_max


@njit(cache=True, inline="always")
def _departures_run(arr, cap, scale, lo, hi, q, out_dep):
    """:func:`_queue_run` for the departures only (the same values); returns the queue at the end."""
    for t in range(lo, hi):
        a = scale * arr[t]
        c = cap[t]
        if c == 0.0:
            q = q + a
            out_dep[t] = c
        else:
            q1 = q + a - c
            if q1 >= 0.0:
                out_dep[t] = c
                q = q1
            else:
                out_dep[t] = q + a
                q = 0.0
    return q


@_kernel
def _periodic_queue(arr, cap, scale, p, r, out_dep):
    """Periodic point queue of one movement; departures into out_dep. Returns (area, stopped, max queue).

    One pass from an empty queue starting at second r. If the queue is empty again at the end, that pass is the
    periodic solution; otherwise its end queue is the periodic queue at r (one period from empty reaches it, see
    the module docstring) and a second pass from it is.
    """
    q0 = 0.0
    area = 0.0
    stopped = 0.0
    q_max = 0.0
    for _ in range(2):
        q, area, stopped, q_max = _queue_run(arr, cap, scale, r, p, q0, 0.0, 0.0, q0, out_dep)
        q, area, stopped, q_max = _queue_run(arr, cap, scale, 0, r, q, area, stopped, q_max, out_dep)
        if q <= 0.0:
            break
        q0 = q
    return area, stopped, q_max


@_kernel
def _periodic_departures(arr, cap, scale, p, r, out_dep):
    """The departures of :func:`_periodic_queue` only (the same values)."""
    q = 0.0
    for _ in range(2):
        q = _departures_run(arr, cap, scale, r, p, q, out_dep)
        q = _departures_run(arr, cap, scale, 0, r, q, out_dep)
        if q <= 0.0:
            break


@_kernel
def _evaluate_one(net, links, plans, opts, k, dep, disp, arr, cap, tmp, mcache, stamp, gfac, gstamp, tot, mov,
                  write_mov, rec_arr, rec_cap):
    """Evaluate candidate k into tot[k] (and mov[k, :] when write_mov).

    Scratch: dep (2M, Pmax) departure profiles (rows M + m: movement m's departures before its own giving way,
    kept for the movements others give way to: what those see); disp (L, Pmax) dispersed profiles of the links;
    arr, cap, tmp (Pmax,); mcache (M, 8) each movement's latest (delay rate without d2, stop rate, X, flow,
    capacity), columns 5-7 lane-group sums; stamp (M, 3) int64:
    evaluation counter at which the movement's departures last changed / at which it was last evaluated / at which
    its departures before its own giving way last changed. A movement
    none of whose sources changed since its last evaluation would give the same result again and is skipped
    (exactly). gfac (G, Pmax): the lane groups' factor profiles (:func:`_group_factor`), shared by the movements
    using a group; gstamp (G,) int64: the counter at which each was computed (-1: not yet), recomputed when a
    movement the group gives way to changed since.
    rec_arr, rec_cap: (M, Pmax) records of the (unscaled) arrival and capacity profiles, or (0, 0) for none.
    """
    n_mov = net.sat_veh_s.shape[0]
    p = plans.period_s[k]
    for m in range(n_mov):
        for t in range(p):
            dep[m, t] = 0.0
            dep[n_mov + m, t] = 0.0
        stamp[m, 0] = 0
        stamp[m, 1] = -1
        stamp[m, 2] = 0
    for g in range(gstamp.shape[0]):
        gstamp[g] = -1
    for li in range(disp.shape[0]):
        for t in range(p):
            disp[li, t] = 0.0
    # movements coupled by feeds need sweeps to a fixed point; giving way alone does not: a movement gives way to
    # departures that depend on arrivals only, and those are computed first when not yet there (see below)
    has_feeds = net.in_ptr[n_mov] > 0
    max_sweeps = opts.max_sweeps if has_feeds else 1
    t_h = opts.period_h
    cap_floor = opts.min_capacity_veh_s * p
    sweeps_used = max_sweeps + 1
    counter = 0
    for sweep in range(max_sweeps):
        change = 0.0
        for oi in range(n_mov):
            m = net.order[oi]
            counter += 1
            if stamp[m, 1] >= 0:
                stale = False
                for f in range(net.in_ptr[m], net.in_ptr[m + 1]):
                    if stamp[net.in_src[f], 0] > stamp[m, 1]:
                        stale = True
                        break
                for e in range(net.yield_mg_ptr[m], net.yield_mg_ptr[m + 1]):
                    g = net.yield_mg_group[e]
                    for i in range(net.yield_opp_ptr[g], net.yield_opp_ptr[g + 1]):
                        if stamp[net.yield_opp_mov[i], 2] > stamp[m, 1]:
                            stale = True
                if not stale:
                    continue
            # movements m gives way to and not yet evaluated: their departures as they are, first (so that two
            # movements giving way to each other's lane partners need no extra sweep)
            for e in range(net.yield_mg_ptr[m], net.yield_mg_ptr[m + 1]):
                g = net.yield_mg_group[e]
                for i in range(net.yield_opp_ptr[g], net.yield_opp_ptr[g + 1]):
                    o = net.yield_opp_mov[i]
                    if stamp[o, 1] < 0 and stamp[o, 2] == 0:
                        _arrivals(net, links, disp, o, p, arr)
                        _build_capacity(net.sat_veh_s[o], plans.win_start_s[k, o], plans.win_len_s[k, o],
                                        plans.win_level[k, o], p, cap)
                        a_o, c_o = _sums(arr, cap, p)
                        _departures_as_is(arr, cap, a_o, c_o, p, plans.win_start_s[k, o], plans.win_len_s[k, o], tmp,
                                          dep[n_mov + o])
                        stamp[o, 2] = counter
            stamp[m, 1] = counter
            _arrivals(net, links, disp, m, p, arr)
            _build_capacity(
                net.sat_veh_s[m], plans.win_start_s[k, m], plans.win_len_s[k, m], plans.win_level[k, m], p, cap
            )
            gives_way = net.yield_mg_ptr[m + 1] > net.yield_mg_ptr[m]
            moved0 = 0.0
            have_a_sum = False
            a_sum = 0.0
            if gives_way:
                if net.yield_is_opp[m] and (has_feeds or stamp[m, 2] == 0):
                    # others give way to m too: they see its departures as if it did not give way itself (without
                    # feeds, arrivals never change: computed once, here or when another movement needed them first)
                    a_sum, c_sum = _sums(arr, cap, p)
                    have_a_sum = True
                    moved0 = _departures_as_is(arr, cap, a_sum, c_sum, p, plans.win_start_s[k, m],
                                               plans.win_len_s[k, m], tmp, dep[n_mov + m])
                for e in range(net.yield_mg_ptr[m], net.yield_mg_ptr[m + 1]):
                    g = net.yield_mg_group[e]
                    fresh = gstamp[g] >= 0
                    for i in range(net.yield_opp_ptr[g], net.yield_opp_ptr[g + 1]):
                        if stamp[net.yield_opp_mov[i], 2] > gstamp[g]:
                            fresh = False
                    if not fresh:
                        _group_factor(net, g, dep, p, gfac[g])
                        gstamp[g] = counter
                _give_way(net, m, gfac, p, cap, tmp)
                if net.yield_sneak_veh[m] > 0.0:
                    _add_sneakers(plans.win_start_s[k, m], plans.win_len_s[k, m], p, net.yield_sneak_veh[m], cap)
            if have_a_sum:
                c_sum = 0.0
                for t in range(p):
                    c_sum += cap[t]
            else:
                a_sum, c_sum = _sums(arr, cap, p)
            if rec_arr.shape[0] > 0:
                for t in range(p):
                    rec_arr[m, t] = arr[t]
                    rec_cap[m, t] = cap[t]
            c_eff = c_sum if c_sum > cap_floor else cap_floor
            x = a_sum / c_eff if a_sum > 0.0 else 0.0
            # above capacity the periodic part carries the capacity flow; the excess is the overflow term's
            scale = c_sum / a_sum if a_sum > c_sum else 1.0
            if a_sum > 0.0:
                r = _green_end(plans.win_start_s[k, m], plans.win_len_s[k, m], p)
                area, stopped, q_max = _periodic_queue(arr, cap, scale, p, r, tmp)
            else:
                area, stopped, q_max = 0.0, 0.0, 0.0
                for t in range(p):
                    tmp[t] = 0.0
            moved = _replace(tmp, dep[m], p)
            if net.yield_is_opp[m] and not gives_way:
                moved0 = _replace(tmp, dep[n_mov + m], p)
            if moved0 > 0.0:
                stamp[m, 2] = counter
            if moved > 0.0:
                stamp[m, 0] = counter
                for li in range(links.out_ptr[m], links.out_ptr[m + 1]):
                    robertson(dep[m, :p], links.shift_s[li], links.keep[li], disp[li, :p])
            if moved0 > moved:
                moved = moved0
            if moved > change:
                change = moved
            # per-vehicle figures
            flow_h = a_sum / p * 3600.0
            capacity_h = c_eff / p * 3600.0
            a_scaled = scale * a_sum
            d1 = area / a_scaled if a_scaled > 0.0 else 0.0
            h = stopped / a_scaled if a_scaled > 0.0 else 0.0
            if scale < 1.0:
                h = h * scale + (1.0 - scale)
            mcache[m, 0] = flow_h * (d1 + h * net.stop_penalty_s[m])  # the overflow delay d2 follows the sweeps
            mcache[m, 1] = flow_h * h
            mcache[m, 2] = x
            mcache[m, 3] = flow_h
            mcache[m, 4] = capacity_h
            if write_mov:
                mov.flow_veh_h[k, m] = flow_h
                mov.capacity_veh_h[k, m] = capacity_h
                mov.dos[k, m] = x
                mov.uniform_delay_s[k, m] = d1
                mov.stops_per_veh[k, m] = h
                mov.max_queue_veh[k, m] = q_max
        if not has_feeds or (sweep > 0 and change <= opts.tol_veh):
            sweeps_used = sweep + 1
            break
    # overflow delay d2 (HCM incremental) per lane group: flows and capacities of the movements that share lanes
    # pooled (columns 5-7 of group g's row: its flow, capacity, movements); a group of one is the movement itself
    for m in range(n_mov):
        mcache[m, 5] = 0.0
        mcache[m, 6] = 0.0
        mcache[m, 7] = 0.0
    for m in range(n_mov):
        g = net.lane_group[m]
        mcache[g, 5] += mcache[m, 3]
        mcache[g, 6] += mcache[m, 4]
        mcache[g, 7] += 1.0
    delay_total = 0.0
    stops_total = 0.0
    max_dos = 0.0
    for m in range(n_mov):
        g = net.lane_group[m]
        x = mcache[m, 2]
        capacity_h = mcache[m, 4]
        if mcache[g, 7] > 1.0 and x > 0.0:
            capacity_h = mcache[g, 6]
            x = mcache[g, 5] / capacity_h
        if x > 0.0:
            xm1 = x - 1.0
            d2 = 900.0 * t_h * (xm1 + np.sqrt(xm1 * xm1 + 8.0 * opts.overflow_ki * x / (capacity_h * t_h)))
            if opts.overflow_in_window and x > 1.0:
                d2 /= x
        else:
            d2 = 0.0
        if write_mov:
            mov.overflow_delay_s[k, m] = d2
            mov.overflow_queue_veh[k, m] = mcache[m, 3] / 3600.0 * d2
        delay_total += mcache[m, 0] + mcache[m, 3] * d2
        stops_total += mcache[m, 1]
        if mcache[m, 2] > max_dos:
            max_dos = mcache[m, 2]
    tot.delay_veh_s_h[k] = delay_total
    tot.stops_veh_h[k] = stops_total
    tot.max_dos[k] = max_dos
    tot.sweeps[k] = sweeps_used


@_kernel
def _evaluate_range(net, links, plans, opts, k0, k1, dep, disp, arr, cap, tmp, mcache, stamp, gfac, gstamp, tot, mov,
                    write_mov, no_rec):
    """Candidates k0:k1 with one set of scratch buffers."""
    for k in range(k0, k1):
        _evaluate_one(net, links, plans, opts, k, dep, disp, arr, cap, tmp, mcache, stamp, gfac, gstamp, tot, mov,
                      write_mov, no_rec, no_rec)


@njit(cache=True, parallel=True)
def _batch_kernel(net, links, plans, opts, chunk_ptr, dep, disp, arr, cap, tmp, mcache, stamp, gfac, gstamp, tot, mov,
                  write_mov):
    """prange over thread chunks; chunk c evaluates candidates chunk_ptr[c]:chunk_ptr[c+1] with scratch row c."""
    n_chunks = chunk_ptr.shape[0] - 1
    no_rec = np.zeros((0, 0))
    for c in prange(n_chunks):
        _evaluate_range(net, links, plans, opts, chunk_ptr[c], chunk_ptr[c + 1], dep[c], disp[c], arr[c], cap[c],
                        tmp[c], mcache[c], stamp[c], gfac[c], gstamp[c], tot, mov, write_mov, no_rec)


@njit(cache=True)
def _serial_kernel(net, links, plans, opts, dep, disp, arr, cap, tmp, mcache, stamp, gfac, gstamp, tot, mov, write_mov):
    """All candidates in this thread (no parallel region: a single chunk pays no thread start-up)."""
    _evaluate_range(net, links, plans, opts, 0, plans.period_s.shape[0], dep[0], disp[0], arr[0], cap[0], tmp[0],
                    mcache[0], stamp[0], gfac[0], gstamp[0], tot, mov, write_mov, np.zeros((0, 0)))


@njit(cache=True)
def _profiles_kernel(net, links, plans, opts, k, dep, disp, arr, cap, tmp, mcache, stamp, gfac, gstamp, tot, mov,
                     rec_arr, rec_cap):
    _evaluate_one(net, links, plans, opts, k, dep, disp, arr, cap, tmp, mcache, stamp, gfac, gstamp, tot, mov, True,
                  rec_arr, rec_cap)


def _check(net: CyclicNet, plans: CyclicPlans) -> tuple[int, int]:
    n_mov = net.sat_veh_s.shape[0]
    k = plans.period_s.shape[0]
    if net.in_ptr.shape != (n_mov + 1,) or net.order.shape != (n_mov,) or net.stop_penalty_s.shape != (n_mov,):
        raise ValueError("CyclicNet: in_ptr must have M+1 entries, order and stop_penalty_s M")
    if net.lane_group.shape != (n_mov,) or (n_mov and (net.lane_group.min() < 0 or net.lane_group.max() >= n_mov)):
        raise ValueError("CyclicNet: lane_group must have M entries in [0, M)")
    if sorted(net.order.tolist()) != list(range(n_mov)):
        raise ValueError("CyclicNet: order must be a permutation of the movements")
    n_edges = int(net.in_ptr[-1])
    for name in ("in_src", "in_share", "in_shift_s", "in_keep"):
        if getattr(net, name).shape != (n_edges,):
            raise ValueError(f"CyclicNet.{name} must have in_ptr[-1] = {n_edges} entries")
    if np.any((net.in_keep < 0) | (net.in_keep >= 1)):
        raise ValueError("CyclicNet.in_keep (1 - F) must lie in [0, 1)")
    if plans.win_start_s.ndim != 3 or plans.win_start_s.shape[:2] != (k, n_mov):
        raise ValueError(f"CyclicPlans windows must have shape (K={k}, M={n_mov}, W)")
    if plans.win_len_s.shape != plans.win_start_s.shape or plans.win_level.shape != plans.win_start_s.shape:
        raise ValueError("CyclicPlans: win_start_s, win_len_s, win_level must have the same shape")
    if k and int(plans.period_s.min()) < 1:
        raise ValueError("CyclicPlans.period_s must be >= 1 s")
    return k, n_mov


def _normalise(net: CyclicNet, plans: CyclicPlans, opts: CyclicOptions):
    """Contiguous arrays of the dtypes the kernels are compiled for (one compiled specialisation)."""
    y = _normalise_yielding(net.yielding, net.sat_veh_s.shape[0])
    net = _KernelNet(
        np.ascontiguousarray(net.sat_veh_s, np.float64),
        np.ascontiguousarray(net.entry_veh_s, np.float64),
        np.ascontiguousarray(net.in_ptr, np.int64),
        np.ascontiguousarray(net.in_src, np.int64),
        np.ascontiguousarray(net.in_share, np.float64),
        np.ascontiguousarray(net.in_shift_s, np.int64),
        np.ascontiguousarray(net.in_keep, np.float64),
        np.ascontiguousarray(net.order, np.int64),
        np.zeros(net.sat_veh_s.shape[0]) if net.stop_penalty_s is None else
        np.ascontiguousarray(net.stop_penalty_s, np.float64),
        np.arange(net.sat_veh_s.shape[0], dtype=np.int64) if net.lane_group is None else
        np.ascontiguousarray(net.lane_group, np.int64),
        *y,
        np.isin(np.arange(net.sat_veh_s.shape[0]), y.opp_mov),
    )
    plans = CyclicPlans(
        np.ascontiguousarray(plans.period_s, np.int64),
        np.ascontiguousarray(plans.win_start_s, np.float64),
        np.ascontiguousarray(plans.win_len_s, np.float64),
        np.ascontiguousarray(plans.win_level, np.float64),
    )
    opts = CyclicOptions(
        float(opts.period_h), float(opts.overflow_ki), int(opts.max_sweeps), float(opts.tol_veh),
        float(opts.min_capacity_veh_s), bool(opts.overflow_in_window),
    )
    return net, plans, opts


def _scratch(n_thr: int, net, links: _Links, p_max: int) -> tuple:
    """Per-thread scratch of :func:`_evaluate_one`: dep, disp, arr, cap, tmp, mcache, stamp, gfac, gstamp."""
    n_mov = net.sat_veh_s.shape[0]
    n_groups = net.yield_mix.shape[0]
    return (np.zeros((n_thr, 2 * n_mov, p_max)), np.zeros((n_thr, links.shift_s.shape[0], p_max)),
            np.zeros((n_thr, p_max)), np.zeros((n_thr, p_max)), np.zeros((n_thr, p_max)), np.zeros((n_thr, n_mov, 8)),
            np.zeros((n_thr, n_mov, 3), np.int64), np.zeros((n_thr, n_groups, p_max)),
            np.zeros((n_thr, n_groups), np.int64))


def evaluate_batch(
    net: CyclicNet,
    plans: CyclicPlans,
    opts: CyclicOptions,
    *,
    per_movement: bool = True,
    n_threads: int | None = None,
) -> tuple[CyclicTotals, CyclicMovementOut]:
    """Evaluate K candidate plans. Returns totals (K,) and per-movement results (K, M) (or (0, M) arrays).

    ``n_threads``: thread chunks (default: numba's current thread count, at most K); one chunk runs without a
    parallel region. Scratch memory is n_threads * (2M + L + G) * max(P) floats (L <= number of feeds, G lane groups
    that give way) whatever K is.
    """
    net, plans, opts = _normalise(net, plans, opts)
    k, n_mov = _check(net, plans)
    n_thr = max(1, min(int(n_threads or numba.get_num_threads()), max(k, 1)))
    p_max = int(plans.period_s.max()) if k else 1
    links = _links(net)
    scratch = _scratch(n_thr, net, links, p_max)
    tot = CyclicTotals(np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k, np.int64))
    mov = allocate_movement_out(k if per_movement else 0, n_mov)
    if n_thr == 1:
        _serial_kernel(net, links, plans, opts, *scratch, tot, mov, per_movement)
    else:
        chunk_ptr = np.linspace(0, k, n_thr + 1).round().astype(np.int64)
        _batch_kernel(net, links, plans, opts, chunk_ptr, *scratch, tot, mov, per_movement)
    return tot, mov


class CyclicEvaluator:
    """:func:`evaluate_batch` for repeated calls (optimiser inner loops): the static inputs are checked and
    normalised, the dispersion links built and the scratch allocated once; a call only checks the plans' shapes.

    ``evaluator(plans, per_movement=False) -> (totals, per-movement)``; results are fresh arrays on every call.
    """

    def __init__(self, net: CyclicNet, opts: CyclicOptions, *, n_threads: int | None = None):
        empty = CyclicPlans(np.ones(0, np.int64), np.zeros((0, net.sat_veh_s.shape[0], 1)),
                            np.zeros((0, net.sat_veh_s.shape[0], 1)), np.zeros((0, net.sat_veh_s.shape[0], 1)))
        self.net, _, self.opts = _normalise(net, empty, opts)
        _check(self.net, empty)
        self.n_mov = self.net.sat_veh_s.shape[0]
        self.links = _links(self.net)
        self.n_threads = n_threads
        self._scratch: dict[tuple[int, int], tuple] = {}

    def _buffers(self, n_thr: int, p_max: int) -> tuple:
        key = (n_thr, p_max)
        if key not in self._scratch:
            self._scratch = {key: _scratch(n_thr, self.net, self.links, p_max)}
        return self._scratch[key]

    def __call__(self, plans: CyclicPlans, per_movement: bool = False) -> tuple[CyclicTotals, CyclicMovementOut]:
        period = np.ascontiguousarray(plans.period_s, np.int64)
        ws = np.ascontiguousarray(plans.win_start_s, np.float64)
        wl = np.ascontiguousarray(plans.win_len_s, np.float64)
        wv = np.ascontiguousarray(plans.win_level, np.float64)
        k = period.shape[0]
        if ws.ndim != 3 or ws.shape[:2] != (k, self.n_mov) or wl.shape != ws.shape or wv.shape != ws.shape:
            raise ValueError(f"CyclicPlans windows must have shape (K={k}, M={self.n_mov}, W)")
        if k and int(period.min()) < 1:
            raise ValueError("CyclicPlans.period_s must be >= 1 s")
        plans = CyclicPlans(period, ws, wl, wv)
        n_thr = max(1, min(int(self.n_threads or numba.get_num_threads()), max(k, 1)))
        p_max = int(period.max()) if k else 1
        scratch = self._buffers(n_thr, p_max)
        tot = CyclicTotals(np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k, np.int64))
        mov = allocate_movement_out(k if per_movement else 0, self.n_mov)
        if n_thr == 1:
            _serial_kernel(self.net, self.links, plans, self.opts, *scratch, tot, mov, per_movement)
        else:
            chunk_ptr = np.linspace(0, k, n_thr + 1).round().astype(np.int64)
            _batch_kernel(self.net, self.links, plans, self.opts, chunk_ptr, *scratch, tot, mov, per_movement)
        return tot, mov


def evaluate_profiles(
    net: CyclicNet, plans: CyclicPlans, opts: CyclicOptions, k: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The steady-state profiles of candidate k: arrivals, capacity, departures, float64 (M, P), veh per second.

    Arrivals are as offered (before the above-capacity scaling); departures are the periodic queue's.
    """
    net, plans, opts = _normalise(net, plans, opts)
    n_k, n_mov = _check(net, plans)
    if not 0 <= k < n_k:
        raise IndexError(f"candidate {k} not in [0, {n_k})")
    p = int(plans.period_s[k])
    rec_arr = np.zeros((n_mov, p))
    rec_cap = np.zeros((n_mov, p))
    tot = CyclicTotals(np.zeros(n_k), np.zeros(n_k), np.zeros(n_k), np.zeros(n_k, np.int64))
    mov = allocate_movement_out(n_k, n_mov)
    links = _links(net)
    scratch = [a[0] for a in _scratch(1, net, links, p)]
    _profiles_kernel(net, links, plans, opts, k, *scratch, tot, mov, rec_arr, rec_cap)
    return rec_arr, rec_cap, scratch[0][:n_mov]
