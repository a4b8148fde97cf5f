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
    JoinEdges,
    PlanBits,
    SignalSpec,
    _runs,
    check_bits,
    check_plan,
    edges_safe,
    expand,
    join_edges,
    plan_bits,
    sequence_bits,
    switch_safe,
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


@st.composite
def plans_with_shared_heads(draw):
    """Plans whose groups repeat other groups' states (links of one signal head, common in SUMO programs), under
    specs that give the copies the same or other limits: check_plan skips a copy of a group that passed, never one of a
    group that failed."""
    plan, _ = draw(plans_and_specs())
    base_n = plan.n_links
    cols = draw(st.lists(st.integers(0, base_n - 1), min_size=1, max_size=8))
    n = len(cols)
    phases = [Phase("".join(ph.state[c] for c in cols), ph.duration_s) for ph in plan.phases]
    same = draw(st.booleans())  # copies share their original's limits, or each group draws its own

    def ints(lo, hi):
        if same:
            own = draw(st.lists(st.integers(lo, hi), min_size=base_n, max_size=base_n))
            return np.array([own[c] for c in cols], np.int32)
        return np.array(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)), np.int32)

    conflicts = np.array(draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n))).reshape(n, n)
    spec = SignalSpec("J", ints(0, 15), ints(0, 30), ints(0, 4), ints(0, 2), draw(st.integers(-1, 6)), conflicts)
    return make_plan("J", phases), spec


@settings(max_examples=1000, deadline=None)
@given(plans_with_shared_heads())
def test_check_plan_equals_its_twin_with_groups_sharing_a_signal_head(case):
    plan, spec = case
    assert check_plan(plan, spec) == check_plan_by_second(plan, spec)


@settings(max_examples=500, deadline=None)
@given(plans_with_shared_heads(), st.data())
def test_join_edges_of_groups_sharing_a_signal_head_equal_each_group_alone(case, data):
    """join_edges computes a group's edges once for the groups of one signal head: every group's edges equal those of a
    plan made of that group alone."""
    plan, _ = case
    bits = plan_bits(plan)
    phase = data.draw(st.integers(0, len(plan.phases) - 1))
    edges = join_edges(bits, phase)
    alone = [join_edges(PlanBits(bits.cycle_s, bits.starts, (g,), (y,), (u,)), phase)
             for g, y, u in zip(bits.green, bits.yellow, bits.redamber, strict=True)]
    if any(e is None for e in alone):
        assert edges is None
        return
    assert edges == JoinEdges(bits.cycle_s, *(tuple(e[f][0] for e in alone) for f in range(1, len(JoinEdges._fields))))


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


# ---------------------------------------------------------------------------------------------------------------------
# switch_safe: the transition verdict read at the joins only, for two plans that pass the rules on their own


def _stage_plan(draw_int, n: int, spec: SignalSpec) -> SignalPlan:
    """A plan shaped like real ones (green stages with yellow, all-red and red-amber between them) whose durations are
    drawn around the spec's limits, so that many pass the rules and some do not. ``draw_int(lo, hi)``: an integer."""
    stages = []
    for _ in range(draw_int(1, 4)):
        greens = {i for i in range(n) if draw_int(0, 2) == 0} or {draw_int(0, n - 1)}
        stages.append(greens)
    ped = spec.is_pedestrian
    phases = []
    for s, greens in enumerate(stages):
        nxt = stages[(s + 1) % len(stages)]
        phases.append(Phase("".join(("G" if draw_int(0, 3) else "g") if i in greens else "r" for i in range(n)),
                            draw_int(1, 25)))
        stopping, starting = greens - nxt, nxt - greens
        if stopping and draw_int(0, 5):
            phases.append(Phase("".join("r" if i in stopping and ped[i] else "y" if i in stopping else
                                        "G" if i in greens else "r" for i in range(n)), draw_int(1, 4)))
        if draw_int(0, 4):
            phases.append(Phase("".join("G" if i in greens - stopping else "r" for i in range(n)), draw_int(1, 5)))
        if starting and draw_int(0, 3):
            phases.append(Phase("".join("u" if i in starting else "G" if i in greens - stopping else "r"
                                        for i in range(n)), draw_int(1, 2)))
    return make_plan("J", phases, offset_s=draw_int(0, 99))


def _stage_spec(draw_int, n: int) -> SignalSpec:
    ped = np.array([draw_int(0, 3) == 0 for _ in range(n)])
    conflicts = np.array([[draw_int(0, 1) == 1 for _ in range(n)] for _ in range(n)])
    if draw_int(0, 3):
        conflicts = (conflicts | conflicts.T) & ~np.eye(n, dtype=bool)
    ints = lambda lo, hi: np.array([draw_int(lo, hi) for _ in range(n)], np.int32)  # noqa: E731
    max_g = np.where(ints(0, 1) == 1, ints(8, 40), 0).astype(np.int32)
    return SignalSpec("J", ints(0, 8), max_g, np.where(ped, 0, ints(0, 4)).astype(np.int32), ints(0, 2),
                      draw_int(-1, 5), conflicts, is_pedestrian=ped)


