"""bench.plan_moves: what-if moves on a scenario's own plan, validated, then run in SUMO paired by seed."""

import re

import pytest

from bench.plan_moves import main, parse_variant


def test_parse_variant_reads_split_and_offset_moves():
    name, moves = parse_variant("both=A+B:0>4=3;B:offset=-5", {"A", "B"})
    assert name == "both"
    assert moves == [(["A", "B"], "split", 0, 4, 3), (["B"], "offset", -5)]
    for bad in ("nomoves", "x=A:0-4=3", "x=C:0>4=3", "x=A:offset=two"):
        with pytest.raises(ValueError, match="variant"):
            parse_variant(bad, {"A", "B"})


def test_a_move_below_the_minimum_green_is_a_one_line_error_before_any_run():
    with pytest.raises(SystemExit, match=r"grid-1x1: variant 'short' is not a valid plan: .*J0_0"):
        main(["grid-1x1", "--variant", "short=J0_0:0>4=24", "--seeds", "1", "--end", "300"])
    with pytest.raises(SystemExit, match="no traffic light 'J9'"):
        main(["grid-1x1", "--variant", "x=J9:0>4=2", "--seeds", "1", "--end", "300"])


def test_the_own_plan_and_a_variant_run_side_by_side(capsys):
    assert main(["grid-1x1", "--variant", "ns+4=J0_0:0>4=4", "--seeds", "1,2", "--end", "600", "--jobs", "1"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if re.match(r"^(own|ns\+4)\s", ln)]
    assert len(rows) == 2
    own, var = (re.findall(r"-?\d+\.\d+", r) for r in rows)
    assert float(own[1]) == 0.0 and len(own) == 2 + 1 + 2  # mean, difference, its SE, two seeds
    assert float(var[0]) > 0 and float(var[1]) == pytest.approx(float(var[0]) - float(own[0]), abs=0.02)


def test_a_cycle_move_spreads_over_the_greens_within_their_bounds():
    from bench.plan_moves import apply_moves
    from engine.optimise.instance import OptimiseOptions, build_instance
    from engine.optimise.solution import current_solution, validate
    from sim.scenario import compile_scenario

    name, moves = parse_variant("longer=*:cycle=6", {"J0_0"})
    assert moves == [(["J0_0"], "cycle", 6)]
    comp = compile_scenario("grid-1x1", end_s=300)
    inst = build_instance(comp.net, comp.demand, OptimiseOptions(), scenario="grid-1x1")
    own = current_solution(inst)
    sol = apply_moves(inst, own, moves)
    t0, t1 = own.timings[0], sol.timings[0]
    sig = inst.signals[0]
    assert t1.cycle_s == t0.cycle_s + 6 == sum(t1.durations_s)
    grew = [i for i, (a, b) in enumerate(zip(t0.durations_s, t1.durations_s, strict=True)) if b != a]
    assert grew and all(sig.adjustable[i] and t1.durations_s[i] > t0.durations_s[i] for i in grew)
    assert all(t1.durations_s[i] <= sig.hi_s[i] for i in range(len(t1.durations_s)))
    assert not validate(inst, sol)
    with pytest.raises(ValueError, match="cannot change by"):
        apply_moves(inst, own, [(["J0_0"], "cycle", 10_000)])
