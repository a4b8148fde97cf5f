"""PlanRunner: runs plans second by second and switches only at safe points.

The switch property is checked two independent ways on the produced per-second trace: (1) no phase of any plan is
ever cut short (so no running yellow, all-red, red-amber or minimum green is shortened), and switches happen at the
natural end of a green phase; (2) the whole trace, P -> Q -> P ending where P's cycle ends, read as one cyclic plan,
passes engine.safety.check_plan.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.config import spec_from_fallback
from controllers.signal import (
    PlanRunner,
    TransitionCache,
    entry_candidates,
    find_transition,
    program_state,
    transition_errors,
)
from engine.plan import Phase, SignalPlan, phase_kind
from engine.safety import SignalSpec, check_plan, expand
from tests.test_controllers_support import four_phase

BASE = four_phase("J1", 20, 20)
SPEC = spec_from_fallback(BASE)


def run_trace(runner: PlanRunner, seconds: int, on_step=None) -> tuple[list[str], list]:
    states, switches = [], []
    for _ in range(seconds):
        if on_step is not None:
            on_step(runner)
        states.append(runner.state)
        sw = runner.step()
        if sw is not None:
            switches.append(sw)
    return states, switches


def test_runs_the_plan_cyclically_with_offset():
    plan = four_phase("J1", 25, 15, offset_s=0)
    r = PlanRunner(plan, SPEC, 0)
    states, switches = run_trace(r, 3 * plan.cycle_s)
    codes = expand(plan)
    cyc = [plan.phases[i].state for i, ph in enumerate(plan.phases) for _ in range(ph.duration_s)]
    assert states == cyc * 3 and not switches
    assert codes.shape[0] == plan.cycle_s
    # a fresh start with an offset begins at the start of the phase the schedule is in
    plan2 = four_phase("J1", 25, 15, offset_s=33)
    r2 = PlanRunner(plan2, SPEC, 0)
    k, pt, _ = program_state(plan2, 0)
    assert pt == (0 - 33) % plan2.cycle_s  # SUMO's convention: phase 0 starts at t = offset
    assert r2.phase == k and r2.elapsed_s == 0
    assert r2.program_s == sum(ph.duration_s for ph in plan2.phases[:k]) <= pt


def test_switch_happens_at_the_end_of_a_green_phase_without_cutting_it():
    p = four_phase("J1", 20, 20)
    q = four_phase("J1", 35, 10, offset_s=7)
    r = PlanRunner(p, SPEC, 0, key="p")
    r.request(q, key="q", activation="asap")
    r.step()  # 1 s into the first green
    states, switches = run_trace(r, 200)
    assert len(switches) == 1
    sw = switches[0]
    assert phase_kind(p.phases[sw.exit_phase].state) == "green"
    assert q.phases[sw.entry_phase - 1].state == p.phases[sw.exit_phase].state  # a transition q makes itself
    assert r.key == "q"


def test_next_cycle_and_at_activations():
    p = four_phase("J1", 20, 20)
    q = four_phase("J1", 30, 12)
    r = PlanRunner(p, SPEC, 0, key="p")
    run_trace(r, 30)
    r.request(q, key="q", activation="next_cycle")
    _, sw = run_trace(r, 200)
    assert sw[0].t_s >= p.cycle_s  # not before the running plan's next cycle starts
    r = PlanRunner(p, SPEC, 0, key="p")
    r.request(q, key="q", activation="at", at_s=150)
    _, sw = run_trace(r, 300)
    assert sw[0].t_s >= 150


def test_no_switch_before_a_full_cycle_of_the_plan_entered():
    p = four_phase("J1", 20, 20)
    q = four_phase("J1", 30, 12)
    r = PlanRunner(p, SPEC, 0, key="p")
    r.request(q, key="q")
    _, sw = run_trace(r, 200)
    t_in = sw[0].t_s
    r.request(p, key="p2")
    _, sw2 = run_trace(r, 300)
    assert sw2[0].t_s - t_in >= q.cycle_s


def test_unsafe_junction_is_refused_and_a_safe_one_found():
    p = four_phase("J1", 20, 20)
    q = four_phase("J1", 30, 12)
    # leaving p's first green straight into q's other green skips yellow and all-red
    assert transition_errors(p, 0, q, 4, SPEC)
    assert not transition_errors(p, 0, q, 1, SPEC)
    assert find_transition(p, q, SPEC) == (0, 1)
    assert entry_candidates(p, 0, q)[0] == 1


def test_plan_with_no_safe_entry_is_unreachable():
    # both plans are safe on their own; every junction breaks a rule (missing yellow, or a green run over its maximum)
    spec = SignalSpec("J1", min_green_s=np.array([5, 5]), max_green_s=np.array([12, 12]), yellow_s=np.array([3, 3]),
                      redamber_s=np.array([0, 0]), allred_s=2, conflicts=np.array([[False, True], [True, False]]))
    p = SignalPlan("J1", 20, 0, (Phase("Gr", 5), Phase("yr", 3, kind="yellow"), Phase("rr", 2, kind="allred"),
                                 Phase("rG", 5), Phase("ry", 3, kind="yellow"), Phase("rr", 2, kind="allred")))
    q = SignalPlan("J1", 10, 0, (Phase("rG", 10),))
    assert check_plan(p, spec) == [] and check_plan(q, spec) == []
    assert find_transition(p, q, spec) is None
    r = PlanRunner(p, spec, 0, key="p")
    assert r.reachable(q) is None
    r.request(q, key="q")
    _, sw = run_trace(r, 200)
    assert sw == [] and r.key == "p"


greens = st.integers(min_value=5, max_value=40)


@settings(max_examples=60, deadline=None)
@given(g=st.tuples(greens, greens, greens, greens), yellow=st.integers(3, 5), allred=st.integers(2, 4),
       offset=st.integers(0, 200), t_req=st.integers(0, 150),
       activation=st.sampled_from(["asap", "next_cycle", "at"]), at_s=st.integers(0, 200))
def test_switching_never_shortens_a_phase_and_the_trace_is_safe(g, yellow, allred, offset, t_req, activation, at_s):
    p = four_phase("J1", g[0], g[1], 0)
    q = four_phase("J1", g[2], g[3], offset % 97, yellow=yellow, allred=allred)
    assert check_plan(p, SPEC) == [] and check_plan(q, SPEC) == []
    r = PlanRunner(p, SPEC, 0, key="p")
    assert r.phase == 0 and r.elapsed_s == 0
    segments: list[list] = []  # [key, phase, seconds shown]
    states: list[str] = []
    switches = []
    t = 0
    back_requested = False
    while t < 5000:
        if t == t_req:
            r.request(q, key="q", activation=activation, at_s=at_s)
        if r.key == "q" and not back_requested:
            r.request(p, key="p2", activation="asap")
            back_requested = True
        if r.key == "p2" and r.phase == 0 and r.elapsed_s == 0 and states:
            break  # back on p at the start of its cycle: the trace wraps consistently
        if not segments or segments[-1][0] != r.key or segments[-1][1] != r.phase or r.elapsed_s == 0:
            segments.append([r.key, r.phase, 0])
        segments[-1][2] += 1
        states.append(r.state)
        sw = r.step()
        if sw is not None:
            switches.append(sw)
        t += 1
    assert [s.to_key for s in switches] == ["q", "p2"], switches
    q_sw = switches[0]
    if activation == "at":
        assert q_sw.t_s >= at_s
    assert q_sw.t_s >= t_req
    plans = {"p": p, "q": q, "p2": p}
    for key, k, shown in segments:
        assert shown == plans[key].phases[k].duration_s, (key, k, shown)  # never cut, never stretched
    for sw in switches:
        assert phase_kind(plans[sw.from_key].phases[sw.exit_phase].state) == "green"
    # the trace as one cyclic plan must satisfy every safety rule of the spec
    phases, run = [], None
    for s in states:
        if run and run[0] == s:
            run[1] += 1
        else:
            run = [s, 1]
            phases.append(run)
    trace = SignalPlan("J1", len(states), 0, tuple(Phase(s, n, kind=phase_kind(s)) for s, n in phases))
    assert check_plan(trace, SPEC) == []


def test_advance_to_restarts_after_a_long_stall():
    r = PlanRunner(four_phase("J1"), SPEC, 0)
    assert r.advance_to(100) == [] and r.t_s == 100
    r.advance_to(10**6, max_steps=1000)
    assert r.t_s == 10**6


def test_runner_refuses_empty_plan():
    with pytest.raises(ValueError):
        PlanRunner(SignalPlan("J1", 0, 0, ()), SPEC, 0)


@settings(max_examples=40, deadline=None)
@given(g=st.tuples(greens, greens, greens, greens), t_req=st.integers(0, 100),
       jumps=st.lists(st.integers(1, 90), min_size=1, max_size=30))
def test_advance_to_equals_stepping(g, t_req, jumps):
    p, q = four_phase("J1", g[0], g[1]), four_phase("J1", g[2], g[3], 11)
    a, b = PlanRunner(p, SPEC, 0, key="p"), PlanRunner(p, SPEC, 0, key="p")
    t, sw_a, sw_b = 0, [], []
    for dt in jumps:
        if t <= t_req < t + dt:
            a.request(q, key="q")
            b.request(q, key="q")
        t += dt
        sw_a += a.advance_to(t)
        while b.t_s < t:
            s = b.step()
            if s is not None:
                sw_b.append(s)
        assert (a.key, a.phase, a.elapsed_s, a.program_s, a.state) == (b.key, b.phase, b.elapsed_s, b.program_s,
                                                                        b.state)
    assert sw_a == sw_b


def test_transition_cache_is_keyed_by_plan_contents():
    cache = TransitionCache()
    p, q = four_phase("J1", 20, 20), four_phase("J1", 30, 12)
    assert find_transition(p, q, SPEC, cache=cache) is not None
    misses = cache.misses
    assert find_transition(four_phase("J1", 20, 20), four_phase("J1", 30, 12), SPEC, cache=cache) is not None
    assert cache.misses == misses and cache.hits >= 1


@pytest.mark.parametrize("offset", [0, 1, 29, 51])
def test_program_state_follows_offset_semantics(offset):
    plan = four_phase("J1", 25, 15, offset_s=offset)
    per_second = [ph.state for ph in plan.phases for _ in range(ph.duration_s)]
    for t in range(0, 3 * plan.cycle_s, 7):
        k, pt, state = program_state(plan, t)
        assert pt == (t - offset) % plan.cycle_s and state == per_second[pt] == plan.phases[k].state
    # a runner started at the beginning of a phase runs exactly the undisturbed schedule from there on
    t0 = next(t for t in range(plan.cycle_s) if program_state(plan, t)[1] == 0)
    r = PlanRunner(plan, SPEC, t0)
    for t in range(t0, t0 + 2 * plan.cycle_s):
        assert r.state == program_state(plan, t)[2]
        r.step()
