"""The bundled scenarios: names, cached atomic builds, nets as SUMO reads them, Swedish signal practice, short runs."""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engine.errors import ScenarioError
from sim import scenarios
from sim.scenarios import saturation, signals
from sim.sumo import binary, tool_env

sumolib = pytest.importorskip("sumolib")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("scenario-cache")


@pytest.fixture(scope="module")
def corridor(cache) -> Path:
    return scenarios.build("stockholm-corridor", cache_dir=cache)


@pytest.fixture(scope="module")
def corridor_net(corridor):
    net_file = corridor.parent / "stockholm-corridor.net.xml"
    return sumolib.net.readNet(str(net_file), withPrograms=True, withInternal=True, withPedestrianConnections=True)


def _phases(tls) -> list[tuple[float, str, float | None, float | None]]:
    program = next(iter(tls.getPrograms().values()))
    out = []
    for p in program.getPhases():
        out.append((p.duration, p.state, p.minDur if p.minDur >= 0 else None, p.maxDur if p.maxDur >= 0 else None))
    return out


def _crossing_links(tls) -> set[int]:
    return {idx for in_lane, _, idx in tls.getConnections() if in_lane.getEdge().getFunction() == "walkingarea"}


# ----------------------------------------------------------------------------------------------------- names
def test_names():
    names = scenarios.bundled_names()
    assert names[0] == "stockholm-corridor" and "grid-4x4" in names and "grid-32x32" in names
    for ok in [*names, "grid-1x1", "grid-3x5", "grid-4x4:0.8", "grid-64x64:1.2", " grid-2x2:.5 "]:
        assert scenarios.is_bundled(ok), ok
    assert scenarios.parse_name("grid-4x4").canonical == scenarios.parse_name("grid-4x4:0.70").canonical


@pytest.mark.parametrize(
    "bad", ["", "foo", "stockholm", "grid-0x4", "grid-4x", "grid-4x4:0", "grid-4x4:2", "grid-65x2", "grid-4x4:x"]
)
def test_bad_names_raise(bad, cache):
    assert not scenarios.is_bundled(bad)
    with pytest.raises(ScenarioError):
        scenarios.build(bad, cache_dir=cache)


# ---------------------------------------------------------------------------------------------------- builds
@pytest.mark.parametrize("name", scenarios.bundled_names())
def test_every_bundled_scenario_builds(name, cache):
    cfg = scenarios.build(name, cache_dir=cache)
    assert cfg.suffix == ".sumocfg" and cfg.is_file()
    root = ET.parse(cfg).getroot()
    for key in ("net-file", "route-files"):
        for f in root.find(f".//{key}").get("value").split(","):
            assert (cfg.parent / f).is_file(), f
    assert root.find(".//begin").get("value") == "0" and root.find(".//end").get("value") == "3600"
    if name.startswith("grid-"):  # the 32x32 net is large: count programs without building the sumolib net
        rows, cols = (int(v) for v in name[5:].split("x"))
        net_text = (cfg.parent / f"grid-{rows}x{cols}.net.xml").read_text()
        assert net_text.count("<tlLogic ") == rows * cols


def test_build_is_cached_and_leaves_no_temporaries(cache, corridor):
    t0 = time.perf_counter()
    again = scenarios.build("stockholm-corridor", cache_dir=cache)
    assert again == corridor and time.perf_counter() - t0 < 0.5
    assert not list(cache.glob(".*.tmp"))
    assert corridor.parent.name.startswith("stockholm-corridor-")


def test_default_cache_root_follows_env(monkeypatch, tmp_path):
    from sim.scenarios import _build

    monkeypatch.setenv("GRONVAG_CACHE", str(tmp_path))
    assert _build.cache_root() == tmp_path / "scenarios"
    assert _build.cache_root(tmp_path / "x") == tmp_path / "x"


def test_concurrent_builds_publish_one_whole_scenario(tmp_path):
    code = "import sys; from sim import scenarios; print(scenarios.build('grid-5x5', cache_dir=sys.argv[1]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1]) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and Path(outs[0]).is_file()
    assert [d.name for d in tmp_path.iterdir()] == [Path(outs[0]).parent.name]


def test_interrupted_build_publishes_nothing(tmp_path):
    from sim.scenarios import _build

    def fail(folder: Path) -> None:
        (folder / "half.xml").write_text("<")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        _build.materialise(tmp_path / "s-1", fail, "s.sumocfg")
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------------------- corridor
def test_corridor_layout(corridor_net):
    tls_ids = [t.getID() for t in corridor_net.getTrafficLights()]
    assert len(tls_ids) >= 8
    xs = sorted(corridor_net.getNode(t).getCoord()[0] for t in tls_ids)
    spacing = [b - a for a, b in zip(xs, xs[1:], strict=False)]
    assert all(150 <= d <= 350 for d in spacing) and len(set(spacing)) > 3, spacing
    for edge in corridor_net.getEdges(withInternal=False):
        for lane in edge.getLanes():
            assert lane.getSpeed() <= 50 / 3.6 + 0.01
    crossings = [e for e in corridor_net.getEdges(withInternal=True) if e.getFunction() == "crossing"]
    at = {c.getID()[1:].rsplit("_", 1)[0] for c in crossings}
    assert set(tls_ids) <= at and len(crossings) >= 4 * len(tls_ids)
    # left-turn pockets: some approaches have three vehicle lanes
    assert any(len([ln for ln in corridor_net.getEdge(e).getLanes() if ln.allows("passenger")]) == 3
               for e in ("P3w-J3", "P5w-J5", "P8w-J8"))


