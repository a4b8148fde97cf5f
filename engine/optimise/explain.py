"""Feasibility of each signal's constraints, and an explanation naming the clashing ones when there is none.

Every constraint family of a signal (cycle bounds, fixed transition durations, phase minimum/maximum, pins, minimum
greens and clearances of the signal groups) is added to a small CP-SAT model behind its own enforcement literal,
and all literals are passed as assumptions. When the model is infeasible, CP-SAT returns a subset of assumptions that
is infeasible on its own (``SufficientAssumptionsForInfeasibility``); it is shrunk by deletion to a minimal clashing
set, which becomes the one-line error. Feasible signals get their feasible cycle range (min and max of the sum of
durations). Signals with identical structure and bounds (a grid) are solved once.
"""

from __future__ import annotations

from ortools.sat.python import cp_model

from engine.errors import GronvagError


def _model(sig, opts, use_cycle_bounds: bool = True):
    m = cp_model.CpModel()
    top = max(opts.cycle_max_s, int(sig.base_s.sum()), *[int(v) for v in sig.hi_s]) + 1
    d = [m.NewIntVar(1, top, f"d{p}") for p in range(sig.n_phases)]
    named: list[tuple[object, str]] = []

    def guard(ct, why: str) -> None:
        lit = m.NewBoolVar(why)
        ct.OnlyEnforceIf(lit)
        named.append((lit, why))

    for p in range(sig.n_phases):
        if not sig.adjustable[p]:
            what = "a transition phase" if sig.kinds[p] != "green" else "fixed by the program (minDur = maxDur)"
            guard(m.Add(d[p] == int(sig.base_s[p])), f"phase {p} is {what}: {int(sig.base_s[p])} s")
        else:
            if sig.lo_s[p] > 1:
                guard(m.Add(d[p] >= int(sig.lo_s[p])), f"phase {p} minimum {int(sig.lo_s[p])} s")
            guard(m.Add(d[p] <= int(sig.hi_s[p])), f"phase {p} maximum {int(sig.hi_s[p])} s")
    for p, v in sorted(sig.pinned.items()):
        guard(m.Add(d[p] == int(v)), f"pin {sig.signal_id}:{p}={v} s")
    for c in sig.sums:
        expr = sum(d[p] for p in c.phases)
        if c.lo:
            guard(m.Add(expr >= c.lo), c.why)
        if c.hi:
            guard(m.Add(expr <= c.hi), c.why)
    total = sum(d)
    if use_cycle_bounds:
        guard(m.Add(total >= opts.cycle_min_s), f"cycle at least {opts.cycle_min_s} s (--cycle-min)")
        guard(m.Add(total <= opts.cycle_max_s), f"cycle at most {opts.cycle_max_s} s (--cycle-max)")
    return m, d, total, named


def _solve(m, assumptions) -> tuple[cp_model.CpSolver, int]:
    m.ClearAssumptions()
    m.AddAssumptions(assumptions)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = 10.0
    return solver, solver.Solve(m)


def clashing_constraints(sig, opts) -> list[str]:
    """A minimal set of this signal's constraints that cannot hold together (empty: they can)."""
    m, _, _, named = _model(sig, opts)
    lits = [lit for lit, _ in named]
    solver, status = _solve(m, lits)
    if status != cp_model.INFEASIBLE:
        return []
    core_idx = set(solver.SufficientAssumptionsForInfeasibility())
    core = [lit for lit in lits if lit.Index() in core_idx] or lits
    k = 0
    while k < len(core):  # deletion filter: drop every literal the infeasibility does not need
        trial = core[:k] + core[k + 1:]
        _, st = _solve(m, trial)
        if st == cp_model.INFEASIBLE:
            core = trial
        else:
            k += 1
    names = {lit.Index(): why for lit, why in named}
    return [names[lit.Index()] for lit in core]


def _signature(sig) -> tuple:
    return (sig.states, tuple(sig.base_s.tolist()), tuple(sig.lo_s.tolist()), tuple(sig.hi_s.tolist()),
            tuple(sig.adjustable.tolist()), tuple(sorted(sig.pinned.items())),
            tuple((c.phases, c.lo, c.hi) for c in sig.sums))


def signal_cycle_range(signals, opts) -> list[tuple[int, int]]:
    """Feasible cycle range of every signal on its own; raises GronvagError naming the clash of the first that has
    none."""
    cache: dict[tuple, tuple[int, int] | None] = {}
    out = []
    for sig in signals:
        key = _signature(sig)
        if key not in cache:
            m, _, total, named = _model(sig, opts)
            lits = [lit for lit, _ in named]
            m.Minimize(total)
            solver, status = _solve(m, lits)
            if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                cache[key] = None
            else:
                lo = int(solver.ObjectiveValue())
                m.Maximize(total)
                solver, status = _solve(m, lits)
                cache[key] = (lo, int(solver.ObjectiveValue()))
        if cache[key] is None:
            clash = clashing_constraints(sig, opts)
            raise GronvagError(f"signal {sig.signal_id}: no safe timing exists: "
                               + "; ".join(clash or ["its constraints"]) + " cannot all hold")
        out.append(cache[key])
    return out


def group_cycle_range(members, opts) -> tuple[int, int]:
    """The cycles every member of a coordination group can run; raises GronvagError when there is none."""
    lo = max(s.cycle_lo_s for s in members)
    hi = min(s.cycle_hi_s for s in members)
    if lo > hi:
        a = max(members, key=lambda s: s.cycle_lo_s)
        b = min(members, key=lambda s: s.cycle_hi_s)
        raise GronvagError(
            f"signals {a.signal_id} and {b.signal_id} are coordinated but cannot share a cycle: {a.signal_id} needs "
            f"at least {a.cycle_lo_s} s (minimum greens, transitions and pins), {b.signal_id} allows at most "
            f"{b.cycle_hi_s} s (maximum greens, pins and --cycle-max {opts.cycle_max_s} s)")
    return lo, hi
