"""The optimiser's output files in SUMO: `sumo -a plan.add.xml` loads them, runs 60 s, and activates the new program."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


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
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for sid, (prog, durs) in want.items():
        assert got[sid][0] == prog == "gronvag-opt"
        assert got[sid][1] == durs
