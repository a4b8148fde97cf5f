"""A controller's local configuration: its fallback plan and the safety spec it checks central plans against.

The fallback plan is the controller's own program (what it runs when it has no valid central plan): a plan set
(``gronvag.plan/1``) holding a plan for the controller's signal, or a single plan object. The spec is either derived
from the fallback plan with :func:`engine.safety.derive_spec` (groups never shown green together conflict; yellow,
red-amber and all-red as the fallback uses them; minimum green capped by the fallback's own) or read from a JSON file::

    {"schema": "gronvag.signal-spec/1", "signal_id": "J1",
     "min_green_s": [5, 5, 5, 5], "max_green_s": [0, 0, 0, 0], "yellow_s": [3, 3, 3, 3], "redamber_s": [1, 1, 1, 1],
     "allred_s": 2, "conflicts": [[false, false, true, true], ...], "is_pedestrian": [false, ...]}
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np

from engine.errors import GronvagError
from engine.plan import PlanSet, SignalPlan, check_structure, read_planset
from engine.safety import SignalSpec, check_plan, derive_spec

SPEC_SCHEMA = "gronvag.signal-spec/1"


class SpecFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    signal_id: str
    min_green_s: list[int]
    yellow_s: list[int]
    redamber_s: list[int]
    allred_s: int
    conflicts: list[list[bool]]
    max_green_s: list[int] | None = None
    is_pedestrian: list[bool] | None = None
    schema: str = SPEC_SCHEMA


def load_fallback(path: str | Path, signal_id: str) -> SignalPlan:
    """The plan for ``signal_id`` from a plan-set file, or a single-plan JSON file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GronvagError(f"cannot read fallback plan ({exc.strerror})", path) from None
    try:
        probe = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise GronvagError(f"not JSON: {exc}", path) from None
    if isinstance(probe, dict) and "plans" in probe:
        ps: PlanSet = read_planset(path)
        found = [p for p in ps.plans if p.signal_id == signal_id]
        if not found:
            raise GronvagError(f"no plan for signal {signal_id!r} (has {[p.signal_id for p in ps.plans]})", path)
        plan = found[0]
    else:
        try:
            plan = msgspec.json.decode(raw, type=SignalPlan)
        except msgspec.ValidationError as exc:
            raise GronvagError(f"not a plan: {exc}", path) from None
        if plan.signal_id != signal_id:
            raise GronvagError(f"plan is for signal {plan.signal_id!r}, not {signal_id!r}", path)
        errs = check_structure(plan)
        if errs:
            raise GronvagError(errs[0], path)
    return plan


def spec_from_fallback(plan: SignalPlan, *, min_green_s: int = 5) -> SignalSpec:
    """Derive the spec from the fallback program: without the net's conflict matrix every pair of groups is taken to
    conflict unless the fallback shows them green together (conservative)."""
    n = plan.n_links
    foes = np.ones((n, n), bool)
    return derive_spec(plan.signal_id, [(ph.state, ph.duration_s) for ph in plan.phases], foes,
                       min_green_s=min_green_s)


def load_spec(path: str | Path) -> SignalSpec:
    path = Path(path)
    try:
        sf = msgspec.json.decode(Path(path).read_bytes(), type=SpecFile)
    except OSError as exc:
        raise GronvagError(f"cannot read spec ({exc.strerror})", path) from None
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise GronvagError(f"not a {SPEC_SCHEMA} file: {exc}", path) from None
    if sf.schema != SPEC_SCHEMA:
        raise GronvagError(f"unsupported spec schema {sf.schema!r}", path)
    n = len(sf.min_green_s)
    conflicts = np.asarray(sf.conflicts, bool)
    lengths = [len(sf.yellow_s), len(sf.redamber_s), len(sf.max_green_s or [0] * n), len(sf.is_pedestrian or [0] * n)]
    if any(k != n for k in lengths) or conflicts.shape != (n, n):
        raise GronvagError(f"spec arrays must all have {n} entries and conflicts must be {n}x{n}", path)
    return SignalSpec(
        signal_id=sf.signal_id,
        min_green_s=np.asarray(sf.min_green_s, np.int32),
        max_green_s=np.asarray(sf.max_green_s or [0] * n, np.int32),
        yellow_s=np.asarray(sf.yellow_s, np.int32),
        redamber_s=np.asarray(sf.redamber_s, np.int32),
        allred_s=int(sf.allred_s),
        conflicts=conflicts | conflicts.T,
        is_pedestrian=np.asarray(sf.is_pedestrian or [False] * n, bool),
    )


def check_fallback(plan: SignalPlan, spec: SignalSpec) -> None:
    """The fallback itself must satisfy the spec: a controller that cannot run its own plan safely must not start."""
    errs = check_plan(plan, spec)
    if errs:
        raise GronvagError(f"fallback plan violates the signal spec: {errs[0]}"
                           + (f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""))
