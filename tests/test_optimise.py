"""engine.optimise: safe plans, clear errors without files, determinism, warm start, objective, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import GronvagError
from engine.optimise import OptimiseOptions, Pin, build_instance, current_solution, optimise, to_planset, validate
from engine.optimise.explain import clashing_constraints
from engine.optimise.model import CapOracle, SolveParams, SplitModel
from engine.optimise.solution import SignalTiming, Solution
from engine.safety import check_plan

FAST = dict(time_limit_s=6.0, search_rounds=25, workers=2, seed=3)


@pytest.fixture(scope="module")
def corridor():
    from sim.scenario import compile_scenario

    return compile_scenario("stockholm-corridor")


@pytest.fixture(scope="module")
def grid():
    from sim.scenario import compile_scenario

    return compile_scenario("grid-4x4")


@pytest.fixture(scope="module")
def corridor_result(corridor):
    inst = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST), scenario="stockholm-corridor")
    return inst, optimise(inst)


@pytest.fixture(scope="module")
def grid_result(grid):
    inst = build_instance(grid.net, grid.demand, OptimiseOptions(**FAST), scenario="grid-4x4")
    return inst, optimise(inst)


@pytest.mark.parametrize("which", ["corridor_result", "grid_result"])
def test_every_signal_passes_check_plan_and_validate(which, request):
    inst, res = request.getfixturevalue(which)
    ps = to_planset(inst, res.solution)
    assert len(ps.plans) == inst.net.n_signals
    for plan in ps.plans:
        s = inst.net.signal_index[plan.signal_id]
        assert check_plan(plan, inst.net.signal_spec(s)) == []
    assert validate(inst, res.solution) == []


@pytest.mark.parametrize("which", ["corridor_result", "grid_result"])
def test_optimised_objective_not_above_current(which, request):
    inst, res = request.getfixturevalue(which)
    cur_obj, _ = res.current
    assert res.solution.objective <= cur_obj + 1e-6
    assert res.solution.objective < cur_obj  # both scenarios leave room for improvement


def test_transitions_kept_and_common_cycle(corridor_result):
    inst, res = corridor_result
    for sig, t in zip(inst.signals, res.solution.timings, strict=True):
        d = np.array(t.durations_s)
        assert np.array_equal(d[~sig.adjustable], sig.base_s[~sig.adjustable])
        assert inst.options.cycle_min_s <= t.cycle_s <= inst.options.cycle_max_s
    assert len({t.cycle_s for t in res.solution.timings}) == 1  # one coordination group on the corridor


def test_x_cap_holds_exactly_where_attainable(corridor_result):
    inst, res = corridor_result
    oracle = CapOracle(inst.signals, inst.options.max_dos)
    for i, (sig, t) in enumerate(zip(inst.signals, res.solution.timings, strict=True)):
        assert t.cap_enforced == oracle.attainable(i, t.cycle_s)
        if t.cap_enforced:
            assert sig.violations(np.array(t.durations_s), inst.options.max_dos) == []


def test_deterministic_with_seed(corridor, corridor_result):
    inst, res = corridor_result
    inst2 = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST), scenario="stockholm-corridor")
    res2 = optimise(inst2)
    assert res2.solution.timings == res.solution.timings


@pytest.mark.parametrize("scenario", ["corridor", "grid"])
def test_warm_start_current_plan_is_feasible(scenario, request):
    comp = request.getfixturevalue(scenario)
    inst = build_instance(comp.net, comp.demand, OptimiseOptions())
    cur = current_solution(inst)
    assert validate(inst, cur) == []
    g = inst.groups[0]
    sigs = [inst.signals[i] for i in g.members]
    model = SplitModel(sigs, g.base_cycle_s, period_h=1.0, stop_cost_s=10.0, caps=[None] * len(sigs),
                       hint=[s.base_s for s in sigs])
    model.fix([s.base_s for s in sigs])
    sol = model.solve(SolveParams(5.0, 1, 1))
    assert sol.status in ("OPTIMAL", "FEASIBLE")
    assert all(np.array_equal(a, s.base_s) for a, s in zip(sol.durations, sigs, strict=True))


def test_validate_catches_broken_solutions(corridor_result):
    inst, res = corridor_result
    t = res.solution.timings[0]
    d = list(t.durations_s)
    sig = inst.signals[0]
    adj = [p for p in range(sig.n_phases) if sig.adjustable[p]]
    fixed = next(p for p in range(sig.n_phases) if not sig.adjustable[p])
    bad = []
    d1 = d.copy()
    d1[fixed] += 1  # a transition stretched
    bad.append(SignalTiming(t.signal_id, t.cycle_s + 1, t.offset_s, tuple(d1), t.cap_enforced))
    d2 = d.copy()
    d2[adj[0]] = 1  # below every minimum green
    d2[adj[1]] += d[adj[0]] - 1
    bad.append(SignalTiming(t.signal_id, t.cycle_s, t.offset_s, tuple(d2), t.cap_enforced))
    bad.append(SignalTiming(t.signal_id, t.cycle_s, t.cycle_s, tuple(d), t.cap_enforced))  # offset out of range
    for b in bad:
        broken = Solution((b, *res.solution.timings[1:]))
        assert validate(inst, broken), b


def test_safety_sums_agree_with_check_plan(corridor):
    """Random durations: the instance's linear constraints hold exactly when engine.safety.check_plan passes."""
    from engine.optimise.solution import signal_plan

    inst = build_instance(corridor.net, corridor.demand, OptimiseOptions())
    rng = np.random.default_rng(0)
    for sig in inst.signals:
        spec = inst.net.signal_spec(sig.index)
        for _ in range(40):
            d = sig.base_s.copy()
            adj = np.flatnonzero(sig.adjustable)
            d[adj] = rng.integers(1, 40, adj.size)
            d[adj] = np.clip(d[adj], 1, None)
            ours = [e for e in sig.violations(d) if "bounded by" not in e]
            t = SignalTiming(sig.signal_id, int(d.sum()), 0, tuple(int(v) for v in d), False)
            theirs = check_plan(signal_plan(sig, t, "x", (0.0, 3600.0)), spec)
            assert bool(ours) == bool(theirs), (sig.signal_id, d, ours, theirs)


