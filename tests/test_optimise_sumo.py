"""The optimiser's output files in SUMO: `sumo -a plan.add.xml` loads them, runs 60 s, and activates the new program."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from tests.conftest import run_script_json


@pytest.fixture(scope="module")
def corridor_plan(tmp_path_factory):
    from engine.optimise.cli import optimise_main

    out = tmp_path_factory.mktemp("opt") / "plan"
    rc = optimise_main(["stockholm-corridor", "--out", str(out), "--time-limit", "4", "--search-rounds", "8",
                        "--quiet"])
    assert rc == 0
    return out


def _scenario():
    from sim.scenario import load_scenario

    return load_scenario("stockholm-corridor")


def test_sumo_binary_loads_and_runs_60_s(corridor_plan, tmp_path):
    from sim import sumo

    sc = _scenario()
    log = tmp_path / "sumo.log"
    cmd = [sumo.binary("sumo"), "-n", str(sc.net_file), "-r", ",".join(map(str, sc.route_files)),
           "-a", ",".join(map(str, [*sc.additional_files, corridor_plan / "plan.add.xml"])),
           "--begin", f"{sc.begin_s:g}", "--end", f"{sc.begin_s + 60:g}", "--no-step-log", "true",
           "--log", str(log), "--seed", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Error" not in log.read_text()


def test_sumo_activates_the_optimised_program(corridor_plan):
    """SUMO runs the program loaded last: the new programID with the optimised durations and offset."""
    sc = _scenario()
    plan = json.loads((corridor_plan / "plan.json").read_text())
    want = {p["signal_id"]: (p["program_id"], [ph["duration_s"] for ph in p["phases"]]) for p in plan["plans"]}
    script = textwrap.dedent(f"""
        import json, libsumo as ls
        ls.start(["sumo", "-n", {str(sc.net_file)!r}, "-r", {",".join(map(str, sc.route_files))!r},
                  "-a", {",".join(map(str, [*sc.additional_files, corridor_plan / "plan.add.xml"]))!r},
                  "--begin", "{sc.begin_s:g}", "--no-step-log", "true", "--no-warnings", "true"])
        ls.simulationStep()
        out = {{}}
        for tid in ls.trafficlight.getIDList():
            prog = ls.trafficlight.getProgram(tid)
            logic = [lg for lg in ls.trafficlight.getAllProgramLogics(tid) if lg.programID == prog][0]
            out[tid] = [prog, [int(round(p.duration)) for p in logic.phases]]
        ls.close()
        print(json.dumps(out))
    """)
    got = run_script_json(script, 120)
    for sid, (prog, durs) in want.items():
        assert got[sid][0] == prog == "gronvag-opt"
        assert got[sid][1] == durs


@pytest.mark.timeout(300)
def test_sim_polish_keeps_only_safe_steps_that_lower_the_training_delay(tmp_path):
    """The SUMO polish on grid-2x2 (15 min window): every plan it keeps validates; its training delay never rises;
    the same seed gives the same plan; the summary records what it did."""
    from engine.optimise.cli import optimise_main

    runs = []
    for k in range(2):
        out = tmp_path / f"p{k}"
        rc = optimise_main(["grid-2x2", "--end", "900", "--out", str(out), "--time-limit", "3", "--search-rounds",
                            "5", "--sim-polish", "6", "--sim-seeds", "1001,1002", "--quiet"])
        assert rc == 0
        runs.append(out)
    sp = json.loads((runs[0] / "summary.json").read_text())["sim_polish"]
    assert 1 <= sp["evaluations"] <= 6
    assert sp["end_delay_s"] <= sp["start_delay_s"]
    kept = [a["delay_s"] for a in sp["accepted"]]
    assert kept == sorted(kept, reverse=True)
    assert "## SUMO polish" in (runs[0] / "summary.md").read_text()
    # a plan scored without a search (a polished one, the validation's fallback) has no group objective: the
    # summary leaves it out instead of printing nan
    from engine.optimise.output import render_markdown

    summary = json.loads((runs[0] / "summary.json").read_text())
    for g in summary["groups"]:
        g["current_objective"] = g["objective"] = float("nan")
    assert "nan" not in render_markdown(summary) and "group objective" not in render_markdown(summary)

    def timings(out):
        plans = json.loads((out / "plan.json").read_text())["plans"]
        return [(p["signal_id"], p["offset_s"], [ph["duration_s"] for ph in p["phases"]]) for p in plans]

    assert timings(runs[0]) == timings(runs[1])


def test_polish_steps_are_valid_neighbours():
    """Every proposal of the polish's step generator passes the optimiser's independent validate()."""
    import numpy as np

    from engine.optimise import OptimiseOptions, build_instance, current_solution, validate
    from engine.optimise.simpolish import _Proposer
    from sim.scenario import compile_scenario

    comp = compile_scenario("stockholm-corridor")
    inst = build_instance(comp.net, comp.demand, OptimiseOptions(max_dos=2.0))
    sol = current_solution(inst)
    prop = _Proposer(inst, np.random.default_rng(0), shared=True)
    kinds = set()
    for step in (6, 3, 1):
        for _ in range(20):
            cand, what = prop.propose(sol, step)
            assert cand is not None and not validate(inst, cand), what
            kinds.add(what.split(": ")[1].split(" ")[0] if ": " in what else what)
            changed = [i for i in range(len(inst.signals)) if cand.timings[i] != sol.timings[i]]
            assert changed
    assert {"offset", "cycle", "shared"} <= kinds
    # a shared step moves the same phases by the same seconds at every signal of one phase structure
    shared = [c for c in (prop.propose(sol, 2) for _ in range(60)) if "shared" in c[1]]
    assert shared
    for cand, what in shared:
        ids = what.split(": ")[0].split("+")
        assert len(ids) > 1
        idx = [next(i for i, s in enumerate(inst.signals) if s.signal_id == sid) for sid in ids]
        deltas = {tuple(cand.durations(i) - sol.durations(i)) for i in idx}
        assert len(deltas) == 1 and sorted(set(next(iter(deltas)))) == [-2, 0, 2], what
        assert all(cand.timings[i] == sol.timings[i] for i in range(len(inst.signals)) if i not in idx)
    # without --sim-shared the polish proposes no shared steps (the default: earlier results stay reproducible)
    plain = _Proposer(inst, np.random.default_rng(0), shared=False)
    assert not any("shared" in plain.propose(sol, 2)[1] for _ in range(60))


def _corridor_polish():
    import numpy as np

    from engine.optimise import OptimiseOptions, build_instance, current_solution
    from engine.optimise.simpolish import _Proposer
    from sim.scenario import compile_scenario

    comp = compile_scenario("stockholm-corridor")
    inst = build_instance(comp.net, comp.demand, OptimiseOptions(max_dos=2.0))
    return inst, current_solution(inst), _Proposer(inst, np.random.default_rng(0), shared=False)


def test_sweep_moves_are_every_valid_shared_step():
    """shared_moves: every ordered pair of adjustable phases of every group of like signals, moved by the same
    seconds at each member, each plan valid, in a fixed order."""
    import numpy as np

    from engine.optimise import validate
    from engine.optimise.simpolish import shared_moves

    inst, sol, prop = _corridor_polish()
    moves = shared_moves(inst, prop, sol, 2)
    assert [m[1] for m in moves] == [m[1] for m in shared_moves(inst, prop, sol, 2)]
    pairs = sum(len(a) * (len(a) - 1) for a in (np.flatnonzero(inst.signals[g[0]].adjustable) for g in prop.groups))
    assert 0 < len(moves) <= pairs
    for cand, what, (g, p, q) in moves:
        assert not validate(inst, cand), what
        for i in prop.groups[g]:
            d = cand.durations(i) - sol.durations(i)
            assert d[p] == -2 and d[q] == 2 and np.count_nonzero(d) == 2
        assert all(cand.timings[i] == sol.timings[i] for i in range(len(inst.signals)) if i not in prop.groups[g])


@pytest.mark.parametrize("confirm_gain, kept", [(1.0, True), (0.0, False)])
def test_sweep_keeps_its_best_step_only_when_the_confirmation_seeds_show_the_gain_again(confirm_gain, kept):
    """_sweep without SUMO (a stand-in measure): the best of the sweep passes the noise rule on the training seeds;
    it is kept only if it beats the plan on the confirmation seeds too; after a kept step the next sweep never
    offers the step back, and stops when nothing beats the noise."""
    import numpy as np

    from engine.optimise.simpolish import SimPolishOptions, _sweep, shared_moves

    inst, sol, prop = _corridor_polish()
    opts = SimPolishOptions(budget=60, seeds=(1, 2, 3), confirm_seeds=(7, 8, 9), sweep=True)
    target = shared_moves(inst, prop, sol, 2)[3]
    good = {tuple(target[0].durations(i)) for i in range(len(inst.signals))}
    calls = []

    def measure(sols, seeds=opts.seeds):
        calls.append((len(sols), tuple(seeds)))
        out = []
        for s in sols:
            hit = all(tuple(s.durations(i)) in good for i in range(len(inst.signals)))
            gain = (1.0 if seeds == opts.seeds else confirm_gain) if hit else 0.0
            out.append(np.array([80.0, 70.0, 75.0]) - gain)
        return out

    accepted, sweeps = [], []
    best, vec, evals = _sweep(inst, prop, sol, measure([sol])[0], opts, measure, _NoReport(), accepted, sweeps)
    assert sweeps[0]["best"] == target[1]
    assert [s for s in calls if s[1] == opts.confirm_seeds] == [(1, opts.confirm_seeds)] * 2  # the plan, the step
    assert (best.timings == target[0].timings) == kept and sweeps[0]["kept"] == kept
    assert (best.timings == sol.timings) != kept
    assert len(sweeps) == (2 if kept else 1) and evals == sum(n for n, _ in calls[1:])
    if kept:  # the second sweep: every step from the new plan but the step back; none gains, so it stops
        assert accepted and "confirmed" in accepted[0]["step"] and vec.mean() == 74.0
        assert sweeps[1]["moves"] == len(shared_moves(inst, prop, best, 2)) - 1 and not sweeps[1]["kept"]
    else:
        assert accepted == [] and vec.mean() == 75.0


class _NoReport:
    def stage(self, text):
        pass


def test_polish_keeps_a_step_only_when_its_gain_beats_the_noise():
    """gain_is_real: a gain seen on every seed is kept; the same mean gain from one lucky seed is not; a gain below
    min_gain is not; z = 0 keeps any mean gain above min_gain."""
    from engine.optimise.simpolish import gain_is_real

    ref = [80.0, 70.0, 75.0]
    steady = [78.0, 68.5, 73.0]  # -1.8 on average, every seed lower
    lucky = [86.0, 60.0, 73.6]  # the same -1.8 on average, from one seed
    assert gain_is_real(steady, ref, 0.002, 1.0)
    assert not gain_is_real(lucky, ref, 0.002, 1.0)
    assert gain_is_real(lucky, ref, 0.002, 0.0)
    assert not gain_is_real([79.9, 69.9, 74.9], ref, 0.002, 1.0)  # -0.1 s: below 0.2 % of 75
    assert not gain_is_real(ref, ref, 0.002, 0.0)
    assert gain_is_real([74.0], [75.0], 0.002, 1.0) and not gain_is_real([75.0], [75.0], 0.002, 1.0)


def _grid_result():
    from engine.optimise import OptimiseOptions, build_instance
    from engine.optimise.run import Reporter, optimise
    from sim.scenario import compile_scenario

    comp = compile_scenario("grid-2x2", end_s=900)
    inst = build_instance(comp.net, comp.demand, OptimiseOptions(time_limit_s=2.0, search_rounds=5),
                          scenario=comp.scenario.name)
    return comp, inst, optimise(inst, Reporter())


@pytest.mark.parametrize("chosen, kept", [([70.0, 80.0, 75.0], "optimised"),  # lower on every seed
                                          ([78.0, 79.0, 76.0], "programs"),  # mixed: inside the noise
                                          ([90.0, 95.0, 91.0], "programs")])  # worse
def test_sim_validate_keeps_the_plan_only_when_it_beats_the_programs_beyond_the_noise(monkeypatch, chosen,
                                                                                       kept):
    """The hold-out stage with SUMO's figures made up (the plan's, then the programs', seed by seed): a plan lower on
    every seed stays; one inside the noise or worse is replaced by the scenario's own programs, which validate."""
    import numpy as np

    import sim.calibrate
    from engine.optimise.run import Reporter
    from engine.optimise.simvalidate import SimValidateOptions, sim_validate
    from engine.optimise.solution import current_solution, validate

    comp, inst, res = _grid_result()
    programs = [76.0, 81.0, 77.0]

    def fake_measure(comp_, plansets, seeds, workers=2, protocol="default", cache=None):
        assert len(plansets) == 2 and list(seeds) == [2001, 2002, 2003]
        return [[{"benchmark_delay_s": v, "n_tripinfo": 100} for v in vals] for vals in (chosen, programs)]

    monkeypatch.setattr(sim.calibrate, "measure", fake_measure)
    out, out_inst, info = sim_validate(inst, res, inst, comp, SimValidateOptions(seeds=(2001, 2002, 2003)),
                                       Reporter())
    assert info["kept"] == kept
    assert info["paired_difference_s"] == pytest.approx(np.mean(chosen) - np.mean(programs), abs=1e-3)
    if kept == "optimised":
        assert out is res
    else:
        assert out.solution.timings == current_solution(inst).timings
        assert not validate(out_inst, out.solution)


