"""Adapter from the optimiser to the cyclic flow profile model: one coordination group as its own small network.

A :class:`GroupEvaluator` cuts the group's movements out of the network's :class:`models.cyclic.CyclicNet`: feeds
between the group's movements stay; flow arriving from outside the group (other groups, signals not optimised)
enters uniformly at its mean rate (the capacity-limited departures of the upstream movement under the current
programs). Its template is the models' template restricted to the group's signals, so the common period is the
group's cycle and candidates are evaluated K at a time with ``models.cyclic.evaluate_batch``.

Objective of a candidate: delay (veh-s/h) + stop_cost_s * stops (/h), both as the cyclic model computes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models import cyclic
from models.plans import Template


@dataclass
class Scores:
    """Per-candidate results. objective, delay_veh_s_h, stops_veh_h, max_dos: float64 (K,); mov_cost: float64 (K, M)
    (cost of each movement, or None when per-movement output was not asked for); mov_dos likewise."""

    objective: np.ndarray
    delay_veh_s_h: np.ndarray
    stops_veh_h: np.ndarray
    max_dos: np.ndarray
    mov_cost: np.ndarray | None
    mov_dos: np.ndarray | None


def outside_departures_veh_h(ctx) -> np.ndarray:
    """Mean departure rate of every movement under the network's current programs (cyclic model), veh/h."""
    from models.evaluate import evaluate_cyclic

    ev = evaluate_cyclic(ctx.net, ctx.demand, None, ctx.params)
    return np.minimum(ev.mov_flow_veh_h, ev.mov_capacity_veh_h)


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
        self.net = cyclic.CyclicNet(
            np.asarray(cn.sat_veh_s, np.float64)[movs], entry, np.array(in_ptr, np.int64), np.array(src, np.int64),
            np.array(share, np.float64), np.array(shift, np.int64), np.array(keep, np.float64), order)
        self.template = _sub_template(template if template is not None else ctx.template(),
                                      [s.index for s in self.signals], local, movs.size)
        self.phase_ptr = self.template.phase_ptr
        # movement -> signal (position in the group), and each signal's neighbourhood: own + fed movements
        self.mov_sig = np.repeat(np.arange(len(self.signals)), [s.movements.size for s in self.signals])
        self.flow_veh_h = entry * 3600.0  # entries only; arrival flows come from the model

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

    def score(self, durations: np.ndarray, offsets: np.ndarray, per_movement: bool = False) -> Scores:
        plans = self.plans(durations, offsets)
        tot, mov = cyclic.evaluate_batch(self.net, plans, self.ctx.cyclic_opts, per_movement=per_movement)
        obj = tot.delay_veh_s_h + self.stop_cost_s * tot.stops_veh_h
        mov_cost = mov_dos = None
        if per_movement:
            mov_cost = mov.flow_veh_h * (mov.uniform_delay_s + mov.overflow_delay_s
                                         + self.stop_cost_s * mov.stops_per_veh)
            mov_dos = mov.dos
        return Scores(obj, tot.delay_veh_s_h, tot.stops_veh_h, tot.max_dos, mov_cost, mov_dos)

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
