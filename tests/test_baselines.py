"""Baseline plan files: Webster (SUMO's tlsCycleAdaptation.py / tlsCoordinator.py) and SUMO actuated.

The shared-scenario tests run the real tools and a short SUMO run of each file; the rest checks the pure pieces
(flow expansion, type resolution, minimum-green repair, the coordinator's view of 's' links) by hand.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engine.errors import GronvagError
from sim.baselines import (
    ACTUATED_PROGRAM_ID,
    WEBSTER_PROGRAM_ID,
    WebsterOptions,
    _coordinator_view,
    _repair_min_greens,
    actuated_programs,
    webster_plan,
)
from sim.scenario import Scenario, load_scenario
from sim.tooldemand import _flow_departures, _Types
from tests.conftest import shared_scenario

OPT = WebsterOptions()
SIM_S = 100.0  # simulated seconds of the load-and-run check


def _logics(path: Path) -> dict[str, ET.Element]:
    return {tl.get("id"): tl for tl in ET.parse(path).getroot().iter("tlLogic")}


def _greens(tl: ET.Element) -> list[float]:
    return [float(p.get("duration")) for p in tl.iter("phase") if "G" in p.get("state") and "y" not in p.get("state")]


def _cycle(tl: ET.Element) -> float:
    return sum(float(p.get("duration")) for p in tl.iter("phase"))


def _run_sumo(sc: Scenario, add: Path, sim_s: float = SIM_S) -> tuple[dict[str, tuple[str, int]], int]:
    """Run the scenario with ``add`` loaded last for ``sim_s`` seconds (libsumo); returns the active program id and
    type (0 static, 3 actuated) of every signal and the number of vehicles that departed."""
    from sim import sumo

    ls = sumo.connection_module("libsumo")
    cmd = ["sumo", "-n", str(sc.net_file), "-r", ",".join(map(str, sc.route_files)),
           "-a", ",".join(map(str, [*sc.additional_files, add])), "--begin", f"{sc.begin_s:g}",
           "--end", f"{sc.begin_s + sim_s:g}", "--no-step-log", "true", "--no-warnings", "true", "--seed", "1"]
    ls.start(cmd)
    try:
        active = {}
        for tid in ls.trafficlight.getIDList():
            prog = ls.trafficlight.getProgram(tid)
            kind = [lg.type for lg in ls.trafficlight.getAllProgramLogics(tid) if lg.programID == prog][0]
            active[tid] = (prog, kind)
        departed = 0
        while ls.simulation.getTime() < sc.begin_s + sim_s - 0.5:
            ls.simulationStep()
            departed += ls.simulation.getDepartedNumber()
    finally:
        ls.close()
    return active, departed


def _listing(folder: Path) -> list[tuple[str, float]]:
    return sorted((p.name, p.stat().st_mtime) for p in folder.iterdir())


# --------------------------------------------------------------------------------------------------------------
# Webster on the shared scenarios


def test_webster_cologne1_routes_trips_and_loads(tmp_path):
    folder = shared_scenario("cologne1")
    before = _listing(folder)
    sc = load_scenario(folder)
    plan = webster_plan(sc, tmp_path)
    assert plan.parent == tmp_path and plan.is_file()
    logics = _logics(plan)
    assert list(logics) == ["GS_cluster_357187_359543"]
    tl = logics["GS_cluster_357187_359543"]
    assert tl.get("programID") == WEBSTER_PROGRAM_ID
    assert OPT.min_cycle_s <= _cycle(tl) <= OPT.max_cycle_s
    assert min(_greens(tl)) >= OPT.min_green_s
    # the shipped 5 s yellows are kept (the tool writes one yellow time for all)
    assert {p.get("duration") for p in tl.iter("phase") if "y" in p.get("state")} == {"5"}
    summary = json.loads((tmp_path / "cologne1.webster" / "summary.json").read_text())
    assert summary["vehicles_counted"] == 2015
    assert any("duarouter" in c for c in summary["conversions"])
    active, departed = _run_sumo(sc, plan)
    assert active == {"GS_cluster_357187_359543": (WEBSTER_PROGRAM_ID, 0)}
    assert departed > 20
    assert _listing(folder) == before  # nothing written into the scenario folder


@pytest.mark.parametrize("coordinate", [False, True])
def test_webster_grid4x4(tmp_path, coordinate):
    sc = load_scenario(shared_scenario("grid4x4"))
    plan = webster_plan(sc, tmp_path, coordinate=coordinate)
    logics = _logics(plan)
    assert len(logics) == 16
    cycles = {tid: _cycle(tl) for tid, tl in logics.items()}
    assert all(OPT.min_cycle_s <= c <= OPT.max_cycle_s for c in cycles.values()), cycles
    assert all(min(_greens(tl)) >= OPT.min_green_s for tl in logics.values())
    if coordinate:
        assert len(set(cycles.values())) == 1  # one common cycle
        offsets = [float(tl.get("offset")) for tl in logics.values()]
        assert all(0 <= o < c for o, c in zip(offsets, cycles.values(), strict=True))
        assert len(set(offsets)) > 1  # the coordinator did set offsets
    active, departed = _run_sumo(sc, plan)
    assert set(active.values()) == {(WEBSTER_PROGRAM_ID, 0)}
    assert departed > 20


def test_webster_tool_failure_names_scenario_and_tool(tmp_path):
    folder = shared_scenario("cologne1")
    net = folder / "cologne1.net.xml"
    bad = tmp_path / "bad.rou.xml"
    bad.write_text('<routes><vehicle id="v" depart="10"><route edges="no_such_edge other_edge"/></vehicle>'
                   "</routes>\n")
    sc = Scenario("broken", net, (bad,), (), 0.0, 3600.0)
    with pytest.raises(GronvagError) as err:
        webster_plan(sc, tmp_path / "out")
    msg = str(err.value)
    assert "broken" in msg and "tlsCycleAdaptation.py" in msg and "\n" not in msg


def test_webster_empty_window_is_an_error(tmp_path):
    folder = shared_scenario("grid4x4")
    sc = load_scenario(folder, begin_s=90000.0, end_s=93600.0)
    with pytest.raises(GronvagError, match="no vehicle departs in the window"):
        webster_plan(sc, tmp_path)


def test_webster_flows_with_routes_and_type_distribution(tmp_path):
    """A scenario in the bundled scenarios' style: flows over named routes, a car/truck vTypeDistribution."""
    folder = shared_scenario("grid4x4")
    net = folder / "grid4x4.net.xml"
    routes = tmp_path / "flows.rou.xml"
    routes.write_text(
        '<routes><vTypeDistribution id="mix"><vType id="car" probability="0.8"/>'
        '<vType id="lorry" vClass="truck" probability="0.2"/></vTypeDistribution>'
        '<route id="we" edges="left0A0 A0B0 B0C0 C0D0 D0right0"/>'
        '<route id="ns" edges="top0A3 A3A2 A2A1 A1A0 A0bottom0"/>'
        '<flow id="f1" type="mix" route="we" begin="0" end="3600" vehsPerHour="500"/>'
        '<flow id="f2" route="ns" begin="0" end="1800" period="9"/></routes>\n')
    sc = Scenario("flows", net, (routes,), (), 0.0, 3600.0)
    plan = webster_plan(sc, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "flows.webster" / "summary.json").read_text())
    assert summary["vehicles_counted"] == 500 + 200
    assert any("flows with routes expanded" in c for c in summary["conversions"])
    window = (tmp_path / "out" / "flows.webster" / "window.rou.xml").read_text()
    assert window.count('type="truck"') == 100  # 20 % of 500, deterministic
    assert len(_logics(plan)) >= 4  # the signals on the two routes


