"""engine.safety.check_plan, which controllers run on every plan and every transition, equals its second-by-second twin.

The twin below is the plain numpy formulation (the plan expanded into per-second state codes, every rule read off
that array); check_plan computes the same rules on phases and bitsets. They must return the same messages in the same
order, for safe and unsafe plans alike.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.signal import TransitionCache, transition_errors
from engine.plan import Phase, SignalPlan, check_structure, make_plan
from engine.safety import (
    GREEN_MAJOR,
    GREEN_MINOR,
    REDAMBER,
    YELLOW,
    SignalSpec,
    _runs,
    check_bits,
    check_plan,
    expand,
    plan_bits,
    sequence_bits,
)


def check_plan_by_second(plan: SignalPlan, spec: SignalSpec) -> list[str]:
    errs = check_structure(plan)
    if errs:
        return errs
    sid = plan.signal_id
    if plan.n_links != spec.n_links:
        return [f"{sid}: plan has {plan.n_links} signal groups, the intersection has {spec.n_links}"]
    codes = expand(plan)
    cycle = codes.shape[0]
    green = (codes == GREEN_MAJOR) | (codes == GREEN_MINOR)
    for i in range(spec.n_links):
        for start, length in _runs(green[:, i]):
            if length == cycle:
                continue
            if spec.min_green_s[i] and length < spec.min_green_s[i]:
                errs.append(f"{sid}: group {i} green {length} s at t={start} is shorter than its minimum "
                            f"{int(spec.min_green_s[i])} s")
            if spec.max_green_s[i] and length > spec.max_green_s[i]:
                errs.append(f"{sid}: group {i} green {length} s at t={start} exceeds its maximum "
                            f"{int(spec.max_green_s[i])} s")
            end = (start + length) % cycle
            if spec.yellow_s[i]:
                y = 0
                while y < cycle and codes[(end + y) % cycle, i] == YELLOW:
                    y += 1
                if y < spec.yellow_s[i]:
                    errs.append(f"{sid}: group {i} yellow after green at t={end} is {y} s, needs "
                                f"{int(spec.yellow_s[i])} s")
            if spec.redamber_s[i]:
                u = 0
                while u < cycle and codes[(start - 1 - u) % cycle, i] == REDAMBER:
                    u += 1
                if u < spec.redamber_s[i]:
                    errs.append(f"{sid}: group {i} red-amber before green at t={start} is {u} s, needs "
                                f"{int(spec.redamber_s[i])} s")
    active = green | (codes == YELLOW)
    clearance = int(spec.allred_s)
    recent = active.copy()
    for k in range(1, clearance + 1):
        recent |= np.roll(active, k, axis=0)
    ii, jj = np.nonzero(np.triu(spec.conflicts, 1))
    both = (green[:, ii] & green[:, jj]).any(axis=0)
    after_i = (green[:, jj] & recent[:, ii]).any(axis=0)
    after_j = (green[:, ii] & recent[:, jj]).any(axis=0)
    for k in np.flatnonzero(both | after_i | after_j):
        i, j = int(ii[k]), int(jj[k])
        if both[k]:
            t = int(np.argmax(green[:, i] & green[:, j]))
            errs.append(f"{sid}: conflicting groups {i} and {j} are green together at t={t}")
            continue
        for a, b, bad in ((i, j, after_i[k]), (j, i, after_j[k])):
            if bad:
                t = int(np.argmax(green[:, b] & recent[:, a]))
                errs.append(f"{sid}: group {b} turns green at t={t} less than {clearance} s of all-red after "
                            f"conflicting group {a}")
    return errs


@st.composite
def plans_and_specs(draw):
    n = draw(st.integers(1, 6))
    k = draw(st.integers(1, 9))
    states = draw(st.lists(st.text("GgyrusoO", min_size=n, max_size=n), min_size=k, max_size=k))
    durs = draw(st.lists(st.integers(1, 12), min_size=k, max_size=k))
    ints = lambda lo, hi: np.array(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)), np.int32)  # noqa: E731
    conflicts = np.array(draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n))).reshape(n, n)
    if draw(st.booleans()):
        conflicts = (conflicts | conflicts.T) & ~np.eye(n, dtype=bool)
    spec = SignalSpec("J", ints(0, 15), ints(0, 30), ints(0, 4), ints(0, 2), draw(st.integers(-1, 40)), conflicts)
    return make_plan("J", [Phase(s, d) for s, d in zip(states, durs, strict=True)]), spec


@settings(max_examples=1500, deadline=None)
@given(plans_and_specs())
def test_check_plan_equals_its_second_by_second_twin(case):
    plan, spec = case
    assert check_plan(plan, spec) == check_plan_by_second(plan, spec)


def _swedish(greens: list[int], n_groups: int, offset: int = 0) -> SignalPlan:
    """Stages each giving green to one group, with yellow 3, all-red 2, red-amber 1 between them."""
    phases = []
    for g, green_s in enumerate(greens):
        on = ["r"] * n_groups
        on[g % n_groups] = "G"
        nxt = (g + 1) % len(greens) % n_groups
        phases.append(Phase("".join(on), green_s))
        phases.append(Phase("".join("y" if c == "G" else c for c in on), 3, kind="yellow"))
        phases.append(Phase("r" * n_groups, 2, kind="allred"))
        phases.append(Phase("".join("u" if i == nxt else "r" for i in range(n_groups)), 1, kind="redamber"))
    return make_plan("J", phases, offset_s=offset)


def test_check_plan_equals_twin_on_real_shaped_plans():
    rng = np.random.default_rng(6)
    for n in (2, 4, 8, 16):
        conflicts = ~np.eye(n, dtype=bool)
        spec = SignalSpec("J", np.full(n, 5, np.int32), np.full(n, 60, np.int32), np.full(n, 3, np.int32),
                          np.ones(n, np.int32), 2, conflicts)
        for _ in range(40):
            greens = rng.integers(1, 70, size=n).tolist()
            plan = _swedish(greens, n, int(rng.integers(0, 500)))
            assert check_plan(plan, spec) == check_plan_by_second(plan, spec)
        assert check_plan(_swedish([10] * n, n), spec) == []


@st.composite
def two_plans(draw):
    n = draw(st.integers(1, 5))

    def plan():
        k = draw(st.integers(1, 7))
        states = draw(st.lists(st.text("GgyrusoO", min_size=n, max_size=n), min_size=k, max_size=k))
        durs = draw(st.lists(st.integers(1, 9), min_size=k, max_size=k))
        offset = draw(st.integers(0, 50))
        return make_plan("J", [Phase(s, d) for s, d in zip(states, durs, strict=True)], offset_s=offset)

    old, new = plan(), plan()
    ints = lambda lo, hi: np.array(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)), np.int32)  # noqa: E731
    conflicts = np.array(draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n))).reshape(n, n)
    spec = SignalSpec("J", ints(0, 12), ints(0, 25), ints(0, 4), ints(0, 2), draw(st.integers(0, 4)), conflicts)
    return old, draw(st.integers(0, len(old.phases) - 1)), new, draw(st.integers(0, len(new.phases) - 1)), spec


@settings(max_examples=1500, deadline=None)
@given(two_plans())
def test_switch_bitsets_equal_check_plan_on_the_composite(case):
    """What the runner's transition memo computes from the two plans' bitsets is check_plan on the composite plan."""
    old, k, new, j, spec = case
    composite = old.phases[k + 1:] + old.phases[:k + 1] + new.phases[j:] + new.phases[:j]
    want = check_plan(make_plan("J", composite), spec)
    assert check_bits("J", sequence_bits(plan_bits(old), (k + 1) % len(old.phases), plan_bits(new), j), spec) == want
    assert transition_errors(old, k, new, j, spec) == want
    assert TransitionCache().safe(old, k, new, j, spec) == (not want)
