"""Time-of-day plans: one optimised plan per demand period, joined by safe transition cycles.

``gronvag optimise SCENARIO --periods N`` (N equal periods of the window) or ``--periods 7:00-8:30,8:30-10:00``
(boundaries as H:MM or seconds, contiguous) optimises each period on its own demand (the window cut to the period)
with the same phase structure, then joins the plans of each signal in time:

* the old plan runs until it next reaches the start of its cycle at or after the period boundary (time ``t1``);
* a *transition cycle* of length ``L`` then runs once: the new plan's phases, its greens stretched or squeezed in
  proportion (never below a minimum green or above a maximum), with ``L`` the shortest length at or above the
  structure's minimum cycle that makes the new plan reach the start of its cycle exactly at ``t2 = t1 + L``
  (offset seeking, as field controllers do when they change plans);
* the new plan runs from ``t2``.

Every switch therefore happens where both programs begin their phase 0 after the same clearance: no green is cut,
no clearance shortened, and the new plan keeps its offsets (coordination holds across the switch). Each plan's
``valid_from_s``/``valid_to_s`` say when it runs; ``sim.planio.planset_to_additional`` turns them into one WAUT per
signal whose switch times are those instants (SUMO's default switching procedure keeps the program's offset, so a
switch at both programs' cycle start is seamless; tested in tests/test_optimise_periods.py against SUMO's signal
states second by second).
"""

from __future__ import annotations

import math

import numpy as np

from engine.errors import GronvagError
from engine.plan import Phase, SignalPlan, make_plan


def _clock(text: str) -> float:
    text = text.strip()
    if ":" in text:
        h, m = text.split(":", 1)
        return int(h) * 3600 + int(m) * 60
    return float(text)


def parse_periods(text: str, begin_s: float, end_s: float) -> list[tuple[float, float]]:
    """Periods from ``--periods``: an integer N (N equal periods of [begin, end], whole seconds) or comma-separated
    ``FROM-TO`` ranges (H:MM or seconds) that tile [begin, end] in order."""
    text = (text or "").strip()
    try:
        if text.isdigit():
            n = int(text)
            if n < 1:
                raise ValueError("at least one period")
            edges = [round(begin_s + (end_s - begin_s) * k / n) for k in range(n + 1)]
            out = [(float(a), float(b)) for a, b in zip(edges, edges[1:], strict=False)]
        else:
            out = []
            for part in text.split(","):
                a, b = part.split("-", 1)
                out.append((_clock(a), _clock(b)))
    except ValueError as exc:
        raise GronvagError(f"--periods: cannot read {text!r} ({exc}); give N or FROM-TO,FROM-TO,...") from None
    if not out:
        raise GronvagError("--periods: no period given")
    for (a, b), nxt in zip(out, [*out[1:], None], strict=True):
        if b - a < 300:
            raise GronvagError(f"--periods: period {a:g}-{b:g} s is shorter than 5 minutes")
        if nxt is not None and nxt[0] != b:
            raise GronvagError(f"--periods: period {a:g}-{b:g} s is not followed directly by {nxt[0]:g}-{nxt[1]:g} s")
    if out[0][0] < begin_s or out[-1][1] > end_s:
        raise GronvagError(f"--periods: {out[0][0]:g}-{out[-1][1]:g} s reaches outside the scenario's window "
                           f"{begin_s:g}-{end_s:g} s")
    return out


def _adjustable(ph: Phase) -> bool:
    return ph.kind == "green" and (ph.min_s > 0 or ph.max_s > 0)


