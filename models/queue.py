"""Time-varying point-queue model at 1 s with finite storage, delay lines and spillback, for any phase schedule.

State per movement m: the queue at its stop line, the vehicles travelling towards it (a delay line: a ring buffer
indexed by arrival second), and an entry backlog outside the network (vehicles that could not enter because the
approach was full). One step of one second:

1. space of approach a = storage_a - (queues + vehicles in transit on a), from the start of the step;
2. every movement asks to send ``min(queue + arrivals + entry requests, sat_flow * level(t))`` and every entry asks
   to enter; requests into each approach are scaled by ``phi_a = min(1, space_a / requests_a)`` (merge in
   proportion to demand); a movement that gives way (models.yielding) then has its capacity multiplied by its
   gap-acceptance factor from what the opposing movements send in this second, cut to their downstream phi (plus its
   sneakers in the last second of a green);
3. a movement's discharge is scaled by the smallest phi of the approaches it feeds (first-in-first-out: a blocked
   vehicle at the head holds the lane group), entries by their own approach's phi;
4. the queue moves by the exact one-second fluid update (uniform arrivals and service within the second, so the
   area under the queue, i.e. the delay, is exact); departures enter the downstream delay lines
   ``travel time`` seconds ahead by their feed shares; the rest leave the network.

``level[t % L, m]`` is the discharge level (fraction of the saturation flow: effective green with lost times
applied, permissive greens below 1) of any schedule: a horizon (L = horizon) or one cycle repeated (L = cycle).
Entry demand comes in bins of ``bin_steps`` seconds (the last bin repeats). Time ``t`` counts seconds from the
demand's begin; the state carries it, so stepping in chunks equals stepping at once. Deterministic.

Layers: :func:`run` / :func:`run_batch` check and allocate; :func:`_advance` is the one stepping kernel both use
(``run_batch`` runs ``prange`` over thread chunks with per-thread state and scratch).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from models.cyclic import _queue_second
from models.yielding import Yielding, factor_now, kernel_struct
from models.yielding import normalise as _normalise_yielding

__all__ = [
    "QueueDemand",
    "QueueKpis",
    "QueueNet",
    "QueueState",
    "allocate_kpis",
    "initial_state",
    "run",
    "run_batch",
]


class QueueNet(NamedTuple):
    """Static network. M movements, A approaches, E feed edges (CSR grouped by source movement).

    sat_veh_s: float64 (M,) saturation flow at level 1, veh/s.
    mov_approach: int64 (M,) approach (storage) of each movement.
    storage_veh: float64 (A,) vehicles an approach holds (queues + moving); inf for no limit.
    out_ptr: int64 (M+1,) feeds out of movement m are out_ptr[m]:out_ptr[m+1].
    out_dst: int64 (E,) downstream movement.
    out_share: float64 (E,) share of m's departures that go on to out_dst (per m sum <= 1; the rest exits).
    out_delay_s: int64 (E,) travel time stop line to downstream stop line, whole seconds >= 1.
    yielding: permissive movements that give way and the lanes they hold up (models.yielding): a movement's
        capacity in a second is multiplied by its factor from the opposing movements' discharge in that second (as
        offered, before downstream blocking); None for none.
    """

    sat_veh_s: np.ndarray
    mov_approach: np.ndarray
    storage_veh: np.ndarray
    out_ptr: np.ndarray
    out_dst: np.ndarray
    out_share: np.ndarray
    out_delay_s: np.ndarray
    yielding: Yielding | None = None


# QueueNet as the kernels take it: normalised, its Yielding's fields flat (yield_*)
_KernelNet = kernel_struct("_KernelNet", QueueNet)


class QueueDemand(NamedTuple):
    """entry_veh_s: float64 (B, M) entry rate into each movement's approach per demand bin, veh/s;
    bin_steps: seconds per bin (bin b covers t in [b*bin_steps, (b+1)*bin_steps); beyond the last bin it repeats)."""

    entry_veh_s: np.ndarray
    bin_steps: int


class QueueState(NamedTuple):
    """The model state; arrays are updated in place by :func:`run`.

    t: int64 (1,) seconds since the demand's begin. queue_veh, backlog_veh, transit_veh: float64 (M,).
    ring_veh: float64 (M, R) vehicles arriving at m's stop line at second t' in slot t' % R (R > max travel time).
    """

    t: np.ndarray
    queue_veh: np.ndarray
    backlog_veh: np.ndarray
    ring_veh: np.ndarray
    transit_veh: np.ndarray


class QueueKpis(NamedTuple):
    """Accumulated over the steps run, float64 (M,) (or (K, M) for a batch). Running more steps adds to them."""

    delay_veh_s: np.ndarray  # area under the stop-line queue
    backlog_delay_veh_s: np.ndarray  # area under the entry backlog (vehicles waiting to enter the network)
    stops_veh: np.ndarray  # arrivals that met a queue
    arrivals_veh: np.ndarray  # arrivals at the stop line (from upstream and entries)
    departures_veh: np.ndarray
    entered_veh: np.ndarray  # admitted from the entry backlog / entry demand
    exited_veh: np.ndarray  # departures that leave the network
    max_queue_veh: np.ndarray
    blocked_s: np.ndarray  # seconds in which downstream space cut the discharge


def allocate_kpis(*shape: int) -> QueueKpis:
    return QueueKpis(*(np.zeros(shape) for _ in QueueKpis._fields))


def ring_length(net: QueueNet) -> int:
    return int(net.out_delay_s.max()) + 1 if net.out_delay_s.size else 2


def initial_state(
    net: QueueNet,
    queue_veh: np.ndarray | None = None,
    backlog_veh: np.ndarray | None = None,
    t0: int = 0,
) -> QueueState:
    """A state at second ``t0`` with the given (observed) queues and entry backlogs, nothing in transit."""
    n_mov = net.sat_veh_s.shape[0]
    q = np.zeros(n_mov) if queue_veh is None else np.array(queue_veh, np.float64)
    b = np.zeros(n_mov) if backlog_veh is None else np.array(backlog_veh, np.float64)
    if q.shape != (n_mov,) or b.shape != (n_mov,) or np.any(q < 0) or np.any(b < 0):
        raise ValueError("initial queues and backlogs must be non-negative arrays of shape (M,)")
    return QueueState(np.array([t0], np.int64), q, b, np.zeros((n_mov, ring_length(net))), np.zeros(n_mov))


@njit(cache=True)
def _advance(net, dem, level, state, kpi, n_steps, occ, space, req, phi, a_in, ent, send, cmul, eff, phi_down):
    """Advance ``state`` by n_steps seconds under discharge levels ``level`` (L, M); accumulate into ``kpi``.

    Scratch: occ, space, req, phi (A,); a_in, ent, send, cmul, eff, phi_down (M,).
    """
    any_yield = net.yield_mg_ptr[net.yield_mg_ptr.shape[0] - 1] > 0
    n_mov = net.sat_veh_s.shape[0]
    n_appr = net.storage_veh.shape[0]
    n_lvl = level.shape[0]
    n_bins = dem.entry_veh_s.shape[0]
    ring = state.ring_veh
    n_ring = ring.shape[1]
    q = state.queue_veh
    backlog = state.backlog_veh
    transit = state.transit_veh
    t = state.t[0]
    for _ in range(n_steps):
        row = t % n_lvl
        slot = t % n_ring
        b = t // dem.bin_steps
        if b >= n_bins:
            b = n_bins - 1
        # 1. space from the start-of-step occupancy
        for a in range(n_appr):
            occ[a] = 0.0
            req[a] = 0.0
        for m in range(n_mov):
            occ[net.mov_approach[m]] += q[m] + transit[m]
        for a in range(n_appr):
            s = net.storage_veh[a] - occ[a]
            space[a] = s if s > 0.0 else 0.0
        # 2. requests: discharge (with arrivals of this second) and entries
        for m in range(n_mov):
            a_in[m] = ring[m, slot]
            ring[m, slot] = 0.0
            transit[m] -= a_in[m]
            ent[m] = backlog[m] + dem.entry_veh_s[b, m]
            c = net.sat_veh_s[m] * level[row, m]
            avail = q[m] + a_in[m] + ent[m]
            send[m] = avail if avail < c else c
            req[net.mov_approach[m]] += ent[m]
            cmul[m] = 1.0
        for m in range(n_mov):
            for e in range(net.out_ptr[m], net.out_ptr[m + 1]):
                req[net.mov_approach[net.out_dst[e]]] += send[m] * net.out_share[e]
        for a in range(n_appr):
            phi[a] = 1.0 if req[a] <= space[a] else space[a] / req[a]
        # the smallest phi of the approaches each movement feeds
        for m in range(n_mov):
            f = 1.0
            for e in range(net.out_ptr[m], net.out_ptr[m + 1]):
                pa = phi[net.mov_approach[net.out_dst[e]]]
                if pa < f:
                    f = pa
            phi_down[m] = f
        if any_yield:
            # movements that give way: capacity factor from the opposing discharge in this second (as offered, cut
            # to the space downstream)
            for m in range(n_mov):
                eff[m] = send[m] * phi_down[m]
            for m in range(n_mov):
                if net.yield_mg_ptr[m + 1] > net.yield_mg_ptr[m]:
                    cmul[m] = factor_now(net, m, eff)
            nxt = (t + 1) % n_lvl
            for m in range(n_mov):
                if net.yield_sneak_veh[m] > 0.0 and level[row, m] > 0.0 and level[nxt, m] == 0.0:
                    # the last second of a green: those waiting inside the junction clear (as extra capacity)
                    cmul[m] += net.yield_sneak_veh[m] / (net.sat_veh_s[m] * level[row, m])
                if cmul[m] != 1.0:
                    c = net.sat_veh_s[m] * level[row, m] * cmul[m]
                    avail = q[m] + a_in[m] + ent[m]
                    send[m] = avail if avail < c else c
        # 3.-4. entries, discharge, queue update, delay lines
        for m in range(n_mov):
            adm = ent[m] * phi[net.mov_approach[m]]
            left = ent[m] - adm
            kpi.backlog_delay_veh_s[m] += 0.5 * (backlog[m] + left)
            backlog[m] = left
            kpi.entered_veh[m] += adm
            arr = a_in[m] + adm
            f = phi_down[m]
            c = net.sat_veh_s[m] * level[row, m] * cmul[m]
            if f < 1.0:
                # discharge cut to the downstream space; the queue then runs at that rate all second
                c_blk = send[m] * f
                free = q[m] + arr if q[m] + arr < c else c
                if c_blk < free:
                    kpi.blocked_s[m] += 1.0
                    c = c_blk
            q1, d, area, stopped = _queue_second(q[m], arr, c)
            q[m] = q1
            kpi.delay_veh_s[m] += area
            kpi.stops_veh[m] += stopped
            kpi.arrivals_veh[m] += arr
            kpi.departures_veh[m] += d
            if q1 > kpi.max_queue_veh[m]:
                kpi.max_queue_veh[m] = q1
            gone = d
            for e in range(net.out_ptr[m], net.out_ptr[m + 1]):
                v = d * net.out_share[e]
                dst = net.out_dst[e]
                ring[dst, (t + net.out_delay_s[e]) % n_ring] += v
                transit[dst] += v
                gone -= v
            kpi.exited_veh[m] += gone
        t += 1
    state.t[0] = t


@njit(cache=True)
def _run_kernel(net, dem, level, state, kpi, n_steps, n_appr):
    n_mov = net.sat_veh_s.shape[0]
    _advance(net, dem, level, state, kpi, n_steps, np.zeros(n_appr), np.zeros(n_appr), np.zeros(n_appr),
             np.zeros(n_appr), np.zeros(n_mov), np.zeros(n_mov), np.zeros(n_mov), np.zeros(n_mov), np.zeros(n_mov),
             np.zeros(n_mov))


@njit(cache=True)
def _serial_batch_kernel(net, dem, levels, state0, kpi, n_steps, th_q, th_b, th_ring, th_transit, th_t):
    """All candidates in this thread (no parallel region)."""
    _chunk(net, dem, levels, state0, kpi, n_steps, 0, levels.shape[0], 0, th_q, th_b, th_ring, th_transit, th_t)


@njit(cache=True, parallel=True)
def _batch_kernel(net, dem, levels, state0, kpi, n_steps, chunk_ptr, th_q, th_b, th_ring, th_transit, th_t):
    """prange over thread chunks; every candidate starts from state0 in its thread's state buffers."""
    n_chunks = chunk_ptr.shape[0] - 1
    for c in prange(n_chunks):
        _chunk(net, dem, levels, state0, kpi, n_steps, chunk_ptr[c], chunk_ptr[c + 1], c, th_q, th_b, th_ring,
               th_transit, th_t)


