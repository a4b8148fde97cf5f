"""A controller's signal program, second by second, and the one rule for switching plans safely.

:class:`PlanRunner` runs a cyclic plan (:class:`engine.plan.SignalPlan`) one second at a time and switches to a
requested plan only at a *safe transition point*:

* only at the natural end of a green phase of the running plan (so no phase is ever cut: never a running yellow,
  all-red or red-amber, never a minimum green), and only after the running plan has run one full cycle since it was
  entered (so the history behind the switch is the running plan's own cycle);
* into the start of a phase ``j`` of the new plan such that the sequence "one cycle of the old plan ending with the
  green phase, then one cycle of the new plan starting at ``j``" passes :func:`engine.safety.check_plan` (the one
  place for safety rules) under the intersection's spec. Runs crossing the junction are thus checked against the real
  history on one side and the new plan on the other. Among safe entries the runner prefers one that repeats a
  transition the new plan itself makes, then the one closest to the new plan's offset (coordination).

Time is an integer number of seconds in the plan's time base (day or simulation seconds): the state shown during
``[t, t+1)`` is :attr:`PlanRunner.state`. Program time follows the plan schema: ``(t - offset_s) mod cycle_s`` at a
fresh start; after a switch the new plan runs from the entry phase (offset correction over several cycles is not
modelled). The class is pure: no clocks, no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from engine.plan import Phase, SignalPlan
from engine.safety import (
    JoinEdges,
    PlanBits,
    SignalSpec,
    check_bits,
    check_plan,
    clean_plan_bits,
    edges_safe,
    join_edges,
    sequence_bits,
    switch_safe,
)

ACTIVATIONS = ("asap", "next_cycle", "at")


@dataclass(frozen=True)
class Switch:
    """A plan switch that happened at the boundary ``t_s`` (the new plan's phase ``entry_phase`` shows from t_s)."""

    t_s: int
    from_key: Hashable
    to_key: Hashable
    exit_phase: int
    entry_phase: int


def _starts(plan: SignalPlan) -> list[int]:
    out, t = [], 0
    for ph in plan.phases:
        out.append(t)
        t += ph.duration_s
    return out


def program_state(plan: SignalPlan, t_s: int) -> tuple[int, int, str]:
    """(phase index, program time s, state) of ``plan`` running undisturbed at time ``t_s``: program time is
    ``(t_s - offset_s) mod cycle_s`` (the plan schema's and SUMO's offset semantics)."""
    pt = (int(t_s) - plan.offset_s) % plan.cycle_s
    start = 0
    for k, ph in enumerate(plan.phases):
        if pt < start + ph.duration_s:
            return k, pt, ph.state
        start += ph.duration_s
    raise ValueError(f"{plan.signal_id}: phase durations do not add up to the cycle")


def _is_green(ph: Phase) -> bool:
    """phase_kind(ph.state) == "green" (some group green), without classifying the other kinds."""
    return "G" in ph.state or "g" in ph.state


def transition_errors(old: SignalPlan, exit_phase: int, new: SignalPlan, entry_phase: int,
                      spec: SignalSpec) -> list[str]:
    """Safety problems of leaving ``old`` at the end of its phase ``exit_phase`` into the start of ``new``'s phase
    ``entry_phase``: check_plan on one cycle of ``old`` ending there followed by one cycle of ``new`` starting there."""
    k, j = exit_phase, entry_phase
    phases = old.phases[k + 1:] + old.phases[:k + 1] + new.phases[j:] + new.phases[:j]
    composite = SignalPlan(signal_id=new.signal_id, cycle_s=sum(p.duration_s for p in phases), offset_s=0,
                           phases=phases, program_id="transition")
    return check_plan(composite, spec)


class TransitionCache:
    """Memo of transition_errors() verdicts keyed by plan contents (old plan, exit, new plan, entry); bounded.

    Plans are frozen structs compared by value, so the same two plans hit the memo whatever sequence numbers they
    travelled under. One cache serves one spec (it is cleared if used with another spec object). A verdict is computed
    from the two plans' bitsets (:func:`engine.safety.sequence_bits`, the same rules on the same seconds as
    check_plan on the composite; each plan's bitsets are kept while it is in use, with whether the plan passes the
    rules on its own): when both plans do, only what crosses the two joins is read, from each plan's edges at its cut
    (:func:`engine.safety.edges_safe`; the edges are kept with the plan's entry, so those of the running and the
    fallback plan are made once) or, where the edges do not decide it, by :func:`engine.safety.switch_safe` (the same
    verdict); the composite itself is checked when either plan is not structurally clean."""

    # small bounds: a controller needs verdicts for its running, pending, fallback and recurring plans only; every
    # entry keeps its plans alive, and a process hosting many controllers pays for live objects in each full GC
    def __init__(self, max_entries: int = 64):
        # (old plan's hash, exit, new plan's hash, entry) -> (old plan, new plan, verdict); a hit is confirmed by the
        # plans' contents (two plans of equal hashes but other contents: the later one's verdict replaces the other)
        self._safe: dict[tuple[int, int, int, int], tuple[SignalPlan, SignalPlan, bool]] = {}
        # per plan object (by id, so that a plan's contents are hashed once, not at every look-up; the entry holds the
        # plan, so its id is not reused while the entry lives): the plan, its bitsets (None: not structurally clean
        # for the spec), whether they pass check_bits (None: not known yet) and the plan's hash
        self._bits: dict[int, _PlanEntry] = {}
        self._max = max_entries
        self._spec: SignalSpec | None = None
        self.hits = 0
        self.misses = 0

    def add_bits(self, plan: SignalPlan, bits: PlanBits, spec: SignalSpec, *, clean: bool | None = None) -> None:
        """Keep bitsets already computed for ``plan`` under ``spec`` (engine.safety.check_plan_bits); ``clean``: whether
        that check found no error (None: not known)."""
        if spec is self._spec:
            self._keep(plan, bits, clean)

    def _keep(self, plan: SignalPlan, bits: PlanBits | None, clean: bool | None, h: int | None = None,
              edges: dict[int, JoinEdges | None] | None = None) -> _PlanEntry:
        if len(self._bits) >= 16 and id(plan) not in self._bits:
            del self._bits[next(iter(self._bits))]  # the least recently used
        entry = self._bits[id(plan)] = (plan, bits, clean, hash(plan) if h is None else h,
                                        {} if edges is None else edges)
        return entry

    def _plan_entry(self, plan: SignalPlan, spec: SignalSpec) -> _PlanEntry:
        entry = self._bits.pop(id(plan), None)
        if entry is None or entry[0] is not plan:
            return self._keep(plan, clean_plan_bits(plan, spec.n_links), None)  # None: not structurally clean
        self._bits[id(plan)] = entry  # now the most recently used (a controller's fallback plan stays)
        return entry

    def _clean(self, entry: _PlanEntry, spec: SignalSpec) -> bool:
        """Whether the plan of ``entry`` (from :meth:`_plan_entry`, structurally clean) passes the rules alone."""
        plan, bits, clean, h, edges = entry
        if clean is None:
            clean = not check_bits(plan.signal_id, bits, spec)
            self._keep(plan, bits, clean, h, edges)
        return clean

    @staticmethod
    def _edges(entry: _PlanEntry, from_phase: int) -> JoinEdges | None:
        """The entry's plan begun at ``from_phase``, as a switch check reads it (engine.safety.join_edges), kept with
        the entry: a running or fallback plan is checked at the same few phases against every new plan."""
        edges = entry[4]
        if from_phase in edges:
            return edges[from_phase]
        out = edges[from_phase] = join_edges(entry[1], from_phase)
        return out

    def safe(self, old: SignalPlan, k: int, new: SignalPlan, j: int, spec: SignalSpec) -> bool:
        if spec is not self._spec:
            self._safe.clear()
            self._bits.clear()
            self._spec = spec
        ea, eb = self._plan_entry(old, spec), self._plan_entry(new, spec)
        key = (ea[3], k, eb[3], j)
        hit = self._safe.get(key)
        if hit is not None and (hit[0] is old or hit[0] == old) and (hit[1] is new or hit[1] == new):
            self.hits += 1
            return hit[2]
        self.misses += 1
        a, b = ea[1], eb[1]
        if a is not None and b is not None:
            k1 = (k + 1) % len(old.phases)
            if self._clean(ea, spec) and self._clean(eb, spec):
                xa, xb = self._edges(ea, k1), self._edges(eb, j)
                ok = None if xa is None or xb is None else edges_safe(xa, xb, spec)
                if ok is None:  # a group green (yellow, red-amber) all cycle, or a short cycle
                    ok = switch_safe(a, k1, b, j, spec)
            else:
                ok = not check_bits(new.signal_id, sequence_bits(a, k1, b, j), spec)
        else:
            ok = not transition_errors(old, k, new, j, spec)
        if len(self._safe) >= self._max:
            self._safe.clear()
        self._safe[key] = (old, new, ok)
        return ok


_PlanEntry = tuple[SignalPlan, PlanBits | None, bool | None, int, dict[int, JoinEdges | None]]


def entry_candidates(old: SignalPlan, k: int, new: SignalPlan, t_s: int | None = None) -> list[int]:
    """Entry phases of ``new`` to try after ``old``'s phase k, best first: those that repeat a transition ``new``
    makes itself (its previous phase shows the same state as old[k]), then by distance to ``new``'s own program
    position at ``t_s`` (if given)."""
    exit_state = old.phases[k].state
    phases = new.phases
    if t_s is None:  # continuity first, then by index
        same = [j for j in range(len(phases)) if phases[j - 1].state == exit_state]
        return same + [j for j in range(len(phases)) if phases[j - 1].state != exit_state]
    starts = _starts(new)
    cycle = new.cycle_s
    want = (t_s - new.offset_s) % cycle

    def rank(j: int) -> tuple[int, int, int]:
        continuity = 0 if phases[j - 1].state == exit_state else 1
        d = abs(starts[j] - want)
        return (continuity, min(d, cycle - d), j)

    return sorted(range(len(phases)), key=rank)


def find_transition(old: SignalPlan, new: SignalPlan, spec: SignalSpec, *,
                    cache: TransitionCache | None = None) -> tuple[int, int] | None:
    """Some safe (exit phase of old, entry phase of new), or None when ``new`` cannot be reached from ``old``."""
    cache = cache if cache is not None else TransitionCache()
    phases = new.phases
    for k, ph in enumerate(old.phases):
        if not _is_green(ph):
            continue
        # entry_candidates(old, k, new) in its order (continuity first), without listing them all up front: the first
        # is usually safe
        later = []
        for j in range(len(phases)):
            if phases[j - 1].state != ph.state:
                later.append(j)
            elif cache.safe(old, k, new, j, spec):
                return (k, j)
        for j in later:
            if cache.safe(old, k, new, j, spec):
                return (k, j)
    return None


@dataclass
class _Pending:
    plan: SignalPlan
    key: Hashable
    not_before_s: int
    wait_cycle: bool


class PlanRunner:
    """Run cyclic plans second by second; switch to a requested plan only at a safe transition point."""

    def __init__(self, plan: SignalPlan, spec: SignalSpec, t_s: int, key: Hashable = None, *,
                 cache: TransitionCache | None = None):
        if plan.cycle_s <= 0 or not plan.phases:
            raise ValueError(f"{plan.signal_id}: cannot run a plan without phases")
        self.spec = spec
        self.cache = cache if cache is not None else TransitionCache()
        self._pending: _Pending | None = None
        self._enter(plan, key, t_s, None)

    # ------------------------------------------------------------------ state
    def _enter(self, plan: SignalPlan, key: Hashable, t_s: int, phase: int | None) -> None:
        self.plan = plan
        self.key = key
        self.t_s = int(t_s)
        self._durations = [ph.duration_s for ph in plan.phases]
        self._green = [_is_green(ph) for ph in plan.phases]
        self._starts = _starts(plan)
        if phase is None:
            # fresh start (power-up / resume): start of the phase the plan's own schedule is in; treated as if the plan
            # had been running for a cycle, so it may be left at its next green end
            phase = program_state(plan, self.t_s)[0]
            self._dwell_s = plan.cycle_s
        else:
            self._dwell_s = 0
        self.phase = phase
        self.elapsed_s = 0  # seconds of the current phase completed before t_s

    @property
    def state(self) -> str:
        """Signal state string shown during [t_s, t_s + 1)."""
        return self.plan.phases[self.phase].state

    @property
    def program_s(self) -> int:
        """Position in the running plan's cycle, s."""
        return self._starts[self.phase] + self.elapsed_s

    @property
    def pending_key(self) -> Hashable:
        return self._pending.key if self._pending else None

    @property
    def pending_plan(self) -> SignalPlan | None:
        return self._pending.plan if self._pending else None

    # ------------------------------------------------------------------ requests
    def request(self, plan: SignalPlan, key: Hashable = None, activation: str = "asap", at_s: float = 0.0) -> None:
        """Ask for a switch to ``plan`` at the first safe point after the activation point; replaces any pending
        request. ``activation``: "asap", "next_cycle" (of the running plan) or "at" (signal time ``at_s``)."""
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        not_before = int(at_s) if activation == "at" else self.t_s
        self._pending = _Pending(plan, key, not_before, activation == "next_cycle")

    def cancel(self) -> None:
        self._pending = None

    def relabel(self, key: Hashable) -> None:
        """Give the running plan a new key (the same plan re-issued under a new identity): no switch needed."""
        self.key = key
        self._pending = None

    def next_switch_s(self) -> int | None:
        """The signal time of the next switch to the pending plan if a safe entry exists then, else a lower bound of it:
        the first end of a green phase of the running plan at which :meth:`step` checks entries (at or after the
        activation point, after a full cycle of the running plan, past the end of the cycle for ``next_cycle``); None
        with nothing pending (or no green phase to leave). Until then :meth:`step` cannot switch, so a caller may skip
        those seconds and :meth:`advance_to` later."""
        pend = self._pending
        if pend is None:
            return None
        durations, green = self._durations, self._green
        n = len(durations)
        # at the end of phase k (time t) step() tries entries iff the cycle wait is over, t >= not_before and
        # dwell(t) = dwell + (t - t_s) >= cycle, and phase k is green
        need = max(pend.not_before_s, self.t_s + self.plan.cycle_s - self._dwell_s)
        wait_cycle = pend.wait_cycle
        k = self.phase
        t = self.t_s + durations[k] - self.elapsed_s
        if not wait_cycle and t < need:
            t += (need - t) // self.plan.cycle_s * self.plan.cycle_s  # whole cycles of phase ends before `need`
        for _ in range(3 * n):  # enough for a cycle's wait plus a full cycle
            if wait_cycle and k == n - 1:
                wait_cycle = False
            if not wait_cycle and t >= need and green[k]:
                return t
            k = (k + 1) % n
            t += durations[k]
        # no green end qualifies within those cycles (an activation point further ahead): a lower bound
        return max(t - durations[k], need) if any(green) else None

    def reachable(self, plan: SignalPlan) -> tuple[int, int] | None:
        """Some safe (exit, entry) pair from the running plan into ``plan``, or None."""
        return find_transition(self.plan, plan, self.spec, cache=self.cache)

    # ------------------------------------------------------------------ time
    def step(self) -> Switch | None:
        """Advance one second. Returns the switch made at the new time, if any."""
        self.t_s += 1
        self.elapsed_s += 1
        self._dwell_s += 1
        if self.elapsed_s < self._durations[self.phase]:
            return None
        k = self.phase
        pend = self._pending
        if pend is not None:
            if pend.wait_cycle and k == len(self._durations) - 1:
                pend.wait_cycle = False  # the running plan starts its next cycle now
            if (not pend.wait_cycle and self.t_s >= pend.not_before_s and self._dwell_s >= self.plan.cycle_s
                    and _is_green(self.plan.phases[k])):
                for j in entry_candidates(self.plan, k, pend.plan, self.t_s):
                    if self.cache.safe(self.plan, k, pend.plan, j, self.spec):
                        sw = Switch(self.t_s, self.key, pend.key, k, j)
                        self._pending = None
                        self._enter(pend.plan, pend.key, self.t_s, j)
                        return sw
        self.phase = (k + 1) % len(self._durations)
        self.elapsed_s = 0
        return None

    def advance_to(self, t_s: int, max_steps: int = 86400) -> list[Switch]:
        """Step until ``t_s`` (the same as calling :meth:`step` repeatedly; seconds inside a phase are skipped in one
        go). Beyond ``max_steps`` the runner restarts the plan fresh at ``t_s`` (a long stall)."""
        out: list[Switch] = []
        if t_s - self.t_s > max_steps:
            pend = self._pending
            self._enter(self.plan, self.key, t_s, None)
            self._pending = pend
            return out
        while self.t_s < t_s:
            skip = min(self._durations[self.phase] - self.elapsed_s, t_s - self.t_s) - 1
            if skip > 0:  # seconds that cannot end the phase
                self.t_s += skip
                self.elapsed_s += skip
                self._dwell_s += skip
            sw = self.step()
            if sw is not None:
                out.append(sw)
        return out
