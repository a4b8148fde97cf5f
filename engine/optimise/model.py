"""CP-SAT models of one coordination group, in integer seconds (Instance / Model / Solution, ../shared/STYLE.md).

:class:`SplitModel` chooses every member's phase durations at a given common cycle C:

    d_p fixed (transitions, pins) or lo_p <= d_p <= hi_p, sum_p d_p = C                (each signal, C fixed)
    lo_k <= sum_{p in S_k} d_p <= hi_k                      (minimum greens, maximum greens, all-red clearances)
    E_m = floor(coef_m . d + const_m)                       (capacity-green of movement m, level-weighted seconds)
    cost_m = table_m[E_m]             (AddElement; closed-form delay + k stops, :func:`tables.split_cost_table`,
                                       times the movement's objective weight w_m: bus weight)
    G_j = sum_{p: link j green} d_p                         (walk green of pedestrian link j, when --ped-weight > 0)
    ped_j = ptable_j[G_j]             (AddElement; W_ped P_j (C - G_j)^2 / (2 C), :func:`tables.ped_cost_table`)
    coef_m . d + const_m >= q_m C / (s_m x_max)     for every movement m with demand (X cap), at every signal where
                                                    :class:`CapOracle` finds the cap attainable at C
    minimise  sum_m cost_m + sum_j ped_j

(the objective of :mod:`engine.optimise.evaluation`, with closed-form movement costs in place of the cyclic model).

The cycle is chosen outside, by scanning candidate cycles (one model each: the joint model with the cycle as a
decision multiplies every table by the number of cycles and CP-SAT's element encoding with it). :class:`OffsetModel`
then fixes cycle and splits and chooses the offsets:

    0 <= o_s < C; e_ij = o_i - o_j + C w_ij in [0, C), w_ij in {0, 1}     (modular offset difference per link)
    cost_ij = table_ij[e_ij]                (AddElement; cyclic-model offset-difference table, tables.offset_tables)
    minimise sum over linked pairs of cost_ij; one reference signal keeps its offset (only differences matter)

Both take hints (warm start: the current plan) and solve deterministically for a seed: ``random_seed``, a fixed
worker count with ``interleave_search`` and a deterministic-time budget; the wall-clock limit is only a cap.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from engine.optimise.tables import BIG_COST, ped_cost_table, split_cost_table

SCALE = 100  # capacity-green coefficients in hundredths of a second


@dataclass(frozen=True)
class SolveParams:
    time_limit_s: float  # deterministic-time budget (about seconds of work on an unloaded core)
    workers: int = 2
    seed: int = 1
    log: bool = False
    wall_cap_s: float | None = None  # wall-clock cap (default 3 x the budget); hitting it breaks determinism


def make_solver(p: SolveParams) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    prm = solver.parameters
    prm.num_workers = max(1, int(p.workers))
    prm.random_seed = int(p.seed)
    prm.max_time_in_seconds = max(0.05, float(p.wall_cap_s if p.wall_cap_s is not None else 3 * p.time_limit_s))
    # deterministic: stop on deterministic time (about seconds of work), interleave the workers' searches
    prm.max_deterministic_time = max(0.05, float(p.time_limit_s))
    if prm.num_workers > 1:
        prm.interleave_search = True
    prm.log_search_progress = bool(p.log)
    return solver


def _solve(model: cp_model.CpModel, params: SolveParams, on_solution=None):
    """(solver, status name, wall s, a solution was found) of one solve with the project's solver settings."""
    solver = make_solver(params)
    t0 = time.perf_counter()
    status = solver.Solve(model, _Progress(on_solution))
    return solver, solver.StatusName(status), time.perf_counter() - t0, status in (cp_model.OPTIMAL, cp_model.FEASIBLE)


@dataclass
class SplitSolution:
    cycle_s: int
    durations: list[np.ndarray]  # per member signal, int64 (n_phases,)
    objective: float
    bound: float
    status: str
    wall_s: float


class _Progress(cp_model.CpSolverSolutionCallback):
    def __init__(self, on_solution):
        super().__init__()
        self.on_solution = on_solution

    def on_solution_callback(self) -> None:
        if self.on_solution is not None:
            self.on_solution(self.ObjectiveValue(), self.BestObjectiveBound())


def _expr_int(coef: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(coef) * SCALE).astype(np.int64)