@njit(cache=True)
def _chunk(net, dem, levels, state0, kpi, n_steps, k0, k1, c, th_q, th_b, th_ring, th_transit, th_t):
    """Candidates k0:k1, each from state0, in the state buffers of thread chunk c."""
    n_mov = net.sat_veh_s.shape[0]
    n_appr = net.storage_veh.shape[0]
    occ = np.zeros(n_appr)
    space = np.zeros(n_appr)
    req = np.zeros(n_appr)
    phi = np.zeros(n_appr)
    a_in = np.zeros(n_mov)
    ent = np.zeros(n_mov)
    send = np.zeros(n_mov)
    cmul = np.zeros(n_mov)
    eff = np.zeros(n_mov)
    phi_down = np.zeros(n_mov)
    for k in range(k0, k1):
        th_q[c, :] = state0.queue_veh
        th_b[c, :] = state0.backlog_veh
        th_ring[c, :, :] = state0.ring_veh
        th_transit[c, :] = state0.transit_veh
        th_t[c, 0] = state0.t[0]
        st = QueueState(th_t[c], th_q[c], th_b[c], th_ring[c], th_transit[c])
        kk = QueueKpis(kpi.delay_veh_s[k], kpi.backlog_delay_veh_s[k], kpi.stops_veh[k], kpi.arrivals_veh[k],
                       kpi.departures_veh[k], kpi.entered_veh[k], kpi.exited_veh[k], kpi.max_queue_veh[k],
                       kpi.blocked_s[k])
        _advance(net, dem, levels[k], st, kk, n_steps, occ, space, req, phi, a_in, ent, send, cmul, eff, phi_down)