# --------------------------------------------------------------------------------------------------------------
# actuated


@pytest.mark.parametrize("name,n_signals", [("cologne1", 1), ("grid4x4", 16)])
def test_actuated_programs_rule_and_load(tmp_path, name, n_signals):
    sc = load_scenario(shared_scenario(name))
    add = actuated_programs(sc.net_file, sc.additional_files, tmp_path)
    assert add.parent == tmp_path
    logics = _logics(add)
    shipped = _logics(sc.net_file)
    assert len(logics) == n_signals
    for tid, tl in logics.items():
        assert tl.get("type") == "actuated" and tl.get("programID") == ACTUATED_PROGRAM_ID
        old = list(shipped[tid].iter("phase"))
        new = list(tl.iter("phase"))
        assert [p.get("state") for p in new] == [p.get("state") for p in old]
        for po, pn in zip(old, new, strict=True):
            st, dur = po.get("state"), float(po.get("duration"))
            if "y" in st:  # transitions unchanged
                assert pn.attrib == {"duration": po.get("duration"), "state": st}
            else:
                mn = max(5.0, float(po.get("minDur", 0)))
                assert float(pn.get("minDur")) == mn
                assert float(pn.get("maxDur")) == max(mn, min(60.0, 2 * dur))
    active, departed = _run_sumo(sc, add)
    assert set(active.values()) == {(ACTUATED_PROGRAM_ID, 3)}  # loaded last -> active, type actuated
    assert departed > 20


