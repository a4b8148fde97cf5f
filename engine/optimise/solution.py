"""The optimiser's solution, its independent validation, and its translation into engine.plan plans.

:func:`validate` re-checks a solution against the instance without any model code: the durations, bounds, pins and
transition durations, the sums of consecutive phases (minimum greens, clearances), common cycles within groups,
cycle bounds, offsets, the X cap where the solution claims it, and engine.safety.check_plan on every signal's plan.
The optimiser calls it before writing anything; tests call it on every result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.plan import Phase, PlanSet, SignalPlan, make_plan, now_iso, phase_kind


@dataclass(frozen=True)
class SignalTiming:
    signal_id: str
    cycle_s: int
    offset_s: int
    durations_s: tuple[int, ...]
    cap_enforced: bool  # the X cap holds here (it could be met at this cycle)


@dataclass(frozen=True)
class Solution:
    """One timing per instance signal (same order) and the objective the cyclic model predicts for it."""

    timings: tuple[SignalTiming, ...]
    objective: float = float("nan")  # delay veh-s/h + k stops/h, whole network, cyclic model
    stats: dict = field(default_factory=dict)

    def durations(self, i: int) -> np.ndarray:
        return np.array(self.timings[i].durations_s, np.int64)


def current_solution(inst) -> Solution:
    """The scenario's current programs as a solution of the instance (the warm start)."""
    return Solution(tuple(
        SignalTiming(s.signal_id, s.base_cycle_s, s.base_offset_s, tuple(int(v) for v in s.base_s), False)
        for s in inst.signals))


def signal_plan(sig, timing: SignalTiming, program_id: str, valid: tuple[float, float]) -> SignalPlan:
    phases = []
    for p, (state, dur) in enumerate(zip(sig.states, timing.durations_s, strict=True)):
        adjustable = bool(sig.adjustable[p])
        phases.append(Phase(state=state, duration_s=int(dur),
                            min_s=int(sig.lo_s[p]) if adjustable else 0,
                            max_s=int(sig.hi_s[p]) if adjustable else 0, kind=phase_kind(state)))
    return make_plan(sig.signal_id, phases, timing.offset_s, program_id=program_id, valid_from_s=valid[0],
                     valid_to_s=valid[1])


def to_planset(inst, sol: Solution) -> PlanSet:
    """The solution as a plan set. One plan per signal runs all day (validity 0-86400 s: a controller keeps it until
    it gets another); time-of-day plans get their periods from engine.optimise.periods."""
    valid = (0.0, 86400.0)
    plans = tuple(signal_plan(sig, t, inst.options.program_id, valid)
                  for sig, t in zip(inst.signals, sol.timings, strict=True))
    return PlanSet(plans=plans, scenario=inst.scenario, created=now_iso())


def validate(inst, sol: Solution) -> list[str]:
    """Every way ``sol`` breaks the instance or the safety rules, as readable messages (empty: valid)."""
    from engine.safety import check_plan

    opts = inst.options
    errs: list[str] = []
    if len(sol.timings) != len(inst.signals):
        return [f"solution has {len(sol.timings)} signal timings, the instance {len(inst.signals)} signals"]
    for sig, t in zip(inst.signals, sol.timings, strict=True):
        sid = sig.signal_id
        if t.signal_id != sid:
            errs.append(f"timing for {t.signal_id} where {sid} was expected")
            continue
        d = np.array(t.durations_s, np.int64)
        if d.shape != (sig.n_phases,):
            errs.append(f"{sid}: {d.size} durations for {sig.n_phases} phases")
            continue
        if int(d.sum()) != t.cycle_s:
            errs.append(f"{sid}: phase durations add up to {int(d.sum())} s, not the cycle {t.cycle_s} s")
        if not opts.cycle_min_s <= t.cycle_s <= opts.cycle_max_s:
            errs.append(f"{sid}: cycle {t.cycle_s} s outside [{opts.cycle_min_s}, {opts.cycle_max_s}] s")
        if not 0 <= t.offset_s < max(t.cycle_s, 1):
            errs.append(f"{sid}: offset {t.offset_s} s outside [0, cycle)")
        for p in range(sig.n_phases):
            if not sig.adjustable[p] and p not in sig.pinned and d[p] != sig.base_s[p]:
                errs.append(f"{sid}: fixed phase {p} changed from {int(sig.base_s[p])} s to {int(d[p])} s")
        errs += sig.violations(d, opts.max_dos if t.cap_enforced else None)
        plan = signal_plan(sig, t, opts.program_id, (float(inst.demand.begin_s), float(inst.demand.end_s)))
        errs += check_plan(plan, inst.net.signal_spec(sig.index))
    for g in inst.groups:
        cycles = {sol.timings[i].cycle_s for i in g.members}
        if len(cycles) > 1:
            ids = ", ".join(inst.signals[i].signal_id for i in g.members[:4])
            errs.append(f"coordination group ({ids}, ...) runs different cycles {sorted(cycles)}")
    return errs