def _switch_verdicts(old: SignalPlan, k: int, new: SignalPlan, j: int, spec: SignalSpec) -> tuple[bool, bool]:
    """(the full check's verdict on the composite, the second-by-second twin's) for leaving old's phase k into new's
    phase j."""
    composite = make_plan("J", old.phases[k + 1:] + old.phases[:k + 1] + new.phases[j:] + new.phases[:j])
    full = not check_bits("J", sequence_bits(plan_bits(old), (k + 1) % len(old.phases), plan_bits(new), j), spec)
    return full, not check_plan_by_second(composite, spec)


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_switch_safe_equals_the_full_check_and_its_twin(data):
    """For plans that pass the rules alone, the join-only verdict is the full check's on the composite (and the
    twin's); for any plans, the transition memo's verdict is too (it uses the join-only check only when both pass)."""
    draw_int = lambda lo, hi: data.draw(st.integers(lo, hi))  # noqa: E731
    n = draw_int(1, 5)
    spec = _stage_spec(draw_int, n)
    old, new = _stage_plan(draw_int, n, spec), _stage_plan(draw_int, n, spec)
    k, j = draw_int(0, len(old.phases) - 1), draw_int(0, len(new.phases) - 1)
    full, twin = _switch_verdicts(old, k, new, j, spec)
    assert full == twin
    assert TransitionCache().safe(old, k, new, j, spec) == full
    if not check_plan(old, spec) and not check_plan(new, spec):
        assert switch_safe(plan_bits(old), (k + 1) % len(old.phases), plan_bits(new), j, spec) == full
        assert _edges_verdict(old, k, new, j, spec) in (None, full)


def _edges_verdict(old: SignalPlan, k: int, new: SignalPlan, j: int, spec: SignalSpec) -> bool | None:
    """engine.safety.edges_safe on the two plans' join edges (None where it leaves the verdict to switch_safe)."""
    a, b = join_edges(plan_bits(old), (k + 1) % len(old.phases)), join_edges(plan_bits(new), j)
    return None if a is None or b is None else edges_safe(a, b, spec)


def test_switch_safe_on_many_clean_pairs():
    """The same comparison over pairs drawn until thousands of them pass the rules alone, so that the join-only
    verdict is exercised on safe and unsafe switches alike (both kinds must occur), with several specs."""
    rng = np.random.default_rng(2026)
    draw_int = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    seen = {True: 0, False: 0}
    edges_seen = {True: 0, False: 0}
    for _ in range(300):
        n = draw_int(1, 5)
        spec = _stage_spec(draw_int, n)
        clean = [p for p in (_stage_plan(draw_int, n, spec) for _ in range(40)) if not check_plan(p, spec)]
        for _ in range(30 if len(clean) > 1 else 0):
            old, new = clean[draw_int(0, len(clean) - 1)], clean[draw_int(0, len(clean) - 1)]
            for k in range(len(old.phases)):
                j = draw_int(0, len(new.phases) - 1)
                full, twin = _switch_verdicts(old, k, new, j, spec)
                assert full == twin
                fast = switch_safe(plan_bits(old), (k + 1) % len(old.phases), plan_bits(new), j, spec)
                assert fast == full, (old, k, new, j, spec)
                edges = _edges_verdict(old, k, new, j, spec)
                assert edges in (None, full), (old, k, new, j, spec)
                seen[full] += 1
                edges_seen[full] += edges is not None
    assert seen[True] > 1000 and seen[False] > 1000, seen
    assert edges_seen[True] > 300 and edges_seen[False] > 300, edges_seen  # many decided by the edges alone


def _split_phases(draw_int, plan: SignalPlan) -> SignalPlan:
    """The same plan with some phases split in two of the same state (the seconds it shows are unchanged): a switch
    may then leave or enter it in the middle of a yellow, red-amber or green run."""
    phases = []
    for ph in plan.phases:
        if ph.duration_s >= 2 and draw_int(0, 1):
            d = draw_int(1, ph.duration_s - 1)
            phases += [Phase(ph.state, d, kind=ph.kind), Phase(ph.state, ph.duration_s - d, kind=ph.kind)]
        else:
            phases.append(ph)
    return make_plan("J", phases, offset_s=plan.offset_s)


def test_join_edges_with_switches_inside_runs():
    """edges_safe (what the transition memo reads for two plans that pass alone) against the full check, with plans
    whose phases are split so that a switch can fall inside a yellow, red-amber or green run: the yellow after a run
    then continues across the join, and so does the red-amber before one."""
    rng = np.random.default_rng(6)
    draw_int = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    seen = {True: 0, False: 0}
    for _ in range(200):
        n = draw_int(1, 4)
        spec = _stage_spec(draw_int, n)
        plans = (_split_phases(draw_int, _stage_plan(draw_int, n, spec)) for _ in range(30))
        clean = [p for p in plans if not check_plan(p, spec)]
        for _ in range(20 if len(clean) > 1 else 0):
            old, new = clean[draw_int(0, len(clean) - 1)], clean[draw_int(0, len(clean) - 1)]
            for k in range(len(old.phases)):
                for j in range(len(new.phases)):
                    edges = _edges_verdict(old, k, new, j, spec)
                    if edges is None:
                        continue
                    composite = make_plan("J", old.phases[k + 1:] + old.phases[:k + 1] + new.phases[j:] +
                                          new.phases[:j])
                    assert edges == (not check_plan(composite, spec)), (old, k, new, j, spec)
                    assert TransitionCache().safe(old, k, new, j, spec) == edges
                    seen[edges] += 1
    assert seen[True] > 2000 and seen[False] > 2000, seen
