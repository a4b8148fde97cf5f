"""Permissive movements that give way: their discharge, and that of the lanes they share, depends on opposing flow.

A movement shown 'g' (green without priority: a left turn across the opposing through traffic, a turn across a
priority stream) can only leave through gaps in the traffic it yields to. With opposing departures q (veh/s) in a
second, Siegloch's gap-acceptance capacity relative to an unopposed stream is

    phi(q) = exp(-t0 q),        t0 = critical gap - follow-up time / 2,

so while the opposing queue discharges at saturation (q ~ 1 veh/s over two lanes) a left turn hardly moves, and once
it has cleared (q = the arrival rate) it gets a share that shrinks with the opposing flow. A fixed permissive level
misses both.

A yielding vehicle at the head of a lane it *shares* holds up the vehicles behind it. With a share ``mix`` of the
lane's traffic yielding, a mixed FIFO lane discharges at

    beta = phi / ((1 - mix) phi + mix)                (relative to its saturation flow)

(each vehicle takes 1/s, a yielding one 1/(s phi)); every movement using the lane is slowed by that factor on its
share of the lane. A lane the yielding movement has to itself (mix = 1) gives beta = phi.

:func:`build_yielding` derives the groups (one per lane that a yielding movement uses) from the compiled Network:
which links are foes, which movements are 'G' while another is 'g' in the same phase, and the lanes of each
movement. The kernels multiply a movement's capacity by that factor (queue model: :func:`factor_now`, from what the
opposing movements send in this second; cyclic model: the same over the period from their departure profiles). The
opposing flow is the opposing movements' discharge before their own giving way (a through movement held up by its
lane's left turners still counts as the flow it would send): the models stay free of loops between two movements
that give way to each other's lane partners, at the price of that second-order effect.
"""

from __future__ import annotations

import collections
from typing import NamedTuple

import numpy as np
from numba import njit

from models.jit import kernel_no_refcount

# turn rank: who gives way among two movements that are both 'g' and foes (straight before right before left)
_RANK = {0: 0, 2: 1, 1: 2, 3: 3}  # TURN_STRAIGHT, TURN_RIGHT, TURN_LEFT, TURN_UTURN


class Yielding(NamedTuple):
    """G lane groups of yielding movements; M movements.

    gap_s: Siegloch's t0 (critical gap minus half the follow-up time), s; 0 switches the effect off.
    opp_ptr: int64 (G+1,); opp_mov: int64: the movements group g gives way to (their departures are summed).
    mix: float64 (G,): the yielding movement's share of the traffic on the group's lanes (1: lanes of its own).
    mg_ptr: int64 (M+1,); mg_group: int64; mg_weight: float64: the groups whose lanes movement m uses, and the
        share of m's saturation flow on them.
    sneak_veh: float64 (M,): vehicles a yielding movement clears at the end of each of its greens (those waiting
        inside the junction go when the opposing stream stops), whatever the opposing flow; 0 for the others.
    """

    gap_s: float
    opp_ptr: np.ndarray
    opp_mov: np.ndarray
    mix: np.ndarray
    mg_ptr: np.ndarray
    mg_group: np.ndarray
    mg_weight: np.ndarray
    sneak_veh: np.ndarray


def kernel_struct(name: str, net_type: type, extra: tuple[str, ...] = ()) -> type:
    """The named-tuple type a kernel takes for a model's static network ``net_type`` (a NamedTuple with a
    ``yielding`` field): its other fields, a Yielding's fields flat as ``yield_<field>`` (numba's parallel kernels
    take no nested tuples), then ``extra``."""
    fields = [f for f in net_type._fields if f != "yielding"] + [f"yield_{f}" for f in Yielding._fields]
    # the type must live in the module that binds it to ``name``: numba's on-disk cache finds it there (a type
    # claiming this module could not be found, and every process compiled the kernels again)
    return collections.namedtuple(name, fields + list(extra), module=net_type.__module__)


def no_yielding(n_mov: int) -> Yielding:
    """No movement yields (every capacity factor is 1)."""
    return Yielding(0.0, np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(n_mov + 1, np.int64),
                    np.zeros(0, np.int64), np.zeros(0), np.zeros(n_mov))


