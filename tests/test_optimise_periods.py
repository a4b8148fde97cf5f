"""Time-of-day plans (engine.optimise.periods, `gronvag optimise --periods`): periods, transition cycles, and SUMO
running the joined plans second by second as the plans say, with every switch safe."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from engine.errors import GronvagError
from engine.optimise.periods import parse_periods, stretch, transition
from engine.plan import Phase, make_plan
from engine.safety import check_plan
from tests.conftest import run_script_json


def test_parse_periods():
    assert parse_periods("2", 0, 3600) == [(0.0, 1800.0), (1800.0, 3600.0)]
    assert parse_periods("7:00-7:30,7:30-8:00", 25200, 28800) == [(25200.0, 27000.0), (27000.0, 28800.0)]
    assert parse_periods("0-900,900-3600", 0, 3600) == [(0.0, 900.0), (900.0, 3600.0)]
    for bad in ("0-900,1000-3600", "0-100,100-3600", "0-900,900-4000", "x", "0", "7:00"):
        with pytest.raises(GronvagError, match="--periods"):
            parse_periods(bad, 0, 3600)


def _plan(greens, offset, pid="p"):
    phases = [Phase("GGrr", greens[0], 5, 60), Phase("yyrr", 3, kind="yellow"), Phase("rrrr", 2, kind="allred"),
              Phase("rrGG", greens[1], 5, 60), Phase("rryy", 3, kind="yellow"), Phase("rrrr", 2, kind="allred")]
    return make_plan("J", phases, offset, program_id=pid)


def test_stretch_keeps_bounds_and_sums():
    p = _plan((30, 20), 0)
    for length in (20, 40, 60, 90, 130):
        out = stretch(p.phases, length)
        assert out is not None and sum(ph.duration_s for ph in out) == length
        assert all(ph.min_s <= ph.duration_s <= ph.max_s for ph in out if ph.kind == "green")
        assert [ph.duration_s for ph in out if ph.kind != "green"] == [3, 2, 3, 2]
    assert stretch(p.phases, 19) is None and stretch(p.phases, 131) is None


def test_transition_lands_both_plans_at_their_cycle_start():
    from engine.safety import SignalSpec

    conflicts = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], bool)
    spec = SignalSpec(signal_id="J", min_green_s=np.full(4, 5), max_green_s=np.zeros(4, int),
                      yellow_s=np.full(4, 3), redamber_s=np.zeros(4, int), allred_s=2, conflicts=conflicts)
    rng = np.random.default_rng(0)
    for _ in range(200):
        old = _plan(tuple(rng.integers(5, 60, 2)), int(rng.integers(0, 200)))
        new = _plan(tuple(rng.integers(5, 60, 2)), int(rng.integers(0, 200)), "q")
        b = float(rng.integers(100, 5000))
        t1, tr, t2 = transition(old, new, b, spec)
        assert b <= t1 < b + old.cycle_s and (t1 - old.offset_s) % old.cycle_s == 0
        assert (t1 - tr.offset_s) % tr.cycle_s == 0 and t2 == t1 + tr.cycle_s
        assert (t2 - new.offset_s) % new.cycle_s == 0
        assert tr.cycle_s >= 20 and not check_plan(tr, spec)
    with pytest.raises(GronvagError, match="phase sequences"):
        transition(old, make_plan("J", [Phase("GGrr", 30), Phase("yyrr", 3, kind="yellow"),
                                         Phase("rrGG", 30), Phase("rryy", 3, kind="yellow")]), 0, spec)


@pytest.fixture(scope="module")
def corridor_tod(tmp_path_factory):
    from engine.optimise.cli import optimise_main

    out = tmp_path_factory.mktemp("tod") / "plan"
    assert optimise_main(["stockholm-corridor", "--periods", "0-1200,1200-2400,2400-3600", "--time-limit", "6",
                          "--search-rounds", "5", "--out", str(out), "--quiet"]) == 0
    return out


def test_time_of_day_output(corridor_tod):
    plans = json.loads((corridor_tod / "plan.json").read_text())["plans"]
    by_sig: dict[str, list] = {}
    for p in plans:
        by_sig.setdefault(p["signal_id"], []).append(p)
    assert len(by_sig) == 9
    for chain in by_sig.values():
        chain.sort(key=lambda p: p["valid_from_s"])
        assert [p["program_id"] for p in chain] == ["gronvag-opt-p1", "gronvag-opt-p2-transition", "gronvag-opt-p2",
                                                    "gronvag-opt-p3-transition", "gronvag-opt-p3"]
        assert chain[0]["valid_from_s"] == 0 and chain[-1]["valid_to_s"] == 3600
        for a, b in zip(chain, chain[1:], strict=False):
            assert a["valid_to_s"] == b["valid_from_s"]
    summary = json.loads((corridor_tod / "summary.json").read_text())
    assert len(summary["periods"]) == 3 and len(summary["transitions"]) == 18
    xml = (corridor_tod / "plan.add.xml").read_text()
    assert xml.count("<WAUT ") == 9 and xml.count("<wautSwitch ") == 9 * 5
    assert "## Period 3" in (corridor_tod / "summary.md").read_text()


@pytest.mark.timeout(300)
def test_sumo_runs_the_joined_plans_exactly_and_safely(corridor_tod):
    """Every second of the hour, every signal's state in SUMO is the state the valid plan gives at that time
    ((t - offset) mod cycle), and per signal group no green ends without its yellow, no yellow or minimum green is
    cut short, across all switches."""
    from sim.scenario import compile_scenario

    comp = compile_scenario("stockholm-corridor")
    sc = comp.scenario
    script = textwrap.dedent(f"""
        import json, libsumo as ls
        from sim import sumo
        ls.start([sumo.binary("sumo"), "-n", {str(sc.net_file)!r}, "-r", {",".join(map(str, sc.route_files))!r},
                  "-a", {",".join(map(str, [*sc.additional_files, corridor_tod / "plan.add.xml"]))!r},
                  "--begin", "0", "--end", "3600", "--no-step-log", "true", "--no-warnings", "true"])
        ids = ls.trafficlight.getIDList()
        out = {{tid: [] for tid in ids}}
        for _ in range(3599):
            ls.simulationStep()
            for tid in ids:
                out[tid].append(ls.trafficlight.getRedYellowGreenState(tid))
        ls.close()
        print(json.dumps(out))
    """)
    got = run_script_json(script, 280)
    plans = json.loads((corridor_tod / "plan.json").read_text())["plans"]
    net = comp.net
    for sid, states in got.items():
        chain = [p for p in plans if p["signal_id"] == sid]

        def expected(t, chain=chain):
            p = next(p for p in chain if p["valid_from_s"] <= t < p["valid_to_s"])
            pos = (t - p["offset_s"]) % p["cycle_s"]
            for ph in p["phases"]:
                if pos < ph["duration_s"]:
                    return ph["state"]
                pos -= ph["duration_s"]

        # after the step to time T, SUMO shows the state of the second [T - 1, T)
        wrong = [t for t, st in enumerate(states) if st != expected(t)]
        assert not wrong, f"{sid}: {len(wrong)} seconds differ: " + str([(t, states[t], expected(t))
                                                                         for t in wrong[:3]])
        spec = net.signal_spec(net.signal_index[sid])
        for i in range(len(states[0])):
            runs = []
            for st in states:
                c = st[i]
                if runs and runs[-1][0] == c:
                    runs[-1][1] += 1
                else:
                    runs.append([c, 1])
            for k in range(1, len(runs) - 1):  # whole runs only
                c, n = runs[k]
                nxt = runs[k + 1][0]
                if c in "Gg" and spec.yellow_s[i] > 0:
                    assert nxt not in "rs", f"{sid} link {i}: green straight to red"
                if c in "Gg" and runs[k - 1][0] not in "Gg":
                    assert n >= spec.min_green_s[i], f"{sid} link {i}: green of {n} s"
                if c == "y":
                    assert n >= spec.yellow_s[i], f"{sid} link {i}: yellow of {n} s"


def test_periods_refuse_options_they_cannot_honour(tmp_path, capsys):
    from engine.optimise.cli import optimise_main

    for extra in (["--sim-check"], ["--sim-polish", "5"], ["--phase-order"]):
        out = tmp_path / extra[0].strip("-")
        assert optimise_main(["grid-2x2", "--periods", "2", "--out", str(out), *extra, "--quiet"]) == 2
        assert "--periods" in capsys.readouterr().err
        assert not out.exists()
