"""The optimiser's pipeline, group by group (coordination groups are independent at this stage):

1. **Cycle scan with CP-SAT splits.** For a few candidate cycles of the group's feasible range (always including
   the current cycle), :class:`model.SplitModel` finds the delay-and-stop-optimal splits under every hard
   constraint (closed-form cost tables, X cap where it can hold). Each result is scored on the group's cyclic model
   with the current offsets scaled to the cycle (one batch call).
2. **Offsets with CP-SAT.** For the best cycles, offset-difference tables are computed from the cyclic model's
   steady-state profiles (:func:`tables.offset_tables`) and :class:`model.OffsetModel` chooses the offsets.
3. **Local search** (:mod:`search`) from the best of these plans and the current plan (when it is feasible),
   polishing cycle, splits and offsets jointly on the full cyclic model; only improvements are accepted.

The wall-clock budget (``time_limit_s``) is shared between groups by size; within a group 40 % goes to step 1,
15 % to step 2 and the rest to step 3. The result is validated (:func:`solution.validate`) and scored on the whole
network (``models.evaluate.evaluate_cyclic``) next to the current programs.

Variants: ``cycle_s`` optimises at one given cycle, ``from_current`` runs only the local search from the current
plan (both used by :mod:`engine.optimise.simcheck`); a phase-skipping instance (``build_instance(phase_skip=True)``)
optimises reduced phase structures the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from engine.errors import GronvagError
from engine.optimise.evaluation import GroupEvaluator, outside_departures_veh_h
from engine.optimise.model import CapOracle, OffsetModel, SolveParams, repair, solve_splits
from engine.optimise.search import LocalSearch, SearchState, stretch
from engine.optimise.solution import SignalTiming, Solution, current_solution, to_planset, validate

SPLIT_SHARE, OFFSET_SHARE = 0.40, 0.15


class Reporter:
    """Progress sink: the CLI shows it with rich; the default does nothing."""

    def stage(self, text: str) -> None:
        pass

    def objective(self, value: float) -> None:
        pass


@dataclass
class GroupOutcome:
    members: tuple[int, ...]
    cycle_s: int
    durations: list[np.ndarray]
    offsets: np.ndarray
    cap_enforced: list[bool]
    objective: float
    base_objective: float
    evaluator: GroupEvaluator
    log: dict = field(default_factory=dict)


def candidate_cycles(lo: int, hi: int, base: int | None, n: int) -> list[int]:
    """n cycles spread evenly over [lo, hi] (multiples of 5 s where the range allows), plus the current one."""
    if hi - lo <= 5 * (n - 1):
        cycles = set(np.linspace(lo, hi, min(n, hi - lo + 1)).round().astype(int).tolist())
    else:
        grid = np.linspace(lo, hi, n)
        cycles = {int(min(hi, max(lo, 5 * round(c / 5)))) for c in grid}
    if base is not None and lo <= base <= hi:
        cycles.add(int(base))
    return sorted(cycles)


def _scaled_offsets(sigs, cycle: int) -> np.ndarray:
    return np.array([int(round(s.base_offset_s * cycle / max(s.base_cycle_s, 1))) % cycle for s in sigs], np.int64)


def _hint_for(sigs, cycle: int, oracle, repair_limit: int = 200) -> tuple[list[np.ndarray] | None, bool]:
    """A start for the split model at ``cycle``: the current splits stretched to it, minimally re-timed
    (:func:`model.repair`) where that breaks a hard constraint (for groups of up to ``repair_limit`` signals).
    Returns (durations or None, whether every signal's start is feasible)."""
    out, feasible = [], True
    for i, s in enumerate(sigs):
        cap = oracle.cap(i, cycle)
        d = stretch(s, s.base_s.copy(), cycle, None) if s.base_cycle_s != cycle else s.base_s.copy()
        if d is not None and not s.violations(d, cap):
            out.append(d)
            continue
        if len(sigs) <= repair_limit:
            r = repair(s, d if d is not None else s.base_s, cycle, cap)
            if r is not None:
                out.append(r)
                continue
        feasible = False
        if d is None:
            return None, False
        out.append(d)
    return out, feasible


def current_start(sigs, cycle_s: int, oracle) -> tuple[list[np.ndarray], int] | None:
    """The current splits as a feasible start: unchanged where they meet every hard constraint, else minimally
    re-timed (:func:`model.repair`). Returns (durations, number of signals changed) or None."""
    out, changed = [], 0
    for i, s in enumerate(sigs):
        cap = oracle.cap(i, cycle_s)
        if s.base_cycle_s == cycle_s and not s.violations(s.base_s, cap):
            out.append(s.base_s.copy())
            continue
        d = repair(s, s.base_s, cycle_s, cap)
        if d is None:
            return None
        out.append(d)
        changed += 1
    return out, changed


def optimise_group(inst, gi: int, dep_veh_h: np.ndarray, budget_s: float, deadline: float,
                   reporter: Reporter, cycle_s: int | None = None, from_current: bool = False) -> GroupOutcome:
    """One group. ``budget_s`` sizes the CP-SAT solves (deterministic time, so results do not depend on the machine's
    load); ``deadline`` (perf_counter time) is the wall-clock cap of the whole group. ``cycle_s``: optimise at this
    cycle only (clipped to the group's feasible range). ``from_current``: no CP-SAT; the local search starts from
    the current plan (minimally re-timed where it breaks a hard constraint) at the current cycle."""
    opts = inst.options
    g = inst.groups[gi]
    sigs = [inst.signals[i] for i in g.members]
    k = opts.stop_cost_s
    ge = GroupEvaluator(inst.ctx, sigs, k, dep_veh_h, inst.template)
    period_h = float(inst.ctx.cyclic_opts.period_h)
    t_start = time.perf_counter()
    budget = max(0.5, float(budget_s))
    log: dict = {"signals": len(sigs), "movements": int(ge.movements.size)}

    # the current plan on the group model (only comparable when the members share the cycle)
    base_d = np.concatenate([s.base_s for s in sigs])
    base_o = np.array([s.base_offset_s for s in sigs], np.int64)
    base_obj = float(ge.score(base_d[None], base_o[None]).objective[0]) if g.base_cycle_s else float("nan")
    log["current_objective"] = base_obj

    # 1. cycle scan: CP-SAT splits per candidate cycle (as many cycles as the budget allows: a split model costs
    # about 0.3 s plus 1 s per 12 000 table entries on one core)
    entries_per_cycle = max(1, int(sum(np.count_nonzero(s.mov_flow_veh_h > 0) for s in sigs) * 80))
    est_s = 0.3 + entries_per_cycle / 12_000
    n_cycles = int(np.clip(budget * SPLIT_SHARE / est_s, 1, 9))
    if from_current and g.base_cycle_s is not None and g.cycle_lo_s <= g.base_cycle_s <= g.cycle_hi_s:
        cycle_s = g.base_cycle_s
    if cycle_s is None:
        if n_cycles > 1:
            cycles = candidate_cycles(g.cycle_lo_s, g.cycle_hi_s, g.base_cycle_s, n_cycles)
        elif g.base_cycle_s is not None and g.cycle_lo_s <= g.base_cycle_s <= g.cycle_hi_s:
            cycles = [int(g.base_cycle_s)]
        else:
            cycles = [int((g.cycle_lo_s + g.cycle_hi_s) // 2)]
        c_range = (g.cycle_lo_s, g.cycle_hi_s)
    else:
        c_fixed = int(min(max(cycle_s, g.cycle_lo_s), g.cycle_hi_s))
        cycles, c_range = [c_fixed], (c_fixed, c_fixed)
    per_solve = budget * SPLIT_SHARE / len(cycles)
    oracle = CapOracle(sigs, opts.max_dos)
    scan = []
    for c in ([] if from_current else cycles):
        reporter.stage(f"group {gi + 1}/{len(inst.groups)}: CP-SAT splits at cycle {c} s")
        caps = [oracle.cap(s, c) for s in range(len(sigs))]
        hint, hint_ok = _hint_for(sigs, c, oracle)
        sol = solve_splits(sigs, c, period_h=period_h, stop_cost_s=k, caps=caps, hint=hint,
                           params=SolveParams(per_solve, opts.workers, opts.seed,
                                              wall_cap_s=max(0.1, min(3 * per_solve, deadline - time.perf_counter()))))
        if not sol.durations:
            if not (hint_ok and hint is not None):
                continue
            sol.durations = [d.copy() for d in hint]  # CP-SAT ran out of time: keep the feasible start
            sol.status = "TIME LIMIT (feasible start kept)"
        scan.append((c, sol))
    if not scan and not from_current:
        raise GronvagError(f"CP-SAT found no timing for the group of {sigs[0].signal_id} within the time limit "
                           "(raise --time-limit)")
    D = np.stack([np.concatenate(sol.durations) for _, sol in scan]) if scan else np.zeros((0, base_d.size))
    O = np.stack([_scaled_offsets(sigs, c) for c, _ in scan]) if scan else np.zeros((0, len(sigs)))
    scores = ge.score(D, O).objective if scan else np.zeros(0)
    log["cycle_scan"] = {int(c): {"cpsat": sol.status, "split_cost": sol.objective, "model": float(v),
                                  "x_cap_attainable": sum(oracle.attainable(s, c) for s in range(len(sigs)))}
                         for (c, sol), v in zip(scan, scores, strict=True)}
    order = np.argsort(scores, kind="stable")
    if scan:
        reporter.objective(float(scores[order[0]]))

    # 2. offsets for the two best cycles
    starts = []
    t_off = time.perf_counter()
    off_budget = budget * OFFSET_SHARE
    top = [int(j) for j in order[:2]]
    for j in top:
        c, sol = scan[j]
        reporter.stage(f"group {gi + 1}/{len(inst.groups)}: CP-SAT offsets at cycle {c} s")
        o_hint = O[j]
        pairs = ge.offset_pair_tables(D[j], o_hint, c)
        if pairs:
            om = OffsetModel(len(sigs), c, pairs, o_hint, ref=0)
            t_b = max(0.1, off_budget / len(top))
            osol = om.solve(SolveParams(t_b, opts.workers, opts.seed,
                                        wall_cap_s=max(0.1, min(3 * t_b, deadline - time.perf_counter()))))
            offsets = osol.offsets if osol.status in ("OPTIMAL", "FEASIBLE") else o_hint
            log.setdefault("offsets", {})[int(c)] = {"cpsat": osol.status, "pairs": om.n_pairs,
                                                    "table_cost": osol.objective}
        else:
            offsets = o_hint
        starts.append((f"CP-SAT at cycle {c} s",
                       SearchState(c, [d.copy() for d in sol.durations], offsets.astype(np.int64), np.inf)))
    log["offsets_wall_s"] = time.perf_counter() - t_off
    # the current plan is a start too (minimally re-timed where it breaks a hard constraint, the X cap included)
    cb = g.base_cycle_s
    if cb is not None and c_range[0] <= cb <= c_range[1]:
        cs = current_start(sigs, cb, oracle)
        if cs is not None:
            label = "current plan" if cs[1] == 0 else f"current plan (re-timed at {cs[1]} signals for the X cap)"
            if inst.skipped:
                label = "current durations in the reduced phase structure"
            starts.append((label, SearchState(cb, cs[0], base_o.copy(), np.inf)))
    if not starts:
        raise GronvagError(f"no feasible start for the group of {sigs[0].signal_id} (raise --time-limit)")
    sc = ge.score(np.stack([st.flat() for _, st in starts]), np.stack([st.offsets for _, st in starts])).objective
    best = int(np.argmin(sc))
    label, state = starts[best]
    state.objective = float(sc[best])
    log["starts"] = {lab: float(v) for (lab, _), v in zip(starts, sc, strict=True)}
    log["start"] = label
    log["start_objective"] = state.objective
    reporter.objective(state.objective)

    # 3. local search
    if opts.search:
        reporter.stage(f"group {gi + 1}/{len(inst.groups)}: local search on the cyclic model")
        ls = LocalSearch(ge, oracle.cap, c_range, seed=opts.seed)
        state = ls.run(state, deadline, max_rounds=opts.search_rounds,
                       on_progress=lambda obj, _st: reporter.objective(obj))
        log["search"] = {"rounds": ls.stats.rounds, "evaluations": ls.stats.evaluations,
                         "accepted": ls.stats.accepted, "cycle_moves": ls.stats.cycle_moves,
                         "stopped_by": ls.stats.stopped_by}
    log["objective"] = state.objective
    log["cap_oracle_solves"] = oracle.solves
    log["wall_s"] = time.perf_counter() - t_start
    caps = [oracle.attainable(s, state.cycle_s) for s in range(len(sigs))]
    return GroupOutcome(g.members, state.cycle_s, state.durations, state.offsets, caps, state.objective, base_obj, ge,
                        log)


def network_objective(inst, plans=None, sol=None):
    """(objective, Evaluation) of plans (None: current programs) on the whole network's cyclic model: delay +
    k stops, with the bus and pedestrian weights when they are on (``sol``: the plans' Solution, for the walk
    greens; see engine.optimise.evaluation)."""
    from models.evaluate import evaluate_cyclic

    ev = evaluate_cyclic(inst.net, inst.demand, plans, inst.ctx.params)
    opts = inst.options
    if getattr(opts, "bus_weight", 1.0) != 1.0 or getattr(opts, "ped_weight", 0.0) > 0:
        from engine.optimise.evaluation import network_terms

        return float(network_terms(inst, ev, sol)["objective_weighted"]), ev
    obj = float((ev.mov_flow_veh_h * (ev.mov_delay_s + opts.stop_cost_s * ev.mov_stops_per_veh)).sum())
    return obj, ev


@dataclass
class OptimiseResult:
    solution: Solution
    outcomes: list[GroupOutcome]
    current: tuple  # (objective, models.evaluate.Evaluation) of the current programs, whole network
    optimised: tuple  # the same for the solution


def optimise(inst, reporter: Reporter | None = None, cycle_s: int | None = None,
             time_limit_s: float | None = None, from_current: bool = False) -> OptimiseResult:
    """Optimise every group of the instance; the solution is validated before it is returned.

    ``cycle_s``: every group at this cycle (clipped to its range) instead of choosing; ``time_limit_s``: instead of
    the options' time limit.
    """
    reporter = reporter or Reporter()
    t0 = time.perf_counter()
    limit = float(time_limit_s if time_limit_s is not None else inst.options.time_limit_s)
    deadline = t0 + limit
    dep = outside_departures_veh_h(inst.ctx)
    sizes = np.array([sum(inst.signals[i].movements.size for i in g.members) for g in inst.groups], np.float64)
    outcomes = []
    timings: list[SignalTiming | None] = [None] * len(inst.signals)
    for gi in range(len(inst.groups)):
        now = time.perf_counter()
        g_budget = limit * sizes[gi] / sizes.sum()
        g_deadline = min(deadline, now + max(0.2, (deadline - now) * sizes[gi] / sizes[gi:].sum()))
        out = optimise_group(inst, gi, dep, g_budget, g_deadline, reporter, cycle_s, from_current)
        outcomes.append(out)
        for k, i in enumerate(out.members):
            timings[i] = SignalTiming(inst.signals[i].signal_id, int(out.cycle_s), int(out.offsets[k]),
                                      tuple(int(v) for v in out.durations[k]), bool(out.cap_enforced[k]))
    sol = Solution(tuple(timings))
    errs = validate(inst, sol)
    if errs:  # a bug, never a user error: refuse to hand out an unsafe or infeasible plan
        raise RuntimeError("optimised plan failed validation: " + "; ".join(errs[:5]))
    reporter.stage("scoring the whole network")
    new = network_objective(inst, to_planset(inst, sol), sol)
    cur = network_objective(inst, None)
    stats = {"wall_s": time.perf_counter() - t0, "current_objective": cur[0], "groups": [o.log for o in outcomes]}
    return OptimiseResult(Solution(sol.timings, new[0], stats), outcomes, cur, new)


def result_of(inst, sol: Solution, log: str = "given plan") -> OptimiseResult:
    """An OptimiseResult for a given solution (no search): per-group evaluators and whole-network scores."""
    dep = outside_departures_veh_h(inst.ctx)
    outcomes = []
    for g in inst.groups:
        sigs = [inst.signals[i] for i in g.members]
        ge = GroupEvaluator(inst.ctx, sigs, inst.options.stop_cost_s, dep, inst.template)
        d = [sol.durations(i) for i in g.members]
        o = np.array([sol.timings[i].offset_s for i in g.members], np.int64)
        c = sol.timings[g.members[0]].cycle_s
        obj = float(ge.score(np.concatenate(d)[None], o[None]).objective[0])
        outcomes.append(GroupOutcome(g.members, c, d, o, [sol.timings[i].cap_enforced for i in g.members], obj,
                                     obj, ge, {"start": log, "objective": obj}))
    new = network_objective(inst, to_planset(inst, sol), sol)
    cur = network_objective(inst, None)
    return OptimiseResult(Solution(sol.timings, new[0], {"wall_s": 0.0, "current_objective": cur[0]}), outcomes,
                          cur, new)


__all__ = ["GroupOutcome", "OptimiseResult", "Reporter", "candidate_cycles", "current_solution", "network_objective",
           "optimise", "optimise_group", "result_of"]
