"""The CLI's front door: info output, and bad input -> one line naming the file, exit 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import shared_scenario


def gronvag(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def assert_one_line_error(res, *needles):
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_info_json(tmp_path):
    res = gronvag("info", shared_scenario("cologne3"), "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["counts"]["signals"] == 3
    assert rep["demand"]["vehicles"] == 2856
    assert {s["id"] for s in rep["signals"]} == {"360082", "360086", "GS_cluster_2415878664_254486231_359566_359576"}


def test_info_text_lists_signals():
    res = gronvag("info", shared_scenario("cologne1"), "--detail")
    assert res.returncode == 0, res.stderr
    assert "GS_cluster_357187_359543" in res.stdout and "movements" in res.stdout


def test_missing_file(tmp_path):
    assert_one_line_error(gronvag("info", tmp_path / "nope.sumocfg"), "nope.sumocfg")


def test_malformed_xml(tmp_path):
    bad = tmp_path / "bad.sumocfg"
    bad.write_text("<configuration><input>")
    assert_one_line_error(gronvag("info", bad), "bad.sumocfg", "malformed XML")


def test_config_naming_missing_net(tmp_path):
    cfg = tmp_path / "x.sumocfg"
    cfg.write_text('<configuration><input><net-file value="gone.net.xml"/></input></configuration>')
    assert_one_line_error(gronvag("info", cfg), "x.sumocfg", "gone.net.xml")


def _tiny_net(tmp_path, tls: bool):
    from sim.sumo import binary

    (tmp_path / "n.nod.xml").write_text(
        '<nodes><node id="a" x="0" y="0"/><node id="b" x="200" y="0" type="{}"/><node id="c" x="400" y="0"/>'
        '<node id="d" x="200" y="200"/></nodes>'.format("traffic_light" if tls else "priority"))
    (tmp_path / "n.edg.xml").write_text(
        '<edges><edge id="ab" from="a" to="b" numLanes="1" speed="13.9"/><edge id="bc" from="b" to="c" numLanes="1"'
        ' speed="13.9"/><edge id="db" from="d" to="b" numLanes="1" speed="13.9"/></edges>')
    net = tmp_path / "n.net.xml"
    subprocess.run([binary("netconvert"), "-n", tmp_path / "n.nod.xml", "-e", tmp_path / "n.edg.xml", "-o", net],
                   check=True, capture_output=True)
    return net


def test_net_without_traffic_lights(tmp_path):
    net = _tiny_net(tmp_path, tls=False)
    routes = tmp_path / "r.rou.xml"
    routes.write_text('<routes><vehicle id="v" depart="0"><route edges="ab bc"/></vehicle></routes>')
    assert_one_line_error(gronvag("info", net, "--routes", routes), "n.net.xml", "no traffic lights")


def test_routes_with_unknown_edge(tmp_path):
    net = _tiny_net(tmp_path, tls=True)
    routes = tmp_path / "r.rou.xml"
    routes.write_text('<routes><vehicle id="v" depart="0"><route edges="ab zz"/></vehicle></routes>')
    assert_one_line_error(gronvag("info", net, "--routes", routes), "r.rou.xml", "'zz'")


def test_empty_demand_window(tmp_path):
    net = _tiny_net(tmp_path, tls=True)
    routes = tmp_path / "r.rou.xml"
    routes.write_text('<routes><vehicle id="v" depart="5000"><route edges="ab bc"/></vehicle></routes>')
    assert_one_line_error(gronvag("info", net, "--routes", routes, "--end", "3600"), "r.rou.xml", "no vehicle")
    assert_one_line_error(gronvag("info", net, "--routes", routes, "--begin", "10", "--end", "10"), "empty")


@pytest.mark.parametrize("args", [("evaluate", "nowhere", "--out", "o"), ("info", "grid-0x0")])
def test_unknown_scenario(args, tmp_path):
    assert_one_line_error(gronvag(*args, cwd=tmp_path), args[1])


def test_saturation_flow_calibration_file(tmp_path):
    sc = shared_scenario("cologne3")
    cal = tmp_path / "sat.json"
    cal.write_text('{"base_veh_h_lane": 1900, "overrides": [{"signal": "360082", "from": "-130160207#0", '
                   '"to": "241660955#17", "veh_h": 1234}]}')
    res = gronvag("info", sc, "--sat-flow", cal, "--json")
    assert res.returncode == 0, res.stderr
    sig = next(s for s in json.loads(res.stdout)["signals"] if s["id"] == "360082")
    sat = {(m["from"], m["to"]): m["sat_flow_veh_h"] for m in sig["movements"]}
    assert sat[("-130160207#0", "241660955#17")] == 1234.0
    base = json.loads(gronvag("info", sc, "--json").stdout)
    sat0 = {(m["from"], m["to"]): m["sat_flow_veh_h"] for s in base["signals"] if s["id"] == "360082"
            for m in s["movements"]}
    for key, v in sat.items():  # every other movement scales with the new base flow per lane
        if key != ("-130160207#0", "241660955#17"):
            assert v == pytest.approx(sat0[key] * 1900 / 1800, abs=0.1)
    cal.write_text('{"overrides": [{"signal": "nope", "from": "a", "to": "b", "veh_h": 1}]}')
    assert_one_line_error(gronvag("info", sc, "--sat-flow", cal), "no signalised movement")
    cal.write_text("{not json")
    assert_one_line_error(gronvag("info", sc, "--sat-flow", cal), "sat.json", "malformed JSON")


@pytest.mark.parametrize("command", ["compare", "optimise", "predict", "serve", "controller", "keys"])
def test_delegated_commands_show_their_own_help(command):
    res = gronvag(command, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: gronvag {command}") or f"gronvag {command}" in res.stdout.splitlines()[0]


def test_the_demo_asks_the_optimiser_for_the_proof_tables_request():
    """`gronvag demo` passes the proof table's request: every option parses, and the seeds are valid together."""
    from engine.demo import DEMO_REQUEST
    from engine.optimise.cli import _check_seed_options, build_parser

    args = build_parser().parse_args(["stockholm-corridor", "--out", "x", "--time-limit", "20", "--seed", "1",
                                      *DEMO_REQUEST])
    _check_seed_options(args)
    assert args.sim_check and args.sim_sweep and args.sim_shared and args.phase_skip
    assert (args.sim_polish, args.max_dos, args.sim_seeds) == (40, 1.0, "1001-1006")