def stretch(phases: tuple[Phase, ...], length_s: int) -> tuple[Phase, ...] | None:
    """The phases with their adjustable greens changed in proportion so that they add up to ``length_s``, within
    each phase's [min_s, max_s]; None when no such durations exist."""
    d = np.array([p.duration_s for p in phases], np.int64)
    adj = np.array([_adjustable(p) for p in phases])
    lo = np.array([max(p.min_s, 1) if a else p.duration_s for p, a in zip(phases, adj, strict=True)], np.int64)
    hi = np.array([(p.max_s or 10 ** 6) if a else p.duration_s for p, a in zip(phases, adj, strict=True)], np.int64)
    if not lo.sum() <= length_s <= hi.sum():
        return None
    delta = int(length_s - d.sum())
    while delta:
        room = (hi - d) if delta > 0 else (d - lo)
        room = np.where(adj, room, 0)
        if room.sum() <= 0:
            return None
        share = room / room.sum() * abs(delta)
        step = np.minimum(np.floor(share).astype(np.int64), room)
        if step.sum() == 0:  # hand out single seconds, largest share first
            step = np.zeros_like(d)
            for i in np.argsort(-share)[:abs(delta)]:
                if room[i] > 0:
                    step[i] = 1
        d += step if delta > 0 else -step
        delta = int(length_s - d.sum())
    return tuple(Phase(p.state, int(v), p.min_s, p.max_s, p.kind) for p, v in zip(phases, d, strict=True))


def transition(old: SignalPlan, new: SignalPlan, boundary_s: float, spec) -> tuple[float, SignalPlan, float]:
    """(t1, transition plan, t2) from ``old`` to ``new`` at the first cycle start of ``old`` at or after
    ``boundary_s`` (see the module docstring). Raises GronvagError when the two plans differ in structure or no
    legal transition cycle exists."""
    from engine.safety import check_plan

    if [p.state for p in old.phases] != [p.state for p in new.phases]:
        raise GronvagError(f"{new.signal_id}: time-of-day plans with different phase sequences cannot be joined")
    t1 = float(boundary_s + ((old.offset_s - boundary_s) % old.cycle_s))
    target = int(round((new.offset_s - t1) % new.cycle_s))
    lo = sum(max(p.min_s, 1) if _adjustable(p) else p.duration_s for p in new.phases)
    length = target + new.cycle_s * max(0, math.ceil((lo - target) / new.cycle_s))
    for _ in range(4):
        phases = stretch(new.phases, length)
        if phases is not None:
            plan = make_plan(new.signal_id, phases, int(t1) % length, program_id=f"{new.program_id}-transition",
                             valid_from_s=t1, valid_to_s=t1 + length)
            errs = check_plan(plan, spec)
            if errs:
                raise GronvagError(f"{new.signal_id}: transition cycle breaks a safety rule: {errs[0]}")
            return t1, plan, t1 + length
        length += new.cycle_s
    raise GronvagError(f"{new.signal_id}: no transition cycle between its plans fits the phases' minimum and "
                       "maximum greens")


def join(period_plans: list[list[SignalPlan]], periods: list[tuple[float, float]], net) -> tuple[list, list]:
    """All plans of every signal in time order (period plans and transition cycles, validity periods set) and a
    record of each transition. ``period_plans[k]``: the plans of period k (same signals in every period)."""
    import msgspec

    out, records = [], []
    for j, first in enumerate(period_plans[0]):
        sid = first.signal_id
        spec = net.signal_spec(net.signal_index[sid])
        chain = [msgspec.structs.replace(first, valid_from_s=float(periods[0][0]))]
        for k in range(1, len(periods)):
            new = period_plans[k][j]
            if new.signal_id != sid:
                raise GronvagError("time-of-day plans do not list the same signals in every period")
            # a period shorter than the last transition starts switching when that transition is done
            t1, trans, t2 = transition(chain[-1], new, max(periods[k][0], chain[-1].valid_from_s), spec)
            chain[-1] = msgspec.structs.replace(chain[-1], valid_to_s=t1)
            chain += [trans, msgspec.structs.replace(new, valid_from_s=t2)]
            records.append({"signal_id": sid, "period": k, "boundary_s": periods[k][0], "old_end_s": t1,
                            "transition_cycle_s": trans.cycle_s, "new_start_s": t2})
        chain[-1] = msgspec.structs.replace(chain[-1], valid_to_s=float(periods[-1][1]))
        out += chain
    return out, records