def test_actuated_cologne1_by_hand(tmp_path):
    sc = load_scenario(shared_scenario("cologne1"))
    tl = next(iter(_logics(actuated_programs(sc.net_file, (), tmp_path, min_green_s=10)).values()))
    ph = list(tl.iter("phase"))
    # 29 s main green (declared minDur 5, maxDur 50): minDur max(10, 5), maxDur min(60, 58); 6 s arrow: 10, 12
    assert (ph[0].get("minDur"), ph[0].get("maxDur"), ph[0].get("duration")) == ("10", "58", "29")
    assert (ph[2].get("minDur"), ph[2].get("maxDur"), ph[2].get("duration")) == ("10", "12", "10")


def test_actuated_bad_arguments(tmp_path):
    with pytest.raises(GronvagError):
        actuated_programs(Path("x.net.xml"), (), tmp_path, min_green_s=0)
    with pytest.raises(GronvagError):
        actuated_programs(Path("x.net.xml"), (), tmp_path, max_green_cap_s=3)


# --------------------------------------------------------------------------------------------------------------
# pure pieces


def _flow(**attrs) -> ET.Element:
    return ET.Element("flow", {k: str(v) for k, v in attrs.items()})


def test_flow_departures_by_hand():
    assert _flow_departures(_flow(begin=0, end=60, vehsPerHour=180), 0, 3600) == [0, 20, 40]
    assert _flow_departures(_flow(begin=0, end=100, period=25), 30, 3600) == [50, 75]
    assert _flow_departures(_flow(begin=10, end=50, number=4), 0, 3600) == [10, 20, 30, 40]
    assert _flow_departures(_flow(begin=0, end=10, probability=0.5), 0, 3600) == [0, 2, 4, 6, 8]
    assert _flow_departures(_flow(begin=0, period="exp(0.25)", number=3), 0, 3600) == [0, 4, 8]
    assert _flow_departures(_flow(begin=0, end=3600, vehsPerHour=0), 0, 3600) == []


def test_type_distribution_is_deterministic_and_proportional():
    root = ET.fromstring('<r><vTypeDistribution id="d"><vType id="a" probability="3"/>'
                         '<vType id="b" vClass="bus" probability="1"/></vTypeDistribution>'
                         '<vType id="bike" vClass="bicycle"/></r>')
    types = _Types()
    types.read(root)
    picks = [types.pce_type("d") for _ in range(40)]
    assert picks.count("bus") == 10 and picks.count("passenger") == 30
    assert types.pce_type("bike") == "bicycle"
    assert types.pce_type(None) == "passenger" and types.pce_type("truck") == "truck"


def test_repair_min_greens_keeps_cycle():
    tl = ET.fromstring('<tlLogic id="J"><phase duration="2" state="Gr"/><phase duration="3" state="yr"/>'
                       '<phase duration="20" state="rG"/><phase duration="3" state="ry"/></tlLogic>')
    assert _repair_min_greens(tl, 5)
    assert [p.get("duration") for p in tl.iter("phase")] == ["5", "3", "17", "3"]
    assert not _repair_min_greens(tl, 5)


def test_coordinator_view_shows_s_only_links_as_g(tmp_path):
    prog = ('<tlLogic id="{}" programID="p"><phase duration="10" state="Gs"/><phase duration="3" state="ys"/>'
            '</tlLogic>')
    webster = {"A": ET.fromstring(prog.format("A"))}
    shipped = {"A": ET.fromstring(prog.format("A")), "B": ET.fromstring(prog.format("B"))}
    out = tmp_path / "view.add.xml"
    assert _coordinator_view(webster, shipped, out) == ["A", "B"]
    states = {tl.get("id"): [p.get("state") for p in tl.iter("phase")] for tl in ET.parse(out).getroot()}
    assert states == {"A": ["Gg", "yg"], "B": ["Gg", "yg"]}
    fine = {"A": ET.fromstring(prog.format("A").replace("ys", "yG"))}
    assert _coordinator_view(fine, {}, tmp_path / "none.add.xml") == []
    assert not (tmp_path / "none.add.xml").exists()
