"""engine.safety: the vectorised checks agree with a slow, obviously correct second-by-second twin."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.plan import Phase, make_plan
from engine.safety import GREEN_MAJOR, GREEN_MINOR, YELLOW, SignalSpec, _runs, check_plan, expand


def naive_runs(mask):
    n = len(mask)
    if n == 0 or not any(mask):
        return []
    if all(mask):
        return [(0, n)]
    out = []
    for t in range(n):
        if mask[t] and not mask[t - 1]:
            length = 0
            while mask[(t + length) % n]:
                length += 1
            out.append((t, length))
    return out


def naive_conflict_errors(codes, spec):
    """Every (kind, a, b) violation, checked second by second."""
    n_t, n = codes.shape
    green = lambda t, i: codes[t % n_t, i] in (GREEN_MAJOR, GREEN_MINOR)  # noqa: E731
    active = lambda t, i: green(t, i) or codes[t % n_t, i] == YELLOW  # noqa: E731
    out = set()
    for i in range(n):
        for j in range(i + 1, n):
            if not spec.conflicts[i, j]:
                continue
            if any(green(t, i) and green(t, j) for t in range(n_t)):
                out.add(("both", i, j))
                continue
            for a, b in ((i, j), (j, i)):
                if any(green(t, b) and any(active(t - k, a) for k in range(spec.allred_s + 1)) for t in range(n_t)):
                    out.add(("after", a, b))
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=40))
def test_runs_match_twin(mask):
    assert sorted(_runs(np.array(mask))) == naive_runs(mask)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_conflict_checks_match_twin(data):
    n = data.draw(st.integers(2, 5))
    k = data.draw(st.integers(1, 6))
    states = data.draw(st.lists(st.text("GgyrU".replace("U", "u"), min_size=n, max_size=n), min_size=k, max_size=k))
    durs = data.draw(st.lists(st.integers(1, 6), min_size=k, max_size=k))
    conflicts = np.array(data.draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n))).reshape(n, n)
    conflicts = (conflicts | conflicts.T) & ~np.eye(n, dtype=bool)
    spec = SignalSpec("J", np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int32),
                      np.zeros(n, np.int32), data.draw(st.integers(0, 3)), conflicts)
    plan = make_plan("J", [Phase(s, d) for s, d in zip(states, durs, strict=True)])
    got = set()
    for e in check_plan(plan, spec):
        words = e.split()
        if "together" in e:
            got.add(("both", int(words[3]), int(words[5])))
        elif "all-red" in e:
            got.add(("after", int(words[-1]), int(words[2])))
    assert got == naive_conflict_errors(expand(plan), spec)


def test_check_bits_rules_memo_is_per_spec_object():
    """check_bits memoises what it derives from a spec per spec object: another spec (even a replaced copy of the
    same one) gets its own rules and messages."""
    import dataclasses

    from engine.safety import check_bits, plan_bits

    n = 2
    conflicts = np.array([[False, True], [True, False]])
    loose = SignalSpec("J", np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int32),
                       np.zeros(n, np.int32), 0, conflicts)
    plan = make_plan("J", [Phase("Gr", 10), Phase("rG", 10)])
    bits = plan_bits(plan)
    assert check_bits("J", bits, loose) == []
    strict = dataclasses.replace(loose, allred_s=2, min_green_s=np.full(n, 12, np.int32))
    errs = check_bits("J", bits, strict)
    assert errs == check_plan(plan, strict) and any("all-red" in e for e in errs) and any("minimum" in e for e in errs)
    assert check_bits("J", bits, loose) == []
    for _ in range(300):  # many specs made and dropped
        s = SignalSpec("J", np.full(n, 12, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int32),
                       np.zeros(n, np.int32), 2, conflicts)
        assert check_bits("J", bits, s) == errs
        assert s == dataclasses.replace(s) and "_check_rules" not in repr(s)


def test_a_spec_owns_read_only_arrays_so_its_memoised_rules_cannot_go_stale():
    """check_bits keeps what it derives from a spec on the spec; the spec therefore copies the arrays it is given
    and makes them read-only: changing the caller's array afterwards changes neither the spec nor its verdicts."""
    from engine.safety import check_bits, plan_bits

    n = 2
    min_g = np.zeros(n, np.int32)
    spec = SignalSpec("J", min_g, np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int32), 0,
                      np.array([[False, True], [True, False]]))
    plan = make_plan("J", [Phase("Gr", 10), Phase("rG", 10)])
    assert check_bits("J", plan_bits(plan), spec) == []
    min_g[:] = 12  # the caller's array, not the spec's
    assert spec.min_green_s.tolist() == [0, 0]
    assert check_bits("J", plan_bits(plan), spec) == [] == check_plan(plan, spec)
    for name in ("min_green_s", "max_green_s", "yellow_s", "redamber_s", "conflicts"):
        arr = getattr(spec, name)
        assert not arr.flags.writeable
        try:
            arr[0] = 1
        except ValueError:
            pass
        else:
            raise AssertionError(f"{name} is writeable")


def test_clean_plan_bits_is_plan_bits_exactly_when_the_structure_is_clean():
    """engine.safety.clean_plan_bits (the structure check and the bitsets in one pass, run on every plan a controller
    receives) gives plan_bits exactly when check_structure finds nothing and the plan has the expected number of
    groups, else None; on random plans, many of them broken in one of the ways check_structure looks for."""
    from engine.plan import SignalPlan, check_structure
    from engine.safety import check_plan_bits, clean_plan_bits, plan_bits

    rng = np.random.default_rng(11)
    chars = "GgyrusoOx"  # x: not a signal state
    seen = {True: 0, False: 0}
    for _ in range(4000):
        n = int(rng.integers(0, 4))
        phases = []
        for _ in range(int(rng.integers(0, 5))):
            m = n if rng.random() < 0.9 else int(rng.integers(0, 4))
            state = "".join(rng.choice(list(chars[:8] if rng.random() < 0.9 else chars), size=m))
            kind = "green" if rng.random() < 0.5 else str(rng.choice(["yellow", "allred", "redamber", "amber"]))
            lo, hi = (int(x) for x in rng.integers(0, 9, size=2))
            phases.append(Phase(state, int(rng.integers(-1, 9)), min_s=lo, max_s=hi if rng.random() < 0.5 else 0,
                                kind=kind))
        total = sum(p.duration_s for p in phases)
        cycle = total if rng.random() < 0.8 else int(rng.integers(0, 40))
        valid_to = 86400.0 if rng.random() < 0.9 else float(rng.integers(0, 2))
        plan = SignalPlan(signal_id="J", cycle_s=cycle, offset_s=int(rng.integers(-2, max(cycle, 1) + 2)),
                          phases=tuple(phases), valid_from_s=float(rng.integers(0, 2)), valid_to_s=valid_to)
        want_n = n if rng.random() < 0.9 else n + 1
        clean = not check_structure(plan) and plan.n_links == want_n
        got = clean_plan_bits(plan, want_n)
        assert (got is not None) == clean, plan
        if clean:
            assert got == plan_bits(plan)
            spec = SignalSpec("J", np.zeros(want_n, np.int32), np.zeros(want_n, np.int32), np.zeros(want_n, np.int32),
                              np.zeros(want_n, np.int32), 0, np.zeros((want_n, want_n), bool))
            assert check_plan_bits(plan, spec) == (check_plan(plan, spec), got)
        seen[clean] += 1
    assert seen[True] > 200 and seen[False] > 2000, seen