def normalise(y: Yielding | None, n_mov: int) -> Yielding:
    """Contiguous arrays of the kernels' dtypes, shapes checked."""
    if y is None:
        return no_yielding(n_mov)
    y = Yielding(float(y.gap_s), np.ascontiguousarray(y.opp_ptr, np.int64), np.ascontiguousarray(y.opp_mov, np.int64),
                 np.ascontiguousarray(y.mix, np.float64), np.ascontiguousarray(y.mg_ptr, np.int64),
                 np.ascontiguousarray(y.mg_group, np.int64), np.ascontiguousarray(y.mg_weight, np.float64),
                 np.ascontiguousarray(y.sneak_veh, np.float64))
    n_g = y.mix.shape[0]
    if y.opp_ptr.shape != (n_g + 1,) or y.mg_ptr.shape != (n_mov + 1,):
        raise ValueError("Yielding: opp_ptr must have G+1 entries and mg_ptr M+1")
    if y.opp_mov.shape != (int(y.opp_ptr[-1]),) or y.mg_group.shape != (int(y.mg_ptr[-1]),) \
            or y.mg_weight.shape != y.mg_group.shape:
        raise ValueError("Yielding: CSR arrays do not match their pointers")
    if (y.opp_mov.size and (y.opp_mov.min() < 0 or y.opp_mov.max() >= n_mov)) or \
            (y.mg_group.size and (y.mg_group.min() < 0 or y.mg_group.max() >= n_g)):
        raise ValueError("Yielding: movement or group index out of range")
    if y.sneak_veh.shape != (n_mov,) or np.any(y.sneak_veh < 0):
        raise ValueError("Yielding: sneak_veh must be non-negative with M entries")
    if np.any((y.mix <= 0) | (y.mix > 1)) or np.any((y.mg_weight < 0) | (y.mg_weight > 1)) or y.gap_s < 0:
        raise ValueError("Yielding: mix must lie in (0, 1], weights in [0, 1], gap_s >= 0")
    return y


@njit(cache=True, inline="always")
def lane_factor(phi, mix):
    """Discharge of a lane whose traffic is a share ``mix`` of vehicles giving way at relative capacity ``phi``."""
    return phi / ((1.0 - mix) * phi + mix)


@kernel_no_refcount  # allocates nothing (models.jit)
def factor_now(net, m, rate):
    """Capacity factor of movement m given the movements' discharge ``rate`` (M,) in the same second, veh/s (the
    queue model: what they send now; the cyclic model computes the same factor over its period,
    models.cyclic._give_way). ``net``: a kernel struct carrying a Yielding's fields flat, as ``yield_<field>``
    (numba's parallel kernels take no nested tuples)."""
    f = 1.0
    for e in range(net.yield_mg_ptr[m], net.yield_mg_ptr[m + 1]):
        g = net.yield_mg_group[e]
        q = 0.0
        for i in range(net.yield_opp_ptr[g], net.yield_opp_ptr[g + 1]):
            q += rate[net.yield_opp_mov[i]]
        f += net.yield_mg_weight[e] * (lane_factor(np.exp(-net.yield_gap_s * q), net.yield_mix[g]) - 1.0)
    return f


def restrict(y: Yielding, movs: np.ndarray) -> Yielding:
    """The giving way among the movements ``movs`` alone, renumbered in their order (a part of the network cut out
    as a network of its own, e.g. one coordination group of the optimiser). Every movement a kept lane group gives
    way to must be among ``movs``: giving way happens within a junction, so whole signals always are."""
    movs = np.asarray(movs, np.int64)
    n = y.mg_ptr.shape[0] - 1
    local = np.full(n, -1, np.int64)
    local[movs] = np.arange(movs.size)
    used = sorted({int(g) for m in movs.tolist() for g in y.mg_group[y.mg_ptr[m]:y.mg_ptr[m + 1]]})
    g_local = {g: i for i, g in enumerate(used)}
    opp_ptr, opp_mov = [0], []
    for g in used:
        opp = local[y.opp_mov[y.opp_ptr[g]:y.opp_ptr[g + 1]]]
        if np.any(opp < 0):
            raise ValueError("restrict: a lane group gives way to a movement outside the part")
        opp_mov += opp.tolist()
        opp_ptr.append(len(opp_mov))
    mg_ptr, mg_group, mg_weight = [0], [], []
    for m in movs.tolist():
        lo, hi = int(y.mg_ptr[m]), int(y.mg_ptr[m + 1])
        mg_group += [g_local[int(g)] for g in y.mg_group[lo:hi]]
        mg_weight += [float(w) for w in y.mg_weight[lo:hi]]
        mg_ptr.append(len(mg_group))
    return Yielding(float(y.gap_s), np.array(opp_ptr, np.int64), np.array(opp_mov, np.int64),
                    np.asarray(y.mix, np.float64)[used], np.array(mg_ptr, np.int64), np.array(mg_group, np.int64),
                    np.array(mg_weight, np.float64), np.asarray(y.sneak_veh, np.float64)[movs])


def yield_edges(y: Yielding) -> tuple[np.ndarray, np.ndarray]:
    """(source, destination) int64 arrays: opposing movement -> every movement whose capacity it sets."""
    src, dst = [], []
    for m in range(y.mg_ptr.shape[0] - 1):
        for e in range(y.mg_ptr[m], y.mg_ptr[m + 1]):
            g = y.mg_group[e]
            for o in y.opp_mov[y.opp_ptr[g]:y.opp_ptr[g + 1]]:
                src.append(int(o))
                dst.append(m)
    return np.array(src, np.int64), np.array(dst, np.int64)