def test_sim_validate_does_not_run_sumo_when_the_chosen_plan_is_the_programs(monkeypatch):
    import sim.calibrate
    from engine.optimise.run import Reporter, result_of
    from engine.optimise.simvalidate import SimValidateOptions, sim_validate
    from engine.optimise.solution import current_solution

    comp, inst, _ = _grid_result()
    res = result_of(inst, current_solution(inst))

    def no_runs(*a, **k):
        raise AssertionError("SUMO ran")

    monkeypatch.setattr(sim.calibrate, "measure", no_runs)
    out, _, info = sim_validate(inst, res, inst, comp, SimValidateOptions(seeds=(2001,)), Reporter())
    assert out is res and info["kept"] == "programs" and "not run" in info["note"]


@pytest.mark.timeout(300)
def test_sim_validate_in_a_real_run_records_its_figures_and_writes_what_it_kept(tmp_path):
    """gronvag optimise --sim-validate on grid-2x2 (15 min): the summary holds both plans' figures on the validation
    seeds, the decision agrees with them, and the plan written is the one it says it kept."""
    from engine.optimise.cli import optimise_main
    from engine.optimise.simpolish import gain_is_real

    out = tmp_path / "v"
    assert optimise_main(["grid-2x2", "--end", "900", "--out", str(out), "--time-limit", "3", "--search-rounds", "5",
                          "--sim-validate", "2001,2002", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    sv = summary["sim_validate"]
    assert sv["seeds"] == [2001, 2002]
    if "chosen_values" in sv:
        assert len(sv["chosen_values"]) == len(sv["programs_values"]) == 2
        better = gain_is_real(sv["chosen_values"], sv["programs_values"], 0.0, 1.0)
    else:  # the optimiser kept the programs: nothing ran
        better = False
    assert sv["kept"] == ("optimised" if better else "programs")
    assert "## SUMO validation" in (out / "summary.md").read_text()
    if sv["kept"] == "programs":
        from engine.optimise import OptimiseOptions, build_instance
        from engine.optimise.solution import current_solution
        from sim.scenario import compile_scenario

        comp = compile_scenario("grid-2x2", end_s=900)
        inst = build_instance(comp.net, comp.demand, OptimiseOptions(), scenario=comp.scenario.name)
        want = {t.signal_id: list(t.durations_s) for t in current_solution(inst).timings}
        got = {p["signal_id"]: [ph["duration_s"] for ph in p["phases"]]
               for p in json.loads((out / "plan.json").read_text())["plans"]}
        assert got == want


def test_sim_validate_needs_one_period(tmp_path, capsys):
    from engine.optimise.cli import optimise_main

    out = tmp_path / "never"
    assert optimise_main(["grid-2x2", "--end", "900", "--out", str(out), "--periods", "2", "--sim-validate",
                          "2001"]) != 0
    assert "--sim-validate" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.timeout(300)
def test_sim_check_from_the_command_line_records_one_chosen_candidate(tmp_path):
    """gronvag optimise --sim-check on grid-2x2 (10 min, one training seed): the summary lists the candidates with
    their SUMO figures, exactly one chosen, no worse than the current plan on the training seed."""
    from engine.optimise.cli import optimise_main

    out = tmp_path / "c"
    assert optimise_main(["grid-2x2", "--end", "600", "--out", str(out), "--time-limit", "3", "--search-rounds", "5",
                          "--sim-check", "--sim-seeds", "1001", "--sim-cycles", "1", "--sim-rounds", "1",
                          "--sim-stress-seeds", "2001,2002", "--quiet"]) == 0
    cands = json.loads((out / "summary.json").read_text())["sim_check"]["candidates"]
    assert len(cands) >= 2 and sum(c["chosen"] for c in cands) == 1
    chosen = next(c for c in cands if c["chosen"])
    current = [c for c in cands if c["candidate"] == "current plan"]
    assert current and chosen["sumo_delay_s"] <= current[0]["sumo_delay_s"]
    if chosen is not current[0]:  # the stress test (demand x1.1, seeds 2001-2002) ran both; the choice held up
        assert len(chosen["stress_values"]) == len(current[0]["stress_values"]) == 2
        assert chosen["stress_delay_s"] <= current[0]["stress_delay_s"]


def test_sim_stress_refuses_a_negative_scale(tmp_path, capsys):
    from engine.optimise.cli import optimise_main

    out = tmp_path / "c"
    assert optimise_main(["grid-2x2", "--end", "600", "--out", str(out), "--sim-check", "--sim-stress", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sim-stress -1" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("option", ["--sim-seeds", "--sim-stress-seeds", "--sim-validate", "--sim-confirm-seeds"])
def test_a_bad_seed_list_is_refused_up_front_naming_its_option(tmp_path, capsys, option):
    from engine.optimise.cli import optimise_main

    out = tmp_path / "c"
    assert optimise_main(["grid-2x2", "--end", "600", "--out", str(out), "--sim-check", option, "1-x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"gronvag: error: bad {option} '1-x': use e.g. 1-10 or 1,3,5"]
    assert not out.exists()


def test_sweep_confirmation_seeds_must_be_apart_from_the_training_seeds(tmp_path, capsys):
    from engine.optimise.cli import optimise_main

    out = tmp_path / "c"
    assert optimise_main(["grid-2x2", "--end", "600", "--out", str(out), "--sim-polish", "4", "--sim-sweep",
                          "--sim-seeds", "1001-1003", "--sim-confirm-seeds", "1003-1005"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sim-confirm-seeds share seeds [1003] with --sim-seeds" in err[0]
    assert not out.exists()