# ------------------------------------------------------------------------------------------ infeasible requests


def test_infeasible_pin_names_signal_and_clash(corridor):
    opts = OptimiseOptions(pins=(Pin("J1", 0, 100),), cycle_max_s=110)
    with pytest.raises(GronvagError) as err:
        build_instance(corridor.net, corridor.demand, opts)
    msg = str(err.value)
    assert "J1" in msg and "pin J1:0=100 s" in msg
    assert "\n" not in msg


def test_clash_is_minimal(corridor):
    inst_opts = OptimiseOptions(pins=(Pin("J1", 5, 30),), cycle_max_s=50)
    inst = build_instance(corridor.net, corridor.demand, OptimiseOptions())
    sig = inst.signals[0]
    from dataclasses import replace

    sig = replace(sig, pinned={5: 30}, lo_s=sig.lo_s, hi_s=sig.hi_s)
    clash = clashing_constraints(sig, inst_opts)
    assert "pin J1:5=30 s" in clash and "cycle at most 50 s (--cycle-max)" in clash
    assert len(clash) <= 6


def test_cli_infeasible_exit_2_and_no_files(tmp_path, capsys):
    from engine.optimise.cli import optimise_main

    out = tmp_path / "plan"
    rc = optimise_main(["stockholm-corridor", "--out", str(out), "--cycle-max", "45", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("gronvag: error: signal J") and "cycle at most 45 s" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, text", [
    (["--signals", "nope"], "no traffic light 'nope'"),
    (["--pin", "J1:99=10"], "phases 0-9"),
    (["--pin", "J1-0=10"], "bad --pin"),
    (["--cycle-min", "90", "--cycle-max", "60"], "is empty"),
])
def test_cli_bad_requests(tmp_path, capsys, argv, text):
    from engine.optimise.cli import optimise_main

    rc = optimise_main(["stockholm-corridor", "--out", str(tmp_path / "o"), "--quiet", *argv])
    assert rc == 2
    assert text in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_writes_all_outputs_atomically(tmp_path):
    from engine.optimise.cli import optimise_main
    from engine.plan import read_planset

    out = tmp_path / "o"
    argv = ["stockholm-corridor", "--out", str(out), "--time-limit", "4", "--search-rounds", "5", "--quiet",
            "--signals", "J1,J2,J3", "--pin", "J2:5=20"]
    assert optimise_main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [".gronvag-optimise", "plan.add.xml", "plan.json", "summary.json", "summary.md"]
    ps = read_planset(out / "plan.json")
    assert [p.signal_id for p in ps.plans] == ["J1", "J2", "J3"]
    assert ps.plans[1].phases[5].duration_s == 20
    summary = json.loads((out / "summary.json").read_text())
    assert {s["signal_id"] for s in summary["signals"]} == {"J1", "J2", "J3"}
    # the model as it took the demand: the corridor's hour in four 15-min analysis periods
    assert "4 analysis periods of 15 min" in summary["predicted"]["model"]
    assert "4 analysis periods of 15 min" in (out / "summary.md").read_text()
    assert "phase 5 pinned at 20 s" in summary["signals"][1]["binding"]
    # a second run may replace an earlier output folder, and nothing is left behind
    assert optimise_main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_write_outputs_all_or_nothing(tmp_path):
    from engine.optimise.output import write_outputs

    out = tmp_path / "o"
    with pytest.raises(TypeError):
        write_outputs(out, {"a.txt": "fine", "b.txt": object()})
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("keep")
    with pytest.raises(GronvagError):
        write_outputs(tmp_path / "other", {"a.txt": "x"})
    assert (tmp_path / "other" / "x").read_text() == "keep"


def test_the_optimiser_scores_with_the_models_defaults_or_the_users_constants(corridor):
    """The optimiser's model is the models' default (analysis periods, giving-way constants), as predict's; a user's
    constants are used as given."""
    from dataclasses import replace

    from engine.optimise.instance import optimiser_model_params
    from models.evaluate import ModelParams

    inst = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST), scenario="stockholm-corridor")
    assert inst.ctx.params == optimiser_model_params() == ModelParams()
    assert inst.ctx.params.cyclic_periods == "bins"
    mine = replace(ModelParams(), sat_flow_scale=0.9, cyclic_periods="window")
    inst2 = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST), scenario="stockholm-corridor",
                           model_params=mine)
    assert inst2.ctx.params == mine