def _mov_phase_codes(net) -> tuple[np.ndarray, np.ndarray]:
    """bool (n_phases, M) pairs: movement shows 'G' on some link in the phase; shows 'g' and no 'G'."""
    from engine.safety import GREEN_MAJOR, GREEN_MINOR

    major = np.zeros((net.n_phases, net.n_movements), bool)
    minor = np.zeros_like(major)
    for p in range(net.n_phases):
        s = int(net.phase_signal[p])
        base = int(net.signal_link_ptr[s])
        codes = net.phase_code[net.phase_code_ptr[p]:net.phase_code_ptr[p + 1]]
        for li in range(base, int(net.signal_link_ptr[s + 1])):
            m = int(net.link_movement[li])
            if m < 0:
                continue
            c = codes[li - base]
            major[p, m] |= c == GREEN_MAJOR
            minor[p, m] |= c == GREEN_MINOR
    return major, minor & ~major


def opposing_movements(net) -> list[list[int]]:
    """For every movement, the vehicle movements it gives way to when it is 'g': path foes (Network.link_path_foe)
    that are 'G' in a phase where it is 'g' and never 'G' together with it, or 'g' with it and of higher turn rank
    (straight, then right, then left). Empty lists when the network has no path foes."""
    major, minor = _mov_phase_codes(net)
    n = net.n_movements
    foe = [set() for _ in range(n)]
    ptr, foes = net.link_path_foe_ptr, net.link_path_foe
    if ptr.shape[0] != net.n_links + 1:
        return [[] for _ in range(n)]
    for li in range(net.n_links):
        m = int(net.link_movement[li])
        if m < 0:
            continue
        for f in foes[ptr[li]:ptr[li + 1]]:
            o = int(net.link_movement[f])
            if o >= 0 and o != m:
                foe[m].add(o)
    out: list[list[int]] = []
    for m in range(n):
        r = net.phases_of(int(net.mov_signal[m]))  # foes are links of the same signal: its phases only
        maj, mnr = major[r.start:r.stop], minor[r.start:r.stop]
        phases = np.flatnonzero(mnr[:, m])
        opp = []
        for o in sorted(foe[m]):
            if np.any(maj[:, m] & maj[:, o]):
                continue  # both have priority together somewhere: not a give-way pair
            gives_way = bool(np.any(maj[phases, o])) or (
                bool(np.any(mnr[phases, o])) and _RANK[int(net.mov_turn[o])] < _RANK[int(net.mov_turn[m])])
            if gives_way:
                opp.append(o)
        out.append(opp)
    return out


def build_yielding(net, arrival_veh_h: np.ndarray, gap_s: float, sneakers_per_lane: float = 0.0) -> Yielding:
    """The lane groups of ``net``'s yielding movements, with lane mixes from the mean arrivals (veh/h, (M,)); a
    movement's demand is spread evenly over its lanes. ``sneakers_per_lane``: vehicles per lane a yielding movement
    clears at the end of each green."""
    n = net.n_movements
    if gap_s <= 0 or len(net.mov_in_lanes) != n:
        return no_yielding(n)
    opp = opposing_movements(net)
    q = np.asarray(arrival_veh_h, np.float64)
    lanes = [tuple(net.mov_in_lanes[m]) for m in range(n)]
    on_lane: dict[str, float] = {}
    for m in range(n):
        for ln in lanes[m]:
            on_lane[ln] = on_lane.get(ln, 0.0) + q[m] / len(lanes[m])
    groups: dict[str, int] = {}  # lane -> its yielding movement (the busiest one if several)
    for m in range(n):
        if not opp[m] or q[m] <= 0:
            continue  # a movement without demand holds nobody up
        for ln in lanes[m]:
            cur = groups.get(ln)
            if cur is None or q[m] > q[cur]:
                groups[ln] = m
    names = sorted(groups)
    index = {ln: g for g, ln in enumerate(names)}
    mix = np.ones(len(names))
    for g, ln in enumerate(names):
        y = groups[ln]
        mix[g] = min(1.0, q[y] / len(lanes[y]) / on_lane[ln])
    mg: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for m in range(n):
        for ln in lanes[m]:
            if ln in index:
                mg[m].append((index[ln], 1.0 / len(lanes[m])))
    opp_rows = [opp[groups[ln]] for ln in names]
    opp_ptr = np.zeros(len(names) + 1, np.int64)
    opp_ptr[1:] = np.cumsum([len(r) for r in opp_rows])
    mg_ptr = np.zeros(n + 1, np.int64)
    mg_ptr[1:] = np.cumsum([len(r) for r in mg])
    sneak = np.zeros(n)
    for ln in names:
        sneak[groups[ln]] += sneakers_per_lane
    return Yielding(float(gap_s), opp_ptr, np.array([o for r in opp_rows for o in r], np.int64), mix, mg_ptr,
                    np.array([g for r in mg for g, _ in r], np.int64), np.array([w for r in mg for _, w in r]), sneak)
