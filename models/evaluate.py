"""Python-level API of the models: Network + Demand + plans -> KPIs (network, per signal, per movement).

Both models sit behind one signature (the :class:`PlanModel` protocol)::

    evaluate_cyclic(net, demand, plans=None, params=ModelParams()) -> Evaluation
    evaluate_queue(net, demand, plans=None, params=ModelParams()) -> Evaluation

``plans``: None (the network's own programs), an ``engine.plan.PlanSet``, a sequence of ``SignalPlan`` (signals
without a plan keep their program), or a mapping signal id -> SignalPlan. For many candidates at once use
:func:`plan_arrays` + :func:`score_cyclic` / :func:`score_queue` (or :class:`Context` with
``models.plans.Template.windows`` when only durations and offsets change).

Units: flows veh/h (pcu/h), delays s/veh, queues veh. The network's mean delay is the total delay over the demand
window divided by the vehicles that enter the signal network in it.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple, Protocol

import numpy as np

from models import cyclic, queue
from models.closed_form import random_delay
from models.demand import Demand
from models.network import Network
from models.plans import LevelParams, Template, build_template, windows_to_levels
from models.yielding import build_yielding, yield_edges

__all__ = [
    "MODELS",
    "Context",
    "Evaluation",
    "ModelParams",
    "PlanModel",
    "evaluate_cyclic",
    "evaluate_queue",
    "plan_arrays",
    "plan_timings",
    "prepare",
    "score_cyclic",
    "score_queue",
]


@dataclass(frozen=True)
class ModelParams:
    """Model constants (calibrate these against SUMO; see bench/bench_models.py).

    levels: effective-green and permissive-level rules (models.plans.LevelParams).
    dispersion_alpha, travel_beta: Robertson platoon dispersion F = 1 / (1 + alpha beta T), shift = beta T.
    overflow_ki: k I of the HCM incremental delay. min_capacity_veh_h: capacity floor for X and d2.
    max_sweeps, tol_veh: cyclic-model convergence. max_period_s: longest common period (LCM of cycles).
    queue_storage: finite approach storage (spillback) in the queue model; queue_travel_factor scales travel times.
    queue_random_delay: the queue model adds to each movement's deterministic delay the random part of the HCM
        incremental delay at its degree of saturation (models.closed_form.random_delay, k I = overflow_ki): the
        queue model steps the mean arrivals, so without it a movement just below capacity has no queue left at the
        end of green, and just above it no more than the deterministic overflow.
    random_delay_lane_groups: that random delay per lane group, as HCM computes it (:func:`lane_groups`: movements
        that share a lane, and every lane they use, form one group with their capacities and flows pooled). Off, each
        movement gets the random delay of a queue of its own, so a turn with a small share of a shared lane (its
        capacity that share) gets the large random delay of a small-capacity queue it does not have. Off by default:
        on the fidelity benchmark's two plan samples it raised the queue model's rank correlation on cologne3 and on
        one corridor sample but lowered it on the other, and it lowers the level of delay (MAPE 11 -> 23 % on the
        corridor with the other constants at their defaults; the "variant" rows of bench/results/models_fidelity.md
        and models_fidelity_seed7.md).
    overflow_lane_groups: the same for the cyclic model's overflow delay d2. Off by default: on plan seed 7 it
        lowered the cyclic model's rank correlation (cologne3 0.844 -> 0.810), and an optimised corridor plan made
        with it was worse in SUMO (its per-movement d2 also stands in for what the model does not capture).
    overflow_in_window: the cyclic model's overflow delay counts only what is incurred within the demand window (as
        a simulation over the window measures it) instead of HCM's delay until the overflow queue has cleared.
    accel_m_s2, decel_m_s2: every stop costs v/2 (1/a + 1/b) s of extra time at the approach speed v (SUMO's
        passenger-car defaults); stop_penalty False drops it.
    base_loss_s: time loss per vehicle that no signal causes (departure acceleration, turns, car following), added
        to the network mean only; 0 unless calibrated against a simulator.
    sat_flow_scale: multiplies every saturation flow (a simulator's or a city's discharge rate vs the compiler's
        1800 veh/h/lane base).
    yield_gap_s, yield_sneakers: movements shown 'g' give way to the opposing movements shown 'G' (or 'g' of higher
        turn rank): their discharge, and that of the lanes they share, falls with the opposing flow (Siegloch's
        t0 = critical gap - follow-up / 2, s; 0 turns it off), and each green ends with ``yield_sneakers`` vehicles
        per lane clearing from inside the junction (models.yielding). The defaults (3.0 s, 0.5 vehicle) rank the
        calibration plans best (24 random plans, plan seed 1000, SUMO seeds 101-103, as `gronvag calibrate` draws
        them) on the corridor and cologne3, out of t0 2.0-3.5 s and 0-2 vehicles, with the cyclic model's analysis
        periods (grid4x4 has no such movements to speak of). Until session 8 they were 2.5 s and 1 vehicle, chosen
        on the fidelity benchmark's own plans. The queue model alone would rank cologne3's calibration plans better
        at 2.5 s (0.861-0.868 against 0.830); both models share one set.
    cyclic_periods: "window" evaluates the cyclic model on the steady state of the window-mean demand; "bins" is
        HCM's multi-period analysis: every demand bin (15 min by default) is an analysis period of its own, its
        steady state with its own overflow term d2 over the bin (counted until the overflow clears, whatever
        overflow_in_window says), and the overflow queue left at the end of a bin is carried into the next as HCM's
        initial queue Qb with its delay d3 (:func:`initial_queue_delay`). A window whose demand rises and falls
        (cologne3: 2800 veh/h for 30 min, then 2100) is then judged by its peak, not by its mean. Only
        evaluate_cyclic (predict, calibration, the fidelity benchmark) and the optimiser's batch scoring
        (engine.optimise.evaluation.GroupEvaluator) read it; the queue model steps the bins' demand itself.
    lane_split: "compiled" keeps the compiler's saturation flows (a lane shared by k movements gives each 1/k of
        it); "demand" re-splits each approach's lanes over its movements in proportion to their demand / turn
        factor, capped at the lanes each may use (HCM's shared-lane equilibrium: equal X on shared lanes).
    """

    levels: LevelParams = field(default_factory=LevelParams)
    dispersion_alpha: float = 0.35
    travel_beta: float = 0.8
    overflow_ki: float = 0.5
    min_capacity_veh_h: float = 1.0
    max_sweeps: int = 50
    tol_veh: float = 1e-4
    max_period_s: int = 3600
    queue_storage: bool = True
    queue_travel_factor: float = 1.0
    queue_random_delay: bool = True
    random_delay_lane_groups: bool = False
    overflow_lane_groups: bool = False
    overflow_in_window: bool = True
    stop_penalty: bool = True
    accel_m_s2: float = 2.6
    decel_m_s2: float = 4.5
    base_loss_s: float = 0.0
    sat_flow_scale: float = 1.0
    lane_split: str = "compiled"
    cyclic_periods: str = "bins"
    yield_gap_s: float = 3.0
    yield_sneakers: float = 0.5


@dataclass(frozen=True, eq=False)
class Evaluation:
    """KPIs of one plan. Network scalars, then arrays per signal (S,) and per movement (M,)."""

    model: str
    signal_ids: tuple[str, ...]
    mean_delay_s: float
    total_delay_veh_h: float
    stops_per_veh: float
    vehicles: float
    max_dos: float
    signal_delay_s: np.ndarray
    signal_stops_per_veh: np.ndarray
    signal_flow_veh_h: np.ndarray
    signal_max_dos: np.ndarray
    mov_flow_veh_h: np.ndarray
    mov_capacity_veh_h: np.ndarray
    mov_dos: np.ndarray
    mov_delay_s: np.ndarray
    mov_stops_per_veh: np.ndarray
    mov_max_queue_veh: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)
    #: mean delay per vehicle that entered the network, counting only the time inside it: vehicles held outside a
    #: full entry approach are left out until they enter (a simulator counts that wait as departure delay, not as
    #: time loss). Equals ``mean_delay_s`` when no entry approach overflows. The figure to set against SUMO's time loss.
    network_delay_s: float = float("nan")

    def to_dict(self, movements: bool = False) -> dict:
        out = {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray)}
        out["signals"] = {
            sid: {"delay_s": float(self.signal_delay_s[i]), "stops_per_veh": float(self.signal_stops_per_veh[i]),
                  "flow_veh_h": float(self.signal_flow_veh_h[i]), "max_dos": float(self.signal_max_dos[i])}
            for i, sid in enumerate(self.signal_ids)
        }
        if movements:
            out["movements"] = {k: v.tolist() for k, v in asdict(self).items() if k.startswith("mov_")}
        out["extra"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.extra.items()}
        return out


class PlanModel(Protocol):
    def __call__(self, net: Network, demand: Demand, plans: Any = None, params: ModelParams = ...) -> Evaluation: ...


# ------------------------------------------------------------------------------------------------- context


@dataclass(frozen=True, eq=False)
class Context:
    """The static kernel inputs of one (network, demand, params), built once and reused for every plan."""

    net: Network
    demand: Demand
    params: ModelParams
    entry_veh_h: np.ndarray  # (M,) window-mean entry flow
    stop_penalty_s: np.ndarray  # (M,) time lost per stop
    cyclic_net: cyclic.CyclicNet
    cyclic_opts: cyclic.CyclicOptions
    queue_net: queue.QueueNet
    queue_demand: queue.QueueDemand
    mov_lane_group: np.ndarray  # (M,) int64: lane group of each movement (lane_groups)
    _templates: dict = field(default_factory=dict, repr=False)

    @property
    def window_s(self) -> float:
        return float(self.demand.end_s - self.demand.begin_s)

    @property
    def cyclic_evaluator(self) -> cyclic.CyclicEvaluator:
        """The reusable cyclic-model evaluator of this context (static inputs prepared once)."""
        if "_evaluator" not in self._templates:
            self._templates["_evaluator"] = cyclic.CyclicEvaluator(self.cyclic_net, self.cyclic_opts)
        return self._templates["_evaluator"]

    def template(self, states: tuple[tuple[str, ...], ...] | None = None) -> Template:
        """Template of the per-signal phase states (None: the network's programs), cached."""
        key = states
        if key not in self._templates:
            self._templates[key] = build_template(self.net, states, self.params.levels)
        return self._templates[key]


_CONTEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prepare(net: Network, demand: Demand, params: ModelParams | None = None) -> Context:
    """Build (or fetch from a per-network cache) the context of (net, demand, params)."""
    params = params or ModelParams()
    per_net = _CONTEXTS.setdefault(net, {})
    key = (id(demand), params)
    ctx = per_net.get(key)
    if ctx is not None and ctx.demand is demand:
        return ctx
    ctx = _build_context(net, demand, params)
    per_net[key] = ctx
    return ctx


def lane_groups(net: Network) -> np.ndarray:
    """Lane group of every movement (int64, (M,), numbered by first movement): movements that share an incoming lane
    belong to one group, and so (transitively) does every lane each of them uses, as HCM forms lane groups. A movement
    without lane information is a group of its own."""
    n = net.n_movements
    parent = np.arange(n)

    def root(m: int) -> int:
        while parent[m] != m:
            parent[m] = parent[parent[m]]
            m = int(parent[m])
        return m

    first: dict[str, int] = {}
    lanes = net.mov_in_lanes if len(net.mov_in_lanes) == n else ((),) * n
    for m in range(n):
        for ln in lanes[m]:
            other = first.setdefault(ln, m)
            a, b = root(m), root(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    out = np.array([root(m) for m in range(n)], np.int64)
    return np.unique(out, return_inverse=True)[1].astype(np.int64)


def pooled_random_delay(group: np.ndarray, dos: np.ndarray, capacity_veh_h: np.ndarray, period_h: float,
                        k_i: float) -> np.ndarray:
    """models.closed_form.random_delay per lane group: the group's flow over its capacity, both summed over its
    movements, applied to each movement with traffic."""
    cap = np.asarray(capacity_veh_h, np.float64)
    flow = np.asarray(dos, np.float64) * cap
    n_g = int(group.max()) + 1 if group.size else 0
    c_g = np.bincount(group, cap, n_g)
    q_g = np.bincount(group, flow, n_g)
    x_g = np.where(c_g > 0, q_g / np.maximum(c_g, 1e-12), 0.0)
    return np.where(np.asarray(dos) > 0, random_delay(x_g[group], c_g[group], period_h, k_i), 0.0)


def _window_mean(demand: Demand, rates_veh_h: np.ndarray) -> np.ndarray:
    widths = np.diff(np.minimum(demand.bin_edges_s, demand.end_s))
    return (rates_veh_h * widths[:, None]).sum(0) / max(demand.end_s - demand.begin_s, 1e-9)


def _sweep_order(n_mov: int, src: np.ndarray, dst: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Upstream-first order (topological where the feed graph has no loops; loops broken at the heaviest node)."""
    indeg = np.bincount(dst, minlength=n_mov).astype(np.int64)
    succ: list[list[int]] = [[] for _ in range(n_mov)]
    for a, b in zip(src.tolist(), dst.tolist(), strict=True):
        succ[a].append(b)
    done = np.zeros(n_mov, bool)
    order: list[int] = []
    ready = [m for m in range(n_mov) if indeg[m] == 0]
    while len(order) < n_mov:
        if not ready:
            rest = np.flatnonzero(~done)
            ready = [int(rest[np.argmax(weight[rest])])]
        m = ready.pop()
        if done[m]:
            continue
        done[m] = True
        order.append(m)
        for b in succ[m]:
            indeg[b] -= 1
            if indeg[b] == 0 and not done[b]:
                ready.append(b)
    return np.array(order, np.int64)


_TURN_FACTOR = {0: 1.0, 1: 0.90, 2: 0.85, 3: 0.40}  # straight, left (protected), right, U-turn
_LANE_VEH_H = 1800.0


def _lane_split_sat(net: Network, flow_veh_h: np.ndarray) -> np.ndarray:
    """Saturation flows (veh/s) with each approach's lanes split over its movements in proportion to demand.

    Lane-equivalents e_m of the approach's lanes, 0 <= e_m <= lanes m may use, sum = the approach's lanes, by water
    filling on weights flow_m / turn factor (equal degree of saturation where lanes are shared); a movement without
    demand keeps a tenth of a lane. Never-protected left turns keep the compiler's permissive factor.
    """
    sat = np.asarray(net.mov_sat_flow_veh_s, np.float64).copy()
    turn_f = np.array([_TURN_FACTOR.get(int(t), 1.0) for t in net.mov_turn])
    perm = (np.asarray(net.mov_turn) == 1) & ~np.asarray(net.mov_protected, bool)
    turn_f[perm] = 0.5
    for a in range(net.n_approaches):
        ms = np.flatnonzero(net.mov_approach == a)
        if ms.size == 0:
            continue
        cap_l = np.asarray(net.mov_n_lanes[ms], np.float64)
        lanes = float(min(net.appr_n_lanes[a], cap_l.sum()))
        w = np.maximum(flow_veh_h[ms], 1e-9) / turn_f[ms]
        e = np.zeros(ms.size)
        free = np.ones(ms.size, bool)
        left = lanes
        for _ in range(ms.size):  # water filling with caps
            share = left * w[free] / w[free].sum()
            over = share > cap_l[free]
            if not over.any():
                e[free] = share
                break
            idx = np.flatnonzero(free)[over]
            e[idx] = cap_l[idx]
            left -= cap_l[idx].sum()
            free[idx] = False
            if not free.any():
                break
        e = np.maximum(e, np.minimum(0.1, cap_l))
        sat[ms] = e * _LANE_VEH_H * turn_f[ms] / 3600.0
    return sat


def _link_storage_veh(net: Network) -> np.ndarray:
    """Vehicles each approach's link holds for the queue model (A,): the approach edge's storage, or, where an
    upstream signal feeds it through unsignalised junctions, the whole stretch from that signal's stop line (the
    queue model counts vehicles in transit from the upstream stop line against this storage, so the storage is the
    stretch's, at the approach's lanes and the compiler's per-vehicle spacing)."""
    storage = np.asarray(net.appr_storage_veh, np.float64).copy()
    per_m = storage / np.maximum(np.asarray(net.appr_length_m, np.float64), 1e-9)  # vehicles per metre of road
    src = np.repeat(np.arange(net.n_movements), np.diff(np.asarray(net.down_ptr, np.int64)))
    for k, a in enumerate(np.asarray(net.down_approach, np.int64)):
        if src.size and a >= 0:
            storage[a] = max(storage[a], per_m[a] * float(net.down_dist_m[k]))
    return storage


def _build_context(net: Network, demand: Demand, p: ModelParams) -> Context:
    n_mov = net.n_movements
    if demand.mov_arrival_veh_h.shape[1] != n_mov:
        raise ValueError(f"demand has {demand.mov_arrival_veh_h.shape[1]} movements, the network {n_mov}")
    entry_h = _window_mean(demand, demand.mov_entry_veh_h)
    if p.lane_split == "demand":
        sat = _lane_split_sat(net, _window_mean(demand, demand.mov_arrival_veh_h))
    elif p.lane_split == "compiled":
        sat = np.asarray(net.mov_sat_flow_veh_s, np.float64)
    else:
        raise ValueError(f"lane_split must be 'compiled' or 'demand', not {p.lane_split!r}")
    sat = sat * p.sat_flow_scale
    fptr = np.asarray(demand.feed_ptr, np.int64)
    src = np.repeat(np.arange(n_mov), np.diff(fptr))
    dst = np.asarray(demand.feed_mov, np.int64)
    share = np.asarray(demand.feed_share, np.float64)
    travel = np.asarray(demand.feed_travel_s, np.float64)
    # cyclic: CSR by destination, Robertson constants per feed
    by_dst = np.argsort(dst, kind="stable")
    in_ptr = np.zeros(n_mov + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=n_mov), out=in_ptr[1:])
    bt = p.travel_beta * travel[by_dst]
    keep = 1.0 - 1.0 / (1.0 + p.dispersion_alpha * bt)
    arrival_h = _window_mean(demand, demand.mov_arrival_veh_h)
    yielding = build_yielding(net, arrival_h, p.yield_gap_s, p.yield_sneakers)
    # upstream first: the feeds, and every movement whose capacity follows opposing departures after those
    y_src, y_dst = yield_edges(yielding)
    order = _sweep_order(n_mov, np.concatenate([src, y_src]), np.concatenate([dst, y_dst]), arrival_h)
    pen = np.zeros(n_mov)
    if p.stop_penalty:
        pen = np.asarray(net.mov_speed_m_s, np.float64) / 2.0 * (1.0 / p.accel_m_s2 + 1.0 / p.decel_m_s2)
    groups = lane_groups(net)
    cnet = cyclic.CyclicNet(
        sat, entry_h / 3600.0, in_ptr, src[by_dst], share[by_dst],
        np.rint(bt).astype(np.int64), keep, order, pen, yielding,
        groups if p.overflow_lane_groups else None,
    )
    copts = cyclic.CyclicOptions(
        period_h=(demand.end_s - demand.begin_s) / 3600.0, overflow_ki=p.overflow_ki, max_sweeps=p.max_sweeps,
        tol_veh=p.tol_veh, min_capacity_veh_s=p.min_capacity_veh_h / 3600.0, overflow_in_window=p.overflow_in_window,
    )
    storage = _link_storage_veh(net) if p.queue_storage else np.full(net.n_approaches, np.inf)
    qnet = queue.QueueNet(
        sat, np.asarray(net.mov_approach, np.int64),
        np.maximum(storage, 1.0), fptr, dst, share,
        np.maximum(1, np.rint(travel * p.queue_travel_factor)).astype(np.int64), yielding,
    )
    bin_steps = max(1, int(round(demand.bin_s)))
    qdem = queue.QueueDemand(np.asarray(demand.mov_entry_veh_h, np.float64) / 3600.0, bin_steps)
    return Context(net, demand, p, entry_h, pen, cnet, copts, qnet, qdem, groups)


# --------------------------------------------------------------------------------------------------- plans


def _valid_at(plans: list, t: float):
    for pl in plans:
        if pl.valid_from_s <= t < pl.valid_to_s:
            return pl
    return plans[0]


def plan_timings(net: Network, plans: Any = None, at_s: float = 0.0):
    """One candidate as (states per signal, durations (n_phases,), offsets (n_signals,)).

    Plans with validity periods: the one valid at ``at_s`` (else the first given for the signal).
    """
    by_signal: dict[str, list] = {}
    if plans is not None:
        items = plans.values() if isinstance(plans, Mapping) else getattr(plans, "plans", plans)
        for pl in items:
            if pl.signal_id not in net.signal_index:
                raise ValueError(f"plan for unknown signal {pl.signal_id!r}")
            by_signal.setdefault(pl.signal_id, []).append(pl)
    states: list[tuple[str, ...]] = []
    durations: list[float] = []
    offsets = np.zeros(net.n_signals)
    for s, sid in enumerate(net.signal_ids):
        if sid in by_signal:
            pl = _valid_at(by_signal[sid], at_s)
            n_links = int(net.signal_link_ptr[s + 1] - net.signal_link_ptr[s])
            if pl.n_links != n_links:
                raise ValueError(f"plan for {sid} has {pl.n_links} signal groups, the signal has {n_links}")
            states.append(tuple(ph.state for ph in pl.phases))
            durations += [float(ph.duration_s) for ph in pl.phases]
            offsets[s] = float(pl.offset_s)
        else:
            ph = net.phases_of(s)
            states.append(tuple(net.phase_states[p] for p in ph))
            durations += [float(net.phase_duration_s[p]) for p in ph]
            offsets[s] = float(net.signal_offset_s[s])
    return tuple(states), np.array(durations), offsets


def plan_arrays(ctx: Context, candidates: Sequence[Any]) -> tuple[cyclic.CyclicPlans, np.ndarray]:
    """K candidates (each a plan spec as in :func:`plan_timings`) -> CyclicPlans and ``scaled`` bool (K,)
    (True where cycles without a common period up to ``max_period_s`` were stretched)."""
    groups: dict[tuple, list[int]] = {}
    timings = []
    for i, c in enumerate(candidates):
        st, d, o = plan_timings(ctx.net, c, ctx.demand.begin_s)
        timings.append((d, o))
        groups.setdefault(st, []).append(i)
    k = len(candidates)
    parts = []
    for st, idx in groups.items():
        tpl = ctx.template(st)
        d = np.stack([timings[i][0] for i in idx])
        o = np.stack([timings[i][1] for i in idx])
        parts.append((idx, tpl.windows(d, o, ctx.params.max_period_s)))
    w = max(p[1][1].shape[2] for p in parts) if parts else 1
    n_mov = ctx.net.n_movements
    period = np.ones(k, np.int64)
    scaled = np.zeros(k, bool)
    ws, wl, wv = np.zeros((k, n_mov, w)), np.zeros((k, n_mov, w)), np.zeros((k, n_mov, w))
    for idx, (per, a, b, c, sc) in parts:
        period[idx] = per
        scaled[idx] = sc
        ws[idx, :, : a.shape[2]] = a
        wl[idx, :, : b.shape[2]] = b
        wv[idx, :, : c.shape[2]] = c
    return cyclic.CyclicPlans(period, ws, wl, wv), scaled


# -------------------------------------------------------------------------------------------------- models


def _aggregate(net: Network, model: str, flow, cap, dos, delay, stops, maxq, vehicles, extra) -> Evaluation:
    s_of = np.asarray(net.mov_signal, np.int64)
    n_sig = net.n_signals
    sflow = np.bincount(s_of, flow, n_sig)
    sdelay = np.bincount(s_of, flow * delay, n_sig)
    sstops = np.bincount(s_of, flow * stops, n_sig)
    smaxdos = np.zeros(n_sig)
    np.maximum.at(smaxdos, s_of, dos)
    window_h = extra.get("window_h", 1.0)
    total_delay_veh_h = float((flow * delay).sum() * window_h / 3600.0) + extra.get("base_loss_veh_h", 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sig_delay = np.where(sflow > 0, sdelay / sflow, 0.0)
        sig_stops = np.where(sflow > 0, sstops / sflow, 0.0)
    veh = float(vehicles)
    return Evaluation(
        model=model, signal_ids=net.signal_ids,
        mean_delay_s=total_delay_veh_h * 3600.0 / veh if veh > 0 else 0.0,
        total_delay_veh_h=total_delay_veh_h,
        stops_per_veh=float((flow * stops).sum() * window_h / veh) if veh > 0 else 0.0,
        vehicles=veh, max_dos=float(dos.max()) if dos.size else 0.0,
        signal_delay_s=sig_delay, signal_stops_per_veh=sig_stops, signal_flow_veh_h=sflow, signal_max_dos=smaxdos,
        mov_flow_veh_h=flow, mov_capacity_veh_h=cap, mov_dos=dos, mov_delay_s=delay, mov_stops_per_veh=stops,
        mov_max_queue_veh=maxq, extra=extra,
    )


def score_cyclic(ctx: Context, plans: cyclic.CyclicPlans, per_movement: bool = False):
    """Run the cyclic kernel on K candidates: (totals, per-movement) as cyclic.evaluate_batch returns them;
    mean delay per vehicle = totals.delay_veh_s_h / ctx.entry_veh_h.sum() + params.base_loss_s."""
    return ctx.cyclic_evaluator(plans, per_movement=per_movement)


class _Period(NamedTuple):
    """One analysis period of :func:`evaluate_cyclic`: the kernel's per-movement outputs and what the period adds."""

    mov: cyclic.CyclicMovementOut  # the kernel's per-movement outputs (row 0)
    hours: float  # its length, h
    d3: np.ndarray  # (M,) initial-queue delay, s/veh
    delay: np.ndarray  # (M,) delay per vehicle: uniform + overflow + d3 + the stop penalty, s
    stop_penalty: np.ndarray  # (M,) s/veh
    vehicles: float  # vehicles entering in the period
    outside_veh_s: np.ndarray  # (A,) overflow delay spent outside full entry approaches
    held_veh: float  # vehicles still outside at its end
    sweeps: int


def evaluate_cyclic(net: Network, demand: Demand, plans: Any = None, params: ModelParams | None = None) -> Evaluation:
    """The cyclic flow profile model's KPIs of one plan: the steady state of the window-mean demand, or with
    ``params.cyclic_periods == "bins"`` HCM's multi-period analysis over the demand bins (see ModelParams)."""
    params = params or ModelParams()
    if params.cyclic_periods not in ("window", "bins"):
        raise ValueError(f"cyclic_periods must be 'window' or 'bins', not {params.cyclic_periods!r}")
    demands = [demand]
    kernel_params = params
    if params.cyclic_periods == "bins" and demand.n_bins > 1:
        demands = analysis_periods(demand)
        kernel_params = period_params(params)
    parts: list[_Period] = []
    q0 = np.zeros(net.n_movements)  # overflow queues carried into the period, veh
    for dem in demands:
        ctx = prepare(net, dem, kernel_params)
        cp, scaled = plan_arrays(ctx, [plans])
        tot, mov = score_cyclic(ctx, cp, per_movement=True)
        hours = ctx.window_s / 3600.0
        flow, cap = mov.flow_veh_h[0], mov.capacity_veh_h[0]
        d3 = initial_queue_delay(q0, flow, cap, hours)
        over = mov.overflow_delay_s[0] + d3
        stop_pen = mov.stops_per_veh[0] * ctx.stop_penalty_s
        outside, held = _cyclic_held_outside(ctx, flow, cap, mov.uniform_delay_s[0], over, q0)
        parts.append(_Period(mov, hours, d3, mov.uniform_delay_s[0] + over + stop_pen, stop_pen,
                             ctx.entry_veh_h.sum() * hours, outside, held, int(tot.sweeps[0])))
        q0 = np.maximum(q0 + (flow - cap) * hours, 0.0)
    window_h = sum(p.hours for p in parts)
    vehicles = sum(p.vehicles for p in parts)
    hours = np.array([p.hours for p in parts])
    w = hours[:, None] * np.array([p.mov.flow_veh_h[0] for p in parts])  # vehicles per movement and period
    wsum = w.sum(0)

    def mean_of(rows):  # per-vehicle figure over the periods, each period weighted by its vehicles
        rows = np.array(rows)
        return np.where(wsum > 0, (w * rows).sum(0) / np.maximum(wsum, 1e-12), rows.mean(0))

    flow = wsum / window_h
    cap = np.array([p.mov.capacity_veh_h[0] for p in parts]).T @ hours / window_h
    dos = np.max([p.mov.dos[0] for p in parts], axis=0)
    maxq = np.max([p.mov.max_queue_veh[0] for p in parts], axis=0)
    extra = {"window_h": window_h, "period_s": int(cp.period_s[0]), "sweeps": max(p.sweeps for p in parts),
             "base_loss_veh_h": params.base_loss_s * vehicles / 3600.0,
             "mov_stop_penalty_s": mean_of([p.stop_penalty for p in parts]),
             "converged": all(p.sweeps <= params.max_sweeps for p in parts), "stretched_cycles": bool(scaled[0]),
             "mov_uniform_delay_s": mean_of([p.mov.uniform_delay_s[0] for p in parts]),
             "mov_overflow_delay_s": mean_of([p.mov.overflow_delay_s[0] + p.d3 for p in parts]),
             "mov_overflow_queue_veh": parts[-1].mov.overflow_queue_veh[0], "analysis_periods": len(parts)}
    if len(parts) > 1:
        extra["mov_initial_queue_delay_s"] = mean_of([p.d3 for p in parts])
    ev = _aggregate(net, "cyclic", flow, cap, dos, mean_of([p.delay for p in parts]),
                    mean_of([p.mov.stops_per_veh[0] for p in parts]), maxq, vehicles, extra)
    outside = sum(p.outside_veh_s for p in parts)
    held_veh = parts[-1].held_veh
    extra["held_outside_delay_veh_h"] = float(outside.sum()) / 3600.0
    extra["signal_held_outside_delay_veh_h"] = np.bincount(net.appr_signal, outside, net.n_signals) / 3600.0
    extra["held_outside_veh"] = held_veh
    entered = vehicles - held_veh
    inside = ev.total_delay_veh_h - extra["base_loss_veh_h"] - extra["held_outside_delay_veh_h"]
    net_delay = inside * 3600.0 / entered + params.base_loss_s if entered > 0 else 0.0
    return replace(ev, network_delay_s=float(net_delay))


_BINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # demand -> its bins as demands of their own


def analysis_periods(demand: Demand) -> list[Demand]:
    """The analysis periods of ``demand`` under ``cyclic_periods == "bins"``: each demand bin that starts inside
    the window as a demand of its own (cached per demand, so contexts prepared on them are reused)."""
    if demand not in _BINS:
        _BINS[demand] = [demand.bins(i, i + 1) for i in range(demand.n_bins) if demand.bin_edges_s[i] < demand.end_s]
    return _BINS[demand]


def period_params(params: ModelParams) -> ModelParams:
    """The kernel's constants for one analysis period: its own steady state, each overflow counted until it has
    cleared (HCM's d2; the queue carried into the next period is its d3)."""
    return replace(params, cyclic_periods="window", overflow_in_window=False)


def initial_queue_delay(q0, flow_h, cap_h, t_h: float) -> np.ndarray:
    """HCM's initial-queue delay d3 (s/veh) of an analysis period of ``t_h`` hours for movements that start it with
    overflow queues ``q0`` (veh), flows and capacities in veh/h: d3 = 1800 Qb (1 + u) t / (c T), with t = min(T, Qb /
    (c (1 - min(1, X)))) the time the initial queue takes to clear and u = 0 when it clears within T, else 1 - c T
    (1 - min(1, X)) / Qb (1 when X >= 1). It is the extra delay of the period's own arrivals; the carried vehicles'
    wait was counted by the overflow term of their own period (HCM's d2 counts it until the overflow has cleared).
    With deterministic arrivals the two add up to the D/D/1 queue's delay. Zero without an initial queue, flow or
    capacity."""
    q0 = np.asarray(q0, np.float64)
    v = np.asarray(flow_h, np.float64)
    c = np.asarray(cap_h, np.float64)
    live = (q0 > 0) & (c > 0) & (v > 0)
    c1 = np.where(live, c, 1.0)
    spare = c1 * (1.0 - np.minimum(v / c1, 1.0))  # veh/h
    cleared = live & (spare * t_h > q0)
    t = np.where(cleared, q0 / np.where(spare > 0, spare, 1.0), t_h)
    u = np.where(cleared, 0.0, 1.0 - spare * t_h / np.where(live, q0, 1.0))
    return np.where(live, 1800.0 * q0 * (1.0 + u) * t / (c1 * t_h), 0.0)


def _positive_area(q0: float, r: float, t: float, level: float) -> float:
    """Integral over [0, t] of max(0, q0 + r s - level) ds (a linear queue above a level)."""
    if r == 0.0:
        return max(0.0, q0 - level) * t
    cross = (level - q0) / r
    a, b = (max(0.0, cross), t) if r > 0 else (0.0, min(t, cross))
    if b <= a:
        return 0.0
    return 0.5 * ((q0 + r * a - level) + (q0 + r * b - level)) * (b - a)


def _cyclic_held_outside(ctx: Context, flow_h, cap_h, d1, d2, q0=None) -> tuple[np.ndarray, float]:
    """The part of the cyclic model's overflow delay spent outside the network per approach (veh*s, (A,)), and the
    vehicles still outside at the end of the window.

    On an entry approach (one no upstream movement feeds) the overflow queue starts the window at the overflow
    queues ``q0`` of its movements carried from an earlier period (none by default) and changes at the rate r = the
    sum of (flow - capacity) over the movements above capacity or with a queue to clear; the approach holds
    ``storage`` vehicles less its periodic queue (Little: flow * uniform delay), and beyond that the queue waits
    outside. Each movement's overflow delay is split by the outside share of the queue's area over the window (for
    a queue growing from empty: ``(rT - N)^2 / (rT)^2`` when rT > N, else 0), and whatever exceeds the storage at
    the end is still outside."""
    net = ctx.net
    cnet = ctx.cyclic_net
    t_s = ctx.window_s
    fed = np.diff(np.asarray(cnet.in_ptr)) > 0
    appr = np.asarray(net.mov_approach, np.int64)
    entry_only = np.ones(net.n_approaches, bool)
    entry_only[appr[fed]] = False
    storage = ctx.queue_net.storage_veh
    q0 = np.zeros(net.n_movements) if q0 is None else np.asarray(q0, np.float64)
    off = np.zeros(net.n_approaches)
    held = 0.0
    for a in np.flatnonzero(entry_only):
        ms = np.flatnonzero(appr == a)
        busy = (flow_h[ms] > cap_h[ms]) | (q0[ms] > 0)
        r = float((flow_h[ms] - cap_h[ms])[busy].sum()) / 3600.0
        start = float(q0[ms].sum())
        if r <= 0.0 and start <= 0.0:
            continue
        free = max(0.0, float(storage[a]) - float((flow_h[ms] * d1[ms]).sum()) / 3600.0)
        total = _positive_area(start, r, t_s, 0.0)
        outside = _positive_area(start, r, t_s, free)
        if total <= 0.0 or outside <= 0.0:
            continue
        off[a] = outside / total * float((flow_h[ms] * d2[ms]).sum()) * t_s / 3600.0
        held += max(0.0, start + r * t_s - free)
    return off, held


def queue_levels(ctx: Context, plans: cyclic.CyclicPlans) -> np.ndarray:
    """Per-second levels (K, P_max, M) of K candidates, row t = simulation second begin + t (mod P).

    Candidates with different periods are tiled to a common length (the LCM when small, else the longest)."""
    k = plans.period_s.shape[0]
    periods = [int(p) for p in plans.period_s]
    length = math.lcm(*periods) if math.lcm(*periods) <= 4 * max(periods) else max(periods)
    out = np.zeros((k, length, ctx.net.n_movements))
    for i in range(k):
        lv = windows_to_levels(periods[i], plans.win_start_s[i], plans.win_len_s[i], plans.win_level[i],
                               ctx.demand.begin_s)
        reps = -(-length // periods[i])
        out[i] = np.tile(lv, (reps, 1))[:length]
    return out


def score_queue(ctx: Context, levels: np.ndarray, state: queue.QueueState | None = None,
                n_steps: int | None = None) -> queue.QueueKpis:
    """Run the queue model for K candidates' levels (K, L, M) over the demand window (or n_steps); (K, M) KPIs."""
    state = state or queue.initial_state(ctx.queue_net)
    n = int(math.ceil(ctx.window_s)) if n_steps is None else int(n_steps)
    return queue.run_batch(ctx.queue_net, ctx.queue_demand, levels, state, n)


def evaluate_queue(net: Network, demand: Demand, plans: Any = None, params: ModelParams | None = None) -> Evaluation:
    """The time-varying queue model's KPIs of one plan over the demand window, from an empty network."""
    ctx = prepare(net, demand, params)
    cp, scaled = plan_arrays(ctx, [plans])
    levels = queue_levels(ctx, cp)
    state = queue.initial_state(ctx.queue_net)
    n = int(math.ceil(ctx.window_s))
    state, kpi = queue.run(ctx.queue_net, ctx.queue_demand, levels[0], state, n)
    window_h = n / 3600.0
    flow = kpi.arrivals_veh / window_h
    cap = ctx.queue_net.sat_veh_s * levels[0].mean(0) * 3600.0
    with np.errstate(invalid="ignore", divide="ignore"):
        dos = np.where(flow > 0, flow / np.maximum(cap, ctx.params.min_capacity_veh_h), 0.0)
        stops = np.where(kpi.arrivals_veh > 0, kpi.stops_veh / kpi.arrivals_veh, 0.0)
        stop_pen = stops * ctx.stop_penalty_s
        delay = np.where(kpi.arrivals_veh > 0, kpi.delay_veh_s / kpi.arrivals_veh, 0.0) + stop_pen
    rand = np.zeros_like(delay)
    if ctx.params.queue_random_delay:
        cap_floor = np.maximum(cap, ctx.params.min_capacity_veh_h)
        if ctx.params.random_delay_lane_groups:
            rand = pooled_random_delay(ctx.mov_lane_group, dos, cap_floor, window_h, ctx.params.overflow_ki)
        else:
            rand = random_delay(dos, cap_floor, window_h, ctx.params.overflow_ki)
        delay = delay + rand
    vehicles = float(kpi.entered_veh.sum() + state.backlog_veh.sum())
    extra = {"window_h": window_h, "period_s": int(cp.period_s[0]), "stretched_cycles": bool(scaled[0]),
             "base_loss_veh_h": ctx.params.base_loss_s * vehicles / 3600.0, "mov_stop_penalty_s": stop_pen,
             "backlog_delay_veh_h": float(kpi.backlog_delay_veh_s.sum() / 3600.0),
             "residual_queue_veh": float(state.queue_veh.sum()), "residual_backlog_veh": float(state.backlog_veh.sum()),
             "in_transit_veh": float(state.transit_veh.sum()), "blocked_s": kpi.blocked_s,
             "entered_veh": float(kpi.entered_veh.sum()), "exited_veh": float(kpi.exited_veh.sum()),
             "mov_random_delay_s": rand}
    ev = _aggregate(net, "queue", flow, cap, dos, delay, stops, kpi.max_queue_veh, vehicles, extra)
    # the entry backlog is delay too (vehicles waiting to enter a full approach): count it in the network mean
    total = ev.total_delay_veh_h + extra["backlog_delay_veh_h"]
    entered = extra["entered_veh"]
    inside = ev.total_delay_veh_h - extra["base_loss_veh_h"]
    net_delay = inside * 3600.0 / entered + ctx.params.base_loss_s if entered > 0 else 0.0
    return replace(ev, total_delay_veh_h=total, mean_delay_s=total * 3600.0 / vehicles if vehicles > 0 else 0.0,
                   network_delay_s=float(net_delay))


MODELS: dict[str, PlanModel] = {"cyclic": evaluate_cyclic, "queue": evaluate_queue}