def _normalise(net: QueueNet, dem: QueueDemand) -> tuple[_KernelNet, QueueDemand]:
    net = _KernelNet(
        np.ascontiguousarray(net.sat_veh_s, np.float64),
        np.ascontiguousarray(net.mov_approach, np.int64),
        np.ascontiguousarray(net.storage_veh, np.float64),
        np.ascontiguousarray(net.out_ptr, np.int64),
        np.ascontiguousarray(net.out_dst, np.int64),
        np.ascontiguousarray(net.out_share, np.float64),
        np.ascontiguousarray(net.out_delay_s, np.int64),
        *_normalise_yielding(net.yielding, net.sat_veh_s.shape[0]),
    )
    dem = QueueDemand(np.ascontiguousarray(dem.entry_veh_s, np.float64), int(dem.bin_steps))
    n_mov = net.sat_veh_s.shape[0]
    n_edges = int(net.out_ptr[-1]) if net.out_ptr.size else -1
    if net.mov_approach.shape != (n_mov,) or net.out_ptr.shape != (n_mov + 1,):
        raise ValueError("QueueNet: mov_approach must have M entries and out_ptr M+1")
    if n_mov and (net.mov_approach.min() < 0 or net.mov_approach.max() >= net.storage_veh.shape[0]):
        raise ValueError("QueueNet.mov_approach out of range")
    for name in ("out_dst", "out_share", "out_delay_s"):
        if getattr(net, name).shape != (n_edges,):
            raise ValueError(f"QueueNet.{name} must have out_ptr[-1] = {n_edges} entries")
    if n_edges and (net.out_delay_s.min() < 1):
        raise ValueError("QueueNet.out_delay_s must be >= 1 s (a departure cannot arrive in the same second)")
    src = np.repeat(np.arange(n_mov), np.diff(net.out_ptr))
    if np.any(net.out_share < 0) or np.any(np.bincount(src, net.out_share, n_mov) > 1 + 1e-9):
        raise ValueError("QueueNet.out_share must be >= 0 and sum to <= 1 per movement")
    if dem.entry_veh_s.ndim != 2 or dem.entry_veh_s.shape[1] != n_mov or dem.entry_veh_s.shape[0] < 1:
        raise ValueError(f"QueueDemand.entry_veh_s must have shape (B>=1, M={n_mov})")
    if dem.bin_steps < 1:
        raise ValueError("QueueDemand.bin_steps must be >= 1")
    return net, dem