class SplitModel:
    """Splits of one group at a fixed cycle (see module docstring). ``signals``: SignalInstance list; ``caps``: per
    signal, the X cap to enforce (None: not attainable there, not enforced)."""

    def __init__(self, signals, cycle_s: int, *, period_h: float, stop_cost_s: float, caps: list[float | None],
                 hint: list[np.ndarray] | None = None):
        self.signals = list(signals)
        self.cycle_s = c = int(cycle_s)
        m = self.model = cp_model.CpModel()
        self.d: list[list] = []
        self.terms: list[list] = []  # per signal: (movement, int coefs, const, e_var, e_lo, cost_var, table)
        costs = []
        self.ped_terms: list = []  # (signal position, walk phases, G var, G lo, cost var, table)
        self.n_tables = 0
        self.table_entries = 0
        for sig_k, (sig, cap) in enumerate(zip(self.signals, caps, strict=True)):
            d = []
            for p in range(sig.n_phases):
                lo, hi = int(sig.lo_s[p]), int(min(sig.hi_s[p], c))
                d.append(m.NewIntVar(lo, max(lo, hi), f"{sig.signal_id}_d{p}") if lo != hi else lo)
            self.d.append(d)
            terms: list = []
            self.terms.append(terms)
            _add_cycle_and_safety(m, sig, d, c)
            lo_v = np.array([int(sig.lo_s[p]) for p in range(sig.n_phases)])
            hi_v = np.array([int(min(sig.hi_s[p], c)) for p in range(sig.n_phases)])
            w = getattr(sig, "weights", None)
            mov_w = w.mov_weight if w is not None else np.ones(sig.movements.size)
            for i in range(sig.movements.size):
                q = float(sig.mov_flow_veh_h[i])
                coef = sig.mov_coef[i]
                if q <= 0 or not coef.any():
                    continue
                ci = _expr_int(coef)
                const = int(round(float(sig.mov_const[i]) * SCALE))
                cap_expr = sum(int(ci[p]) * d[p] for p in range(sig.n_phases) if ci[p]) + const
                if cap is not None:
                    m.Add(cap_expr >= int(math.ceil(SCALE * q * c / (sig.mov_sat_veh_h[i] * cap))))
                e_lo = max(0, int(math.floor((ci @ lo_v + const) / SCALE)))
                e_hi = max(e_lo, int(math.floor((ci @ hi_v + const) / SCALE)))
                e_var = m.NewIntVar(e_lo, e_hi, f"{sig.signal_id}_E{i}")
                m.Add(SCALE * e_var <= cap_expr)
                m.Add(cap_expr <= SCALE * e_var + SCALE - 1)
                grid = np.arange(e_lo, e_hi + 1, dtype=np.float64)
                table = split_cost_table(q, float(sig.mov_sat_veh_h[i]), c, grid, period_h, stop_cost_s)
                if mov_w[i] != 1.0:
                    table = np.minimum(table * mov_w[i], BIG_COST)
                table = np.rint(table).astype(np.int64)
                cost = m.NewIntVar(int(table.min()), int(table.max()), f"{sig.signal_id}_cost{i}")
                m.AddElement(e_var - e_lo, table.tolist(), cost)
                costs.append(cost)
                terms.append((ci, const, e_var, e_lo, cost, table))
                self.n_tables += 1
                self.table_entries += table.size
            if w is not None and w.ped_on:
                for j in range(w.ped_flow_h.size):
                    walk = [p for p in range(sig.n_phases) if w.ped_green[j, p]]
                    if w.ped_flow_h[j] <= 0 or not walk or all(isinstance(d[p], int) for p in walk):
                        continue  # no flow, never green, or fixed walk green: a constant
                    g_lo, g_hi = int(lo_v[walk].sum()), int(min(c, hi_v[walk].sum()))
                    g_var = m.NewIntVar(g_lo, max(g_lo, g_hi), f"{sig.signal_id}_G{j}")
                    m.Add(g_var == sum(d[p] for p in walk))
                    table = ped_cost_table(float(w.ped_flow_h[j]), w.ped_weight, c,
                                           np.arange(g_lo, max(g_lo, g_hi) + 1))
                    table = np.rint(table).astype(np.int64)
                    cost = m.NewIntVar(int(table.min()), int(table.max()), f"{sig.signal_id}_ped{j}")
                    m.AddElement(g_var - g_lo, table.tolist(), cost)
                    costs.append(cost)
                    self.ped_terms.append((sig_k, walk, g_var, g_lo, cost, table))
                    self.n_tables += 1
                    self.table_entries += table.size
        m.Minimize(sum(costs) if costs else 0)
        if hint is not None:
            self._hint(hint)

    def _hint(self, hint: list[np.ndarray]) -> None:
        """A complete hint: durations and every derived variable (capacity-green index and cost), so that a
        feasible start is taken as CP-SAT's first solution at once."""
        for d, h, terms in zip(self.d, hint, self.terms, strict=True):
            for var, v in zip(d, h, strict=True):
                if not isinstance(var, int):
                    self.model.AddHint(var, int(v))
            h = np.asarray(h, np.int64)
            for ci, const, e_var, e_lo, cost, table in terms:
                e = int((int(ci @ h) + const) // SCALE)
                k = min(max(e - e_lo, 0), table.size - 1)
                self.model.AddHint(e_var, e_lo + k)
                self.model.AddHint(cost, int(table[k]))
        for sig_k, walk, g_var, g_lo, cost, table in self.ped_terms:
            g = int(np.asarray(hint[sig_k], np.int64)[walk].sum())
            k = min(max(g - g_lo, 0), table.size - 1)
            self.model.AddHint(g_var, g_lo + k)
            self.model.AddHint(cost, int(table[k]))

    def fix(self, durations: list[np.ndarray]) -> None:
        """Constrain the model to the given durations (used to test that the current plan is feasible)."""
        for d, h in zip(self.d, durations, strict=True):
            for var, v in zip(d, h, strict=True):
                if not isinstance(var, int):
                    self.model.Add(var == int(v))
                elif var != int(v):
                    self.model.AddBoolOr([])  # a fixed phase differs: infeasible

    def solve(self, params: SolveParams, on_solution=None) -> SplitSolution:
        solver, name, wall, found = _solve(self.model, params, on_solution)
        if not found:
            return SplitSolution(self.cycle_s, [], math.inf, math.inf, name, wall)
        durs = [np.array([v if isinstance(v, int) else solver.Value(v) for v in d], np.int64) for d in self.d]
        return SplitSolution(self.cycle_s, durs, solver.ObjectiveValue(), solver.BestObjectiveBound(), name, wall)


def solve_splits(signals, cycle_s: int, *, period_h: float, stop_cost_s: float, caps: list[float | None],
                 hint: list[np.ndarray] | None, params: SolveParams, block_limit: int = 100) -> SplitSolution:
    """Solve the group's :class:`SplitModel` at a fixed cycle. At a fixed cycle the signals do not interact, so
    groups of up to ``block_limit`` signals are solved one signal at a time (one small model each, one worker,
    the budget shared equally: tiny models prove optimality far sooner than one big block-diagonal model);
    larger groups as one model with every worker."""
    n = len(signals)
    if n <= block_limit and n > 1:
        t0 = time.perf_counter()
        per = SolveParams(max(0.2, params.time_limit_s / n), 1, params.seed,
                          wall_cap_s=max(0.3, (params.wall_cap_s or 3 * params.time_limit_s) / n))
        durs, obj, bound, statuses = [], 0.0, 0.0, set()
        for i, sig in enumerate(signals):
            m = SplitModel([sig], cycle_s, period_h=period_h, stop_cost_s=stop_cost_s, caps=[caps[i]],
                           hint=None if hint is None else [hint[i]])
            r = m.solve(per)
            if not r.durations:  # out of time: the start, when it is feasible, is this signal's answer
                if hint is None or sig.violations(hint[i], caps[i]):
                    return SplitSolution(cycle_s, [], math.inf, math.inf, r.status, time.perf_counter() - t0)
                durs.append(np.asarray(hint[i], np.int64).copy())
                statuses.add("FEASIBLE")
                obj, bound = math.nan, math.nan
                continue
            statuses.add(r.status)
            durs.append(r.durations[0])
            obj += r.objective
            bound += r.bound
        status = "OPTIMAL" if statuses == {"OPTIMAL"} else "FEASIBLE"
        return SplitSolution(int(cycle_s), durs, obj, bound, status, time.perf_counter() - t0)
    model = SplitModel(signals, cycle_s, period_h=period_h, stop_cost_s=stop_cost_s, caps=caps, hint=hint)
    return model.solve(params)


class CapOracle:
    """Whether the X cap is attainable at a signal for a cycle: some timing meets every hard constraint and
    X <= max_dos on every movement with demand (capacity-green >= q C / (s max_dos)). Cached per (signal, cycle).

    A quick sufficient test first (the current splits stretched to the cycle), then a one-signal CP-SAT model.
    """

    def __init__(self, signals, max_dos: float):
        self.signals = list(signals)
        self.max_dos = float(max_dos)
        self._cache: dict[tuple[int, int], bool] = {}
        self.solves = 0

    def attainable(self, s: int, cycle_s: int) -> bool:
        key = (s, int(cycle_s))
        if key not in self._cache:
            self._cache[key] = self._check(self.signals[s], int(cycle_s))
        return self._cache[key]

    def cap(self, s: int, cycle_s: int) -> float | None:
        return self.max_dos if self.attainable(s, cycle_s) else None

    def _check(self, sig, c: int) -> bool:
        from engine.optimise.search import stretch

        if not sig.cycle_lo_s <= c <= sig.cycle_hi_s:
            return False
        d = stretch(sig, sig.base_s.copy(), c, None)
        if d is not None and sig.feasible(d[None], self.max_dos)[0]:
            return True
        self.solves += 1
        m = cp_model.CpModel()
        d = [m.NewIntVar(int(sig.lo_s[p]), int(max(sig.lo_s[p], min(sig.hi_s[p], c))), f"d{p}")
             for p in range(sig.n_phases)]
        _add_cycle_and_safety(m, sig, d, c)
        _add_dos_cap(m, sig, d, c, self.max_dos)
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        solver.parameters.max_time_in_seconds = 5.0
        return solver.Solve(m) in (cp_model.OPTIMAL, cp_model.FEASIBLE)


def _add_cycle_and_safety(m, sig, d: list, c: int) -> None:
    """Durations ``d`` add up to the cycle ``c`` and meet the signal's safety sums (min/max greens, clearances)."""
    m.Add(sum(d) == c)
    for cons in sig.sums:
        e = sum(d[p] for p in cons.phases)
        if cons.lo:
            m.Add(e >= cons.lo)
        if cons.hi:
            m.Add(e <= cons.hi)


def _add_dos_cap(m, sig, d: list, c: int, cap: float) -> None:
    """Every movement with demand gets the capacity-green that keeps its degree of saturation at most ``cap``."""
    for i in range(sig.movements.size):
        q = float(sig.mov_flow_veh_h[i])
        ci = _expr_int(sig.mov_coef[i])
        if q <= 0 or not ci.any():
            continue
        const = int(round(float(sig.mov_const[i]) * SCALE))
        m.Add(sum(int(ci[p]) * d[p] for p in range(sig.n_phases) if ci[p]) + const
              >= int(math.ceil(SCALE * q * c / (sig.mov_sat_veh_h[i] * cap))))


def repair(sig, d0: np.ndarray, cycle_s: int, cap: float | None, time_limit_s: float = 5.0) -> np.ndarray | None:
    """The durations closest to ``d0`` (least sum of absolute changes) that meet every hard constraint of ``sig``
    at ``cycle_s`` (and the X cap ``cap`` unless None); None when there are none. Used to bring the current plan
    into the feasible set with as small a change as possible (an engineer's minimal re-timing)."""
    m = cp_model.CpModel()
    c = int(cycle_s)
    d = [m.NewIntVar(int(sig.lo_s[p]), int(max(sig.lo_s[p], min(sig.hi_s[p], c))), f"d{p}")
         for p in range(sig.n_phases)]
    _add_cycle_and_safety(m, sig, d, c)
    if cap is not None:
        _add_dos_cap(m, sig, d, c, cap)
    dev = []
    for p in range(sig.n_phases):
        a = m.NewIntVar(0, c, f"a{p}")
        m.AddAbsEquality(a, d[p] - int(d0[p]))
        dev.append(a)
    m.Minimize(sum(dev))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = time_limit_s
    if solver.Solve(m) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return np.array([solver.Value(v) for v in d], np.int64)


@dataclass
class OffsetSolution:
    offsets: np.ndarray  # int64 (n_signals,)
    objective: float
    bound: float
    status: str
    wall_s: float


class OffsetModel:
    """Offsets of one group at a fixed cycle and fixed splits (see module docstring).

    ``pairs``: list of (i, j, table) with table float (C,) the cost as a function of (o_i - o_j) mod C.
    ``hint``: int offsets (n_signals,); ``ref``: the signal whose offset stays at its hint.
    """

    def __init__(self, n_signals: int, cycle_s: int, pairs, hint: np.ndarray, ref: int = 0):
        m = self.model = cp_model.CpModel()
        c = int(cycle_s)
        self.cycle_s = c
        self.o = [m.NewIntVar(0, c - 1, f"o{s}") for s in range(n_signals)]
        hint = np.mod(np.asarray(hint, np.int64), c)
        m.Add(self.o[ref] == int(hint[ref]))
        costs = []
        for i, j, table in pairs:
            t = np.rint(np.asarray(table, np.float64) - np.min(table)).astype(np.int64)
            if t.max() <= 0:
                continue
            e = m.NewIntVar(0, c - 1, f"e{i}_{j}")
            w = m.NewBoolVar(f"w{i}_{j}")
            m.Add(e == self.o[i] - self.o[j] + c * w)
            cost = m.NewIntVar(0, int(t.max()), f"cost{i}_{j}")
            m.AddElement(e, t.tolist(), cost)
            costs.append(cost)
        self.n_pairs = len(costs)
        m.Minimize(sum(costs) if costs else 0)
        for s, var in enumerate(self.o):
            m.AddHint(var, int(hint[s]))

    def solve(self, params: SolveParams, on_solution=None) -> OffsetSolution:
        solver, name, wall, found = _solve(self.model, params, on_solution)
        if not found:
            return OffsetSolution(np.zeros(len(self.o), np.int64), math.inf, math.inf, name, wall)
        return OffsetSolution(np.array([solver.Value(v) for v in self.o], np.int64), solver.ObjectiveValue(),
                              solver.BestObjectiveBound(), name, wall)