def test_corridor_signal_programs_follow_swedish_practice(corridor_net):
    for tls in corridor_net.getTrafficLights():
        phases = _phases(tls)
        crossings = _crossing_links(tls)
        assert len(crossings) == 4
        assert signals.check_program(phases, crossings) == [], tls.getID()
        # the same rules, spelled out
        n = len(phases)
        assert 60 <= sum(p[0] for p in phases) <= 90
        for k, (dur, state, min_s, max_s) in enumerate(phases):
            prev_dur, prev = phases[k - 1][0], phases[k - 1][1]
            if "y" in state:
                assert dur == 3 and set(phases[(k + 1) % n][1]) == {"r"}
            if set(state) == {"r"}:
                assert 1 <= dur <= 2
            for i, c in enumerate(state):
                if c in "Gg" and prev[i] not in "Gg":
                    assert prev[i] == "u" and prev_dur == 1, (tls.getID(), k, i)
                    assert min_s is not None and 5 <= min_s <= 8 and min_s <= dur <= max_s


def test_corridor_has_bus_line_and_pedestrians(corridor, corridor_net):
    routes = ET.parse(corridor.parent / "stockholm-corridor.rou.xml").getroot()
    bus_types = {t.get("id") for t in routes.iter("vType") if t.get("vClass") == "bus"}
    buses = [f for f in routes.iter("flow") if f.get("type") in bus_types]
    assert buses
    for flow in buses:
        assert 300 <= float(flow.get("period")) <= 600
        assert len(flow.findall("stop")) >= 2
    additional = ET.parse(corridor.parent / "stockholm-corridor.add.xml")
    stops = {s.get("id"): s.get("lane") for s in additional.iter("busStop")}
    for flow in buses:
        for stop in flow.findall("stop"):
            assert corridor_net.getLane(stops[stop.get("busStop")]).allows("bus")
    assert len(list(routes.iter("personFlow"))) >= 9
    trucks = [t for t in routes.iter("vType") if t.get("vClass") == "truck"]
    assert trucks


def test_corridor_critical_junctions_are_loaded_80_to_95_percent(corridor):
    rows = saturation.junction_table(corridor)
    assert len(rows) >= 8
    xs = sorted(r.x for r in rows)
    assert 0.80 <= xs[-1] <= 0.95 and xs[-3] >= 0.80, xs
    assert max(xs) < 1.0


def test_program_checker_catches_violations():
    good = signals.compose("t", [signals.Stage("A", {0: "G"}, (2,), 30, 6, all_red_s=2),
                                 signals.Stage("B", {1: "G"}, (), 39, all_red_s=1)], 3, 0)
    phases = [(p.duration_s, p.state, p.min_s, p.max_s) for p in good.phases]
    assert good.cycle_s == 80 and signals.check_program(phases, {2}) == []
    long_yellow = [(4, st, a, b) if "y" in st else (d, st, a, b) for d, st, a, b in phases]
    no_red_amber = [(d, st.replace("u", "r"), a, b) for d, st, a, b in phases]
    short_min = [(d, st, 4 if a else a, b) for d, st, a, b in phases]
    no_all_red = [p for p in phases if set(p[1]) != {"r"}]
    for bad in (long_yellow, no_red_amber, short_min, no_all_red):
        assert signals.check_program(bad, {2}), bad


# ------------------------------------------------------------------------------------------------------- grid
def test_grid_programs_and_size(cache):
    cfg = scenarios.build("grid-3x5:0.8", cache_dir=cache)
    net = sumolib.net.readNet(str(cfg.parent / "grid-3x5.net.xml"), withPrograms=True)
    assert len(net.getTrafficLights()) == 15
    for tls in net.getTrafficLights():
        assert signals.check_program(_phases(tls)) == [], tls.getID()
    # the generator's vectorised X model and the file-reading one agree on the demand level
    rows = saturation.junction_table(cfg)
    assert max(r.x for r in rows) == pytest.approx(0.8, abs=0.02)


# ------------------------------------------------------------------------------------------------- SUMO runs
def _run(cfg: Path, end_s: int, tmp_path: Path) -> ET.Element:
    stats = tmp_path / "stats.xml"
    subprocess.run([binary("sumo"), "-c", str(cfg), "--end", str(end_s), "--no-step-log", "--no-warnings",
                    "--statistic-output", str(stats)], check=True, capture_output=True, env=tool_env(), timeout=120)
    return ET.parse(stats).getroot()


@pytest.mark.parametrize("name", ["stockholm-corridor", "grid-4x4"])
def test_short_sumo_run_inserts_vehicles(name, cache, tmp_path):
    stats = _run(scenarios.build(name, cache_dir=cache), 300, tmp_path)
    vehicles = stats.find("vehicles")
    assert int(vehicles.get("inserted")) > 100
    assert int(vehicles.get("waiting")) < 20
    assert int(stats.find("teleports").get("total")) == 0
    assert int(stats.find("safety").get("collisions")) == 0
    if name == "stockholm-corridor":
        assert int(stats.find("persons").get("loaded")) > 20
