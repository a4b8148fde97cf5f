"""bench.swap_halves: the swapped plan sets carry one plan's durations and the other's offsets."""

from __future__ import annotations

import pytest

from bench.swap_halves import swap
from engine.plan import Phase, PlanSet, make_plan
from sim.planio import additional_to_planset
from sim.scenario import compile_scenario


def test_swapped_halves_take_durations_from_one_plan_and_offsets_from_the_other():
    comp = compile_scenario("grid-2x2")
    own = additional_to_planset(comp.scenario.net_file)
    other = PlanSet(plans=tuple(
        make_plan(p.signal_id, [Phase(ph.state, ph.duration_s + (2 if k == 0 else 0), kind=ph.kind)
                                for k, ph in enumerate(p.phases)], p.offset_s + 7)
        for p in own.plans))
    out = swap(comp, own, other)
    assert list(out) == ["A", "B", "A splits + B offsets", "B splits + A offsets"]
    for i, p in enumerate(own.plans):
        q = other.plans[i]
        mixed = out["A splits + B offsets"].plans[i]
        assert [ph.duration_s for ph in mixed.phases] == [ph.duration_s for ph in p.phases]
        assert mixed.offset_s == q.offset_s % mixed.cycle_s
        back = out["B splits + A offsets"].plans[i]
        assert [ph.duration_s for ph in back.phases] == [ph.duration_s for ph in q.phases]
        assert back.offset_s == p.offset_s % back.cycle_s


def test_plans_with_different_phase_sequences_are_refused():
    comp = compile_scenario("grid-2x2")
    own = additional_to_planset(comp.scenario.net_file)
    p0 = own.plans[0]
    short = PlanSet(plans=(make_plan(p0.signal_id, list(p0.phases[:-1]) + [p0.phases[0]], 0), *own.plans[1:]))
    with pytest.raises(SystemExit, match="phase sequences differ"):
        swap(comp, own, short)
