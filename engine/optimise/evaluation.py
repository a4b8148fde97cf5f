"""Adapter from the optimiser to the cyclic flow profile model: one coordination group as its own small network.

A :class:`GroupEvaluator` cuts the group's movements out of the network's :class:`models.cyclic.CyclicNet`: feeds
between the group's movements stay; flow arriving from outside the group (other groups, signals not optimised)
enters uniformly at its mean rate (the capacity-limited departures of the upstream movement under the current
programs). Its template is the models' template restricted to the group's signals, so the common period is the
group's cycle and candidates are evaluated K at a time with ``models.cyclic.evaluate_batch``. The network's stop
penalty, giving way (``models.yielding.restrict``) and lane groups are cut to the group with its movements (until
session 9 they were left out: the search scored permissive turns at their full saturation flow). With HCM's analysis
periods (``ModelParams.cyclic_periods == "bins"``, the default) the group is evaluated once per demand bin, the
overflow carried from each bin into the next, so that a group's score of a plan is the network objective
``models.evaluate.evaluate_cyclic`` gives it when the group is the whole network
(tests/test_optimise_analysis_periods.py).

Objective of a candidate (the same everywhere: :meth:`GroupEvaluator.score`, the offset tables here, the CP-SAT
split tables of :mod:`engine.optimise.model`)::

    sum_m w_m q_m (d_m + k h_m)  +  W_ped sum_c P_c (C - g_c)^2 / (2 C)

* q_m, d_m, h_m: movement m's flow (pcu/h), delay (s) and stops per vehicle as the cyclic model computes them;
  k = ``--stop-cost`` (s of delay per stop);
* w_m = 1 + (W_bus - 1) b_m, with W_bus = ``--bus-weight`` (default 1) and b_m the share of m's flow (pcu) that
  buses bring (``Demand.bus_share``): a bus's delay and stops count W_bus times what they count at W_bus = 1 (its
  pcu, 2.0 for vClass bus, times a car's). With W_bus = 1 every w_m is exactly 1 and the objective is the
  unweighted one, computed the same way as before. For person delay take W_bus = bus occupancy / (car occupancy x
  bus pcu), e.g. 40 / (1.3 x 2.0) = 15;
* pedestrians (``--ped-weight`` W_ped, default 0: off): at every signalised crossing c of the signal, the HCM
  pedestrian delay (C - g_c)^2 / (2 C) s per pedestrian (C the signal's cycle, g_c its walk green: the seconds its
  link is green 'G'/'g' in the plan's phases), times P_c pedestrians/h, split equally over the crossing's links.
  P_c comes from the scenario's walks (``Demand.crossing_ped_h``: each walk routed on the net's pedestrian graph,
  see :mod:`sim.demandcompile`) when the scenario has any; else, or when ``--ped-flow P`` is given, P per crossing
  (default 100).

:class:`SignalWeights` holds one signal's part of this (built with the instance, :func:`signal_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models import cyclic
from models.plans import Template
from models.yielding import restrict as restrict_yielding

DEFAULT_PED_FLOW_H = 100.0  # pedestrians/h per crossing when --ped-weight is on and --ped-flow is not given


def ped_delay_s(cycle_s, walk_green_s) -> np.ndarray:
    """HCM pedestrian delay at a signalised crossing, s per pedestrian: (C - g)^2 / (2 C) (g clipped to [0, C])."""
    c = np.asarray(cycle_s, np.float64)
    g = np.clip(np.asarray(walk_green_s, np.float64), 0.0, c)
    return np.divide((c - g) ** 2, 2.0 * c, out=np.zeros(np.broadcast(c, g).shape), where=c > 0)


@dataclass(frozen=True, eq=False)
class SignalWeights:
    """One signal's weights in the objective (see the module docstring).

    mov_weight: float64 (n_mov,) w_m = 1 + (W_bus - 1) * bus share, in the order of ``SignalInstance.movements``.
    mov_bus_veh_h: float64 (n_mov,) window-mean bus arrivals, pcu/h; mov_bus_share: their share of the movement's
    flow (pcu), in [0, 1]. bus_weight: W_bus.
    ped_green: float64 (n_ped, n_phases) 1 where pedestrian link j is green ('G'/'g') in phase p.
    ped_flow_h: float64 (n_ped,) pedestrians/h over link j. ped_crossing: crossing id of each link.
    ped_weight: W_ped (0: pedestrians not in the objective). ped_source: "scenario" (the demand's walks) or "option"
    (``--ped-flow`` or its default).
    """

    mov_weight: np.ndarray
    mov_bus_veh_h: np.ndarray
    mov_bus_share: np.ndarray
    bus_weight: float
    ped_green: np.ndarray
    ped_flow_h: np.ndarray
    ped_crossing: tuple[str, ...]
    ped_weight: float
    ped_source: str = "option"

    @property
    def weighted(self) -> bool:
        """Whether any movement weight differs from 1."""
        return bool(np.any(self.mov_weight != 1.0))

    @property
    def ped_on(self) -> bool:
        return self.ped_weight > 0 and self.ped_flow_h.size > 0 and bool(self.ped_flow_h.sum() > 0)

    def ped_delay_s_h(self, durations: np.ndarray) -> np.ndarray:
        """Pedestrian delay, pedestrian-seconds per hour (unweighted), for durations (..., n_phases) -> (...)."""
        d = np.asarray(durations, np.float64)
        if not self.ped_flow_h.size:
            return np.zeros(d.shape[:-1])
        c = d.sum(-1)
        g = d @ self.ped_green.T
        return (self.ped_flow_h * ped_delay_s(c[..., None], g)).sum(-1)

    def ped_cost(self, durations: np.ndarray) -> np.ndarray:
        """The pedestrian term of the objective, W_ped * ped_delay_s_h (0 when off)."""
        d = np.asarray(durations, np.float64)
        if not self.ped_on:
            return np.zeros(d.shape[:-1])
        return self.ped_weight * self.ped_delay_s_h(d)


def signal_weights(net, demand, s: int, states: tuple[str, ...], movements: np.ndarray, options) -> SignalWeights:
    """The weights of signal ``s`` (phase states ``states``, global ``movements``) under the optimiser's options
    (``bus_weight``, ``ped_weight``, ``ped_flow_h``; see the module docstring)."""
    bus_w = float(getattr(options, "bus_weight", 1.0))
    ped_w = float(getattr(options, "ped_weight", 0.0))
    movements = np.asarray(movements, np.int64)
    bus = np.asarray(demand.mean_bus_veh_h(), np.float64)[movements]
    share = np.asarray(demand.bus_share(), np.float64)[movements]
    weight = np.ones(movements.size)
    if bus_w != 1.0:
        weight = 1.0 + (bus_w - 1.0) * share
    flow_p = getattr(options, "ped_flow_h", None)
    scen = getattr(demand, "crossing_ped_h", None)
    source = "option"
    if flow_p is None and scen is not None and float(np.sum(scen)) > 0:
        source = "scenario"
    flow_p = DEFAULT_PED_FLOW_H if flow_p is None else float(flow_p)
    base = int(net.signal_link_ptr[s])
    links = [(l - base, int(net.link_crossing[l])) for l in range(base, int(net.signal_link_ptr[s + 1]))
             if int(net.link_crossing[l]) >= 0]
    per_crossing: dict[int, int] = {}
    for _, c in links:
        per_crossing[c] = per_crossing.get(c, 0) + 1
    green = np.zeros((len(links), len(states)))
    for j, (li, _) in enumerate(links):
        for p, st in enumerate(states):
            green[j, p] = 1.0 if li < len(st) and st[li] in "Gg" else 0.0
    flows = np.array([(float(scen[c]) if source == "scenario" else flow_p) / per_crossing[c] for _, c in links],
                     np.float64)
    return SignalWeights(weight, bus, share, bus_w, green, flows, tuple(net.crossing_ids[c] for _, c in links), ped_w,
                         source)


@dataclass
class Scores:
    """Per-candidate results. objective, delay_veh_s_h, stops_veh_h, max_dos: float64 (K,); mov_cost: float64 (K, M)
    (weighted cost of each movement, the signal's pedestrian term added to its first movement, or None when
    per-movement output was not asked for); mov_dos likewise. ped_delay_s_h: float64 (K,) pedestrian-seconds per
    hour (unweighted; zeros when pedestrians are off); bus_delay_veh_s_h: float64 (K,) bus delay (pcu-s/h) when the
    bus weight is on and per-movement results were computed, else None."""

    objective: np.ndarray
    delay_veh_s_h: np.ndarray
    stops_veh_h: np.ndarray
    max_dos: np.ndarray
    mov_cost: np.ndarray | None
    mov_dos: np.ndarray | None
    ped_delay_s_h: np.ndarray | None = None
    bus_delay_veh_s_h: np.ndarray | None = None


def network_terms(inst, ev, sol=None) -> dict:
    """The weighted objective and its bus and pedestrian parts on the whole network, for the summary.

    ``ev``: ``models.evaluate.Evaluation`` of a plan; ``sol``: its ``Solution`` (None: the current programs, whose
    walk greens come from the network's programs). Movement weights w_m = 1 + (W_bus - 1) * bus share on every
    movement; pedestrians at the instance's signals. Returns objective_weighted (veh-s/h + k stops/h, weighted, plus
    the weighted pedestrian term), bus_delay_s (mean delay per bus, s), bus_flow_veh_h (pcu/h), ped_delay_s (mean
    HCM delay per pedestrian, s), ped_flow_h.
    """
    opts = inst.options
    share = np.asarray(inst.demand.bus_share(), np.float64)
    w = 1.0 + (float(opts.bus_weight) - 1.0) * share
    flow = np.asarray(ev.mov_flow_veh_h, np.float64)
    delay = np.asarray(ev.mov_delay_s, np.float64)
    cost = flow * (delay + opts.stop_cost_s * np.asarray(ev.mov_stops_per_veh, np.float64))
    obj = float(cost.sum()) if float(opts.bus_weight) == 1.0 else float((w * cost).sum())
    bus_flow = flow * share
    ped_delay = ped_flow = ped_cost = 0.0
    net = inst.net
    for i, sig in enumerate(inst.signals):
        sw = getattr(sig, "weights", None)
        if sw is None:
            continue
        if sol is None:
            states = tuple(net.phase_states[p] for p in net.phases_of(sig.index))
            d = np.array([net.phase_duration_s[p] for p in net.phases_of(sig.index)], np.float64)
            sw = signal_weights(net, inst.demand, sig.index, states, sig.movements, opts)
        else:
            d = np.asarray(sol.timings[i].durations_s, np.float64)
        pd = float(sw.ped_delay_s_h(d))
        ped_delay += pd
        ped_flow += float(sw.ped_flow_h.sum())
        ped_cost += float(sw.ped_cost(d))
    return {"objective_weighted": obj + ped_cost,
            "bus_delay_s": float((bus_flow * delay).sum() / bus_flow.sum()) if bus_flow.sum() > 0 else 0.0,
            "bus_flow_veh_h": float(bus_flow.sum()),
            "ped_delay_s": ped_delay / ped_flow if ped_flow > 0 else 0.0, "ped_flow_h": ped_flow}


def outside_departures_veh_h(ctx) -> np.ndarray:
    """Mean departure rate of every movement under the network's current programs (cyclic model), veh/h."""
    from models.evaluate import evaluate_cyclic

    ev = evaluate_cyclic(ctx.net, ctx.demand, None, ctx.params)
    return np.minimum(ev.mov_flow_veh_h, ev.mov_capacity_veh_h)


def _outside_cached(ctx) -> np.ndarray:
    """:func:`outside_departures_veh_h` of a context, computed once per context (every group of an analysis period
    shares it)."""
    if "_outside_dep" not in ctx._templates:
        ctx._templates["_outside_dep"] = outside_departures_veh_h(ctx)
    return ctx._templates["_outside_dep"]


class GroupEvaluator:
    """The cyclic model of one group. ``signals``: the SignalInstance objects of the group, in group order."""

    def __init__(self, ctx, signals, stop_cost_s: float, outside_dep_veh_h: np.ndarray, template=None):
        self.ctx = ctx
        self.signals = list(signals)
        self.stop_cost_s = float(stop_cost_s)
        net = ctx.net
        movs = np.concatenate([s.movements for s in self.signals]).astype(np.int64)
        self.movements = movs
        local = np.full(net.n_movements, -1, np.int64)
        local[movs] = np.arange(movs.size)
        self.local = local
        cn = ctx.cyclic_net
        entry = np.asarray(cn.entry_veh_s, np.float64)[movs].copy()
        in_ptr = [0]
        src, share, shift, keep = [], [], [], []
        for i, m in enumerate(movs.tolist()):
            for f in range(int(cn.in_ptr[m]), int(cn.in_ptr[m + 1])):
                u = int(cn.in_src[f])
                if local[u] >= 0:
                    src.append(int(local[u]))
                    share.append(float(cn.in_share[f]))
                    shift.append(int(cn.in_shift_s[f]))
                    keep.append(float(cn.in_keep[f]))
                else:
                    entry[i] += float(cn.in_share[f]) * outside_dep_veh_h[u] / 3600.0
            in_ptr.append(len(src))
        order = np.array([local[m] for m in np.asarray(cn.order).tolist() if local[m] >= 0], np.int64)
        # the network's stop penalty, giving way and lane groups, cut to the group (they stay within a junction)
        pen = None if cn.stop_penalty_s is None else np.asarray(cn.stop_penalty_s, np.float64)[movs]
        self.stop_pen = np.zeros(movs.size) if pen is None else pen
        yielding = None if cn.yielding is None else restrict_yielding(cn.yielding, movs)
        lane_group = None
        if cn.lane_group is not None:
            lane_group = np.unique(np.asarray(cn.lane_group)[movs], return_inverse=True)[1].astype(np.int64)
        self.net = cyclic.CyclicNet(
            np.asarray(cn.sat_veh_s, np.float64)[movs], entry, np.array(in_ptr, np.int64), np.array(src, np.int64),
            np.array(share, np.float64), np.array(shift, np.int64), np.array(keep, np.float64), order, pen, yielding,
            lane_group)
        self.template = _sub_template(template if template is not None else ctx.template(),
                                      [s.index for s in self.signals], local, movs.size)
        self.phase_ptr = self.template.phase_ptr
        # movement -> signal (position in the group), and each signal's neighbourhood: own + fed movements
        self.mov_sig = np.repeat(np.arange(len(self.signals)), [s.movements.size for s in self.signals])
        self.flow_veh_h = entry * 3600.0  # entries only; arrival flows come from the model
        # objective weights (module docstring): per movement, and each signal's pedestrian term
        ws = [getattr(s, "weights", None) for s in self.signals]
        self.mov_weight = np.concatenate([w.mov_weight if w is not None else np.ones(s.movements.size)
                                          for s, w in zip(self.signals, ws, strict=True)]).astype(np.float64)
        self.bus_share = np.concatenate([w.mov_bus_share if w is not None else np.zeros(s.movements.size)
                                         for s, w in zip(self.signals, ws, strict=True)]).astype(np.float64)
        self.weighted = bool(np.any(self.mov_weight != 1.0))
        self.ped = [(k, w) for k, w in enumerate(ws) if w is not None and w.ped_flow_h.size]
        self.ped_on = any(w.ped_on for _, w in self.ped)
        first = np.searchsorted(self.mov_sig, np.arange(len(self.signals)))
        self.first_mov = np.where(first < self.mov_sig.size, first, -1)
        # HCM's analysis periods (ModelParams.cyclic_periods "bins"): the group once per demand bin, as its own
        # steady state; see _kernel
        self.periods: list[tuple[GroupEvaluator, float]] = []
        if ctx.params.cyclic_periods == "bins" and ctx.demand.n_bins > 1:
            from models.evaluate import analysis_periods, period_params, prepare

            tpl = template if template is not None else ctx.template()
            for dem in analysis_periods(ctx.demand):
                bctx = prepare(ctx.net, dem, period_params(ctx.params))
                self.periods.append((GroupEvaluator(bctx, signals, stop_cost_s, _outside_cached(bctx), tpl),
                                     bctx.window_s / 3600.0))

    @property
    def n_signals(self) -> int:
        return len(self.signals)

    def links(self) -> list[tuple[int, int, int, int]]:
        """Feeds between different signals of the group: (upstream signal, downstream signal, src mov, dst mov)."""
        out = []
        n = self.net
        for m in range(self.movements.size):
            for f in range(int(n.in_ptr[m]), int(n.in_ptr[m + 1])):
                u = int(n.in_src[f])
                a, b = int(self.mov_sig[u]), int(self.mov_sig[m])
                if a != b:
                    out.append((a, b, u, m))
        return out

    def plans(self, durations: np.ndarray, offsets: np.ndarray) -> cyclic.CyclicPlans:
        """durations int (K, n_group_phases) (signals concatenated), offsets (K, n_signals) -> CyclicPlans."""
        period, ws, wl, wv, _ = self.template.windows(np.asarray(durations, np.float64),
                                                      np.asarray(offsets, np.float64),
                                                      self.ctx.params.max_period_s)
        return cyclic.CyclicPlans(period, ws, wl, wv)

    def ped_terms(self, durations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(weighted pedestrian cost, unweighted pedestrian delay in ped-s/h), float64 (K, n_signals) each, for
        durations (K, n_group_phases)."""
        d = np.atleast_2d(np.asarray(durations, np.float64))
        cost = np.zeros((d.shape[0], len(self.signals)))
        delay = np.zeros_like(cost)
        ptr = self.phase_ptr
        for k, w in self.ped:
            dk = d[:, int(ptr[k]):int(ptr[k + 1])]
            delay[:, k] = w.ped_delay_s_h(dk)
            if w.ped_on:
                cost[:, k] = w.ped_weight * delay[:, k]
        return cost, delay

    def _kernel(self, plans: cyclic.CyclicPlans, need_mov: bool):
        """The cyclic model on K candidates: delay (veh-s/h, stop penalty included), stops/h and the largest X, each
        float64 (K,), and per movement (flow veh/h, delay s/veh with its stop penalty, stops/veh, X), each float64
        (K, M), or None.

        With analysis periods, each demand bin is evaluated as its own steady state with its overflow delay d2; the
        overflow queue left at a bin's end enters the next as HCM's initial queue with its delay d3 (as
        models.evaluate.evaluate_cyclic does for one plan). The figures are the hours-weighted means over the
        periods (per movement: per vehicle, weighted by its flow in each period); X is the hours-weighted mean,
        i.e. the window-mean demand's X, so the degree-of-saturation cap keeps its meaning."""
        if not self.periods:
            tot, mov = cyclic.evaluate_batch(self.net, plans, self.ctx.cyclic_opts, per_movement=need_mov)
            per = ((mov.flow_veh_h, mov.uniform_delay_s + mov.overflow_delay_s + mov.stops_per_veh * self.stop_pen,
                    mov.stops_per_veh, mov.dos) if need_mov else None)
            return tot.delay_veh_s_h, tot.stops_veh_h, tot.max_dos, per
        from models.evaluate import initial_queue_delay

        k, m = plans.period_s.shape[0], self.movements.size
        total_h = sum(h for _, h in self.periods)
        delay, stops = np.zeros(k), np.zeros(k)
        flow_m, delay_m, stops_m, dos_m, q0 = (np.zeros((k, m)) for _ in range(5))
        for sub, h in self.periods:
            tot, mov = cyclic.evaluate_batch(sub.net, plans, sub.ctx.cyclic_opts, per_movement=True)
            flow, cap = mov.flow_veh_h, mov.capacity_veh_h
            d3 = initial_queue_delay(q0, flow, cap, h)
            w = h / total_h
            delay += w * (tot.delay_veh_s_h + (flow * d3).sum(1))
            stops += w * tot.stops_veh_h
            flow_m += w * flow
            delay_m += w * flow * (mov.uniform_delay_s + mov.overflow_delay_s + d3 + mov.stops_per_veh * self.stop_pen)
            stops_m += w * flow * mov.stops_per_veh
            dos_m += w * mov.dos
            q0 = np.maximum(q0 + (flow - cap) * h, 0.0)
        live = flow_m > 0
        safe = np.where(live, flow_m, 1.0)
        per = (flow_m, np.where(live, delay_m / safe, 0.0), np.where(live, stops_m / safe, 0.0), dos_m)
        return delay, stops, dos_m.max(1) if m else np.zeros(k), per

    def score(self, durations: np.ndarray, offsets: np.ndarray, per_movement: bool = False) -> Scores:
        """Objective (module docstring) and its parts for K candidates: durations (K, n_group_phases), offsets
        (K, n_signals)."""
        plans = self.plans(durations, offsets)
        need_mov = per_movement or self.weighted
        delay, stops, max_dos, per = self._kernel(plans, need_mov)
        obj = delay + self.stop_cost_s * stops
        mov_cost = mov_dos = bus_delay = None
        if need_mov:
            flow, d, h, dos = per
            cost = flow * (d + self.stop_cost_s * h)
            if self.weighted:  # the unweighted total plus the extra weight of the bus share: exact at W_bus = 1
                obj = obj + (cost * (self.mov_weight - 1.0)).sum(1)
                cost = cost * self.mov_weight
                bus_delay = (flow * self.bus_share * d).sum(1)
            if per_movement:
                mov_cost = cost
                mov_dos = dos
        ped_cost, ped_delay = self.ped_terms(durations)
        if self.ped_on:
            obj = obj + ped_cost.sum(1)
            if mov_cost is not None:  # each signal's pedestrian term on its first movement (search.LocalSearch)
                for k in range(len(self.signals)):
                    if self.first_mov[k] >= 0:
                        mov_cost[:, self.first_mov[k]] += ped_cost[:, k]
        return Scores(obj, delay, stops, max_dos, mov_cost, mov_dos, ped_delay.sum(1), bus_delay)

    def profiles(self, durations: np.ndarray, offsets: np.ndarray):
        """Steady-state (arrivals, capacity, departures) float64 (M, P) of one candidate."""
        plans = self.plans(np.atleast_2d(durations), np.atleast_2d(offsets))
        return cyclic.evaluate_profiles(self.net, plans, self.ctx.cyclic_opts, 0)

    def offset_pair_tables(self, durations: np.ndarray, offsets: np.ndarray, cycle_s: int):
        """Offset-difference cost tables of every linked signal pair at this plan (see engine.optimise.tables).

        Returns a list of (i, j, table): table float64 (C,) is the cost per hour of the links between signals i < j
        as a function of (o_i - o_j) mod C; empty when the plan's period is not the common cycle.
        """
        from engine.optimise.tables import OffsetRows, Profiles, offset_tables

        arr, cap, dep = self.profiles(durations, offsets)
        c = int(cycle_s)
        if arr.shape[1] != c:
            return []
        n = self.net
        rows: dict[tuple[int, int], list[int]] = {}
        for m in range(self.movements.size):
            for f in range(int(n.in_ptr[m]), int(n.in_ptr[m + 1])):
                a = int(self.mov_sig[int(n.in_src[f])])
                if a != int(self.mov_sig[m]):
                    rows.setdefault((a, m), []).append(f)
        if not rows:
            return []
        keys = sorted(rows)
        ptr = np.zeros(len(keys) + 1, np.int64)
        ptr[1:] = np.cumsum([len(rows[k]) for k in keys])
        fl = np.array([f for k in keys for f in rows[k]], np.int64)
        spec = OffsetRows(np.array([m for _, m in keys], np.int64), ptr, n.in_src[fl], n.in_share[fl],
                          n.in_shift_s[fl], n.in_keep[fl])
        per_row = offset_tables(spec, Profiles(arr, cap, dep), self.stop_cost_s) * (3600.0 / c)
        if self.weighted:  # a row's cost is the cost of its downstream movement: weighted by that movement
            per_row = per_row * self.mov_weight[spec.dst][:, None]
        o = np.mod(np.asarray(offsets, np.int64).ravel(), c)
        tables: dict[tuple[int, int], np.ndarray] = {}
        e = np.arange(c)
        for r, (a, m) in enumerate(keys):
            b = int(self.mov_sig[m])
            lo, hi = min(a, b), max(a, b)
            e0 = (o[lo] - o[hi]) % c
            shift = (e - e0) % c if a == lo else (e0 - e) % c
            t = tables.setdefault((lo, hi), np.zeros(c))
            t += per_row[r, shift]
        return [(i, j, t) for (i, j), t in sorted(tables.items())]

    def movement_report(self, durations: np.ndarray, offsets: np.ndarray):
        """Per-movement outputs (CyclicMovementOut with K = 1) of one candidate."""
        plans = self.plans(np.atleast_2d(durations), np.atleast_2d(offsets))
        return cyclic.evaluate_batch(self.net, plans, self.ctx.cyclic_opts, per_movement=True)


def _sub_template(tpl: Template, sig_global: list[int], local_mov: np.ndarray, n_mov: int) -> Template:
    """The template restricted to the given signals (in that order), movements renumbered by ``local_mov``."""
    ptr = np.asarray(tpl.phase_ptr)
    phase_ptr = np.zeros(len(sig_global) + 1, np.int64)
    states: list[str] = []
    phase_map = {}
    for k, s in enumerate(sig_global):
        for g in range(int(ptr[s]), int(ptr[s + 1])):
            phase_map[g] = len(states)
            states.append(tpl.states[g])
        phase_ptr[k + 1] = len(states)
    pos = {s: k for k, s in enumerate(sig_global)}
    keep = np.array([int(s) in pos for s in tpl.run_signal.tolist()], bool)
    r = np.flatnonzero(keep)

    def remap(a):
        return np.array([phase_map[int(x)] for x in a[r]], np.int64)

    return Template(
        n_movements=n_mov, phase_ptr=phase_ptr, states=tuple(states),
        run_mov=local_mov[tpl.run_mov[r]].astype(np.int64),
        run_signal=np.array([pos[int(s)] for s in tpl.run_signal[r]], np.int64),
        run_slot=tpl.run_slot[r].copy(), run_first=remap(tpl.run_first), run_last=remap(tpl.run_last),
        run_level=tpl.run_level[r].copy(), run_lost=tpl.run_lost[r].copy(), run_gain=tpl.run_gain[r].copy(),
        run_full=tpl.run_full[r].copy(), max_runs=max(1, int(tpl.max_runs)),
    )
