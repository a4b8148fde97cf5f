"""Signal plans: the JSON schema that the optimiser writes, the harness applies and the controller link carries.

A *plan set* (one JSON file) holds one :class:`SignalPlan` per traffic light. A plan is a cyclic SUMO-style program:
an ordered list of phases, each a state string with one character per SUMO link index (signal group) and an integer
duration in seconds, plus the cycle length and the offset. Signal-group green windows are derived from the phases and
stored for controllers that think in signal groups rather than stages.

Schema (``schema == "gronvag.plan/1"``)::

    {
      "schema": "gronvag.plan/1",
      "scenario": "stockholm-corridor",          # free text: what the plan was made for
      "created": "2026-11-26T15:00:00Z",
      "plans": [
        {
          "signal_id": "J1",                      # SUMO tlLogic id
          "program_id": "gronvag",                # SUMO programID written to the additional file
          "cycle_s": 72,                          # sum of phase durations
          "offset_s": 14,                         # 0 <= offset < cycle; SUMO semantics: phase 0 starts at
                                                  # t = offset, program time is (t - offset) mod cycle
          "valid_from_s": 0, "valid_to_s": 3600,  # validity period in simulation / day seconds
          "phases": [ {"state": "GGrr", "duration_s": 30, "min_s": 6, "max_s": 60, "kind": "green"}, ... ],
          "groups": [ {"index": 0, "green_start_s": 0, "green_end_s": 30}, ... ]   # derived, informative
        }
      ]
    }

``kind`` is one of ``green``, ``yellow``, ``allred``, ``redamber``. Only ``msgspec`` decodes these files and
messages: typed, validated, never pickled.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import msgspec

from engine.errors import GronvagError

SCHEMA = "gronvag.plan/1"
STATE_CHARS = frozenset("GgyrusoO")
PHASE_KINDS = ("green", "yellow", "allred", "redamber")


class Phase(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    state: str
    duration_s: int
    min_s: int = 0
    max_s: int = 0  # 0: no maximum declared
    kind: str = "green"


class GroupWindow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    index: int
    green_start_s: int
    green_end_s: int


class SignalPlan(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    signal_id: str
    cycle_s: int
    offset_s: int
    phases: tuple[Phase, ...]
    program_id: str = "gronvag"
    valid_from_s: float = 0.0
    valid_to_s: float = 86400.0
    groups: tuple[GroupWindow, ...] = ()

    @property
    def n_links(self) -> int:
        return len(self.phases[0].state) if self.phases else 0


class PlanSet(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    plans: tuple[SignalPlan, ...]
    schema: str = SCHEMA
    scenario: str = ""
    created: str = ""


def phase_kind(state: str) -> str:
    """Classify a SUMO state string: green if any link is green, else yellow, red-amber or all-red."""
    if any(c in "Gg" for c in state):
        return "green"
    if "y" in state:
        return "yellow"
    if "u" in state:
        return "redamber"
    return "allred"


def group_windows(phases: tuple[Phase, ...] | list[Phase]) -> tuple[GroupWindow, ...]:
    """Green window of each signal group within the cycle (first contiguous green run; cyclic end may wrap)."""
    if not phases:
        return ()
    n = len(phases[0].state)
    starts = []
    t = 0
    for ph in phases:
        starts.append(t)
        t += ph.duration_s
    cycle = t
    out = []
    for i in range(n):
        green = [ph.state[i] in "Gg" for ph in phases]
        if not any(green):
            continue
        k = len(phases)
        # a run starts where green follows non-green (cyclically); all-green -> whole cycle
        first = next((j for j in range(k) if green[j] and not green[j - 1]), None)
        if first is None:
            out.append(GroupWindow(i, 0, cycle))
            continue
        j = first
        length = 0
        while green[j % k] and length < cycle:
            length += phases[j % k].duration_s
            j += 1
        out.append(GroupWindow(i, starts[first], (starts[first] + length) % cycle or cycle))
    return tuple(out)


def make_plan(
    signal_id: str,
    phases: list[Phase] | tuple[Phase, ...],
    offset_s: int = 0,
    program_id: str = "gronvag",
    valid_from_s: float = 0.0,
    valid_to_s: float = 86400.0,
) -> SignalPlan:
    """Build a plan with its cycle and signal-group windows derived from the phases."""
    phases = tuple(phases)
    cycle = int(sum(p.duration_s for p in phases))
    return SignalPlan(
        signal_id=signal_id,
        program_id=program_id,
        cycle_s=cycle,
        offset_s=int(offset_s) % cycle if cycle > 0 else 0,
        phases=phases,
        valid_from_s=valid_from_s,
        valid_to_s=valid_to_s,
        groups=group_windows(phases),
    )


def check_structure(plan: SignalPlan) -> list[str]:
    """Schema-level checks that need no knowledge of the intersection: returns a list of problems (empty = ok)."""
    errs: list[str] = []
    if not plan.phases:
        return [f"{plan.signal_id}: plan has no phases"]
    n = len(plan.phases[0].state)
    total = 0
    for k, ph in enumerate(plan.phases):
        if len(ph.state) != n:
            errs.append(f"{plan.signal_id}: phase {k} state has {len(ph.state)} links, expected {n}")
        bad = set(ph.state) - STATE_CHARS
        if bad:
            errs.append(f"{plan.signal_id}: phase {k} state has invalid characters {sorted(bad)}")
        if ph.duration_s <= 0:
            errs.append(f"{plan.signal_id}: phase {k} duration {ph.duration_s} s is not positive")
        if ph.kind not in PHASE_KINDS:
            errs.append(f"{plan.signal_id}: phase {k} kind {ph.kind!r} not one of {PHASE_KINDS}")
        if ph.max_s and ph.min_s > ph.max_s:
            errs.append(f"{plan.signal_id}: phase {k} min {ph.min_s} s > max {ph.max_s} s")
        total += ph.duration_s
    if total != plan.cycle_s:
        errs.append(f"{plan.signal_id}: phase durations add up to {total} s, not the cycle {plan.cycle_s} s")
    if not 0 <= plan.offset_s < max(plan.cycle_s, 1):
        errs.append(f"{plan.signal_id}: offset {plan.offset_s} s outside [0, cycle)")
    if plan.valid_to_s <= plan.valid_from_s:
        errs.append(f"{plan.signal_id}: validity period is empty")
    return errs


_encoder = msgspec.json.Encoder(order="deterministic")


def encode_planset(ps: PlanSet) -> bytes:
    """Canonical JSON bytes (deterministic key order): also the input of plan hashes."""
    return _encoder.encode(ps)


def encode_plan(plan: SignalPlan) -> bytes:
    return _encoder.encode(plan)


def decode_plan(data: bytes) -> SignalPlan:
    return msgspec.json.decode(data, type=SignalPlan)


def read_planset(path: str | Path) -> PlanSet:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GronvagError(f"cannot read plan file ({exc.strerror})", path) from None
    try:
        ps = msgspec.json.decode(raw, type=PlanSet)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise GronvagError(f"not a valid {SCHEMA} plan file: {exc}", path) from None
    if ps.schema != SCHEMA:
        raise GronvagError(f"unsupported plan schema {ps.schema!r} (expected {SCHEMA!r})", path)
    for plan in ps.plans:
        errs = check_structure(plan)
        if errs:
            raise GronvagError(errs[0], path)
    return ps


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