def _check_state(net: QueueNet, state: QueueState) -> None:
    n_mov = net.sat_veh_s.shape[0]
    r = ring_length(net)
    if state.ring_veh.shape != (n_mov, r):
        raise ValueError(f"state ring must have shape (M, R) = ({n_mov}, {r}); make it with initial_state(net)")
    for arr in (state.queue_veh, state.backlog_veh, state.transit_veh):
        if arr.shape != (n_mov,) or arr.dtype != np.float64:
            raise ValueError("state arrays must be float64 of shape (M,)")
    if state.t.shape != (1,) or state.t.dtype != np.int64:
        raise ValueError("state.t must be int64 of shape (1,)")


def run(
    net: QueueNet,
    dem: QueueDemand,
    level: np.ndarray,
    state: QueueState,
    n_steps: int,
    kpi: QueueKpis | None = None,
) -> tuple[QueueState, QueueKpis]:
    """Advance ``state`` in place by ``n_steps`` seconds; accumulate into ``kpi`` (new zeros when None).

    ``level``: float64 (L, M), row t % L applies at second t. Returns (state, kpi), the same objects.
    """
    net, dem = _normalise(net, dem)
    _check_state(net, state)
    level = np.ascontiguousarray(level, np.float64)
    n_mov = net.sat_veh_s.shape[0]
    if level.ndim != 2 or level.shape[1] != n_mov or level.shape[0] < 1:
        raise ValueError(f"level must have shape (L>=1, M={n_mov})")
    if kpi is None:
        kpi = allocate_kpis(n_mov)
    _run_kernel(net, dem, level, state, kpi, int(n_steps), net.storage_veh.shape[0])
    return state, kpi


def run_batch(
    net: QueueNet,
    dem: QueueDemand,
    levels: np.ndarray,
    state: QueueState,
    n_steps: int,
    *,
    n_threads: int | None = None,
) -> QueueKpis:
    """Run K candidate schedules ``levels`` (K, L, M) from the same ``state`` (left unchanged) for ``n_steps``.

    Returns per-candidate KPIs, float64 (K, M). Scratch: one state per thread, whatever K is.
    """
    net, dem = _normalise(net, dem)
    _check_state(net, state)
    levels = np.ascontiguousarray(levels, np.float64)
    n_mov = net.sat_veh_s.shape[0]
    if levels.ndim != 3 or levels.shape[2] != n_mov or levels.shape[1] < 1:
        raise ValueError(f"levels must have shape (K, L>=1, M={n_mov})")
    k = levels.shape[0]
    n_thr = max(1, min(int(n_threads or numba.get_num_threads()), max(k, 1)))
    chunk_ptr = np.linspace(0, k, n_thr + 1).round().astype(np.int64)
    kpi = allocate_kpis(k, n_mov)
    r = state.ring_veh.shape[1]
    bufs = (np.zeros((n_thr, n_mov)), np.zeros((n_thr, n_mov)), np.zeros((n_thr, n_mov, r)), np.zeros((n_thr, n_mov)),
            np.zeros((n_thr, 1), np.int64))
    if n_thr == 1:
        _serial_batch_kernel(net, dem, levels, state, kpi, int(n_steps), *bufs)
    else:
        _batch_kernel(net, dem, levels, state, kpi, int(n_steps), chunk_ptr, *bufs)
    return kpi
