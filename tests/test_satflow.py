"""gronvag satflow: saturation flows per movement from queue discharge headways in SUMO."""

from __future__ import annotations

import json

import pytest


def _movement(net, turn):
    m = next(m for m in range(net.n_movements) if int(net.mov_turn[m]) == turn)
    return m, (net.signal_ids[int(net.mov_signal[m])], net.mov_from_edge[m], net.mov_to_edge[m])


def test_file_from_headways_uses_the_mean_headway_and_the_compilers_lane_share(tmp_path):
    """3600 / mean headway per lane, times the movement's lane share (recovered from the compiler's default flow);
    movements with too few headways keep the default; the base moves only when asked; the file compiles."""
    from models.network import TURN_LEFT, TURN_STRAIGHT
    from sim.netcompile import SatFlowConfig
    from sim.satflow import Tally, sat_flow_file
    from sim.scenario import compile_scenario

    comp = compile_scenario("grid-1x1")
    net = comp.net
    ms, ks = _movement(net, TURN_STRAIGHT)
    ml, kl = _movement(net, TURN_LEFT)
    t = Tally()
    t.sum_s[ks], t.n[ks] = 2.4 * 30, 30  # 1500 veh/h per lane
    t.sum_s[kl], t.n[kl] = 2.0 * 5, 5  # too few
    rec = sat_flow_file(comp, t, min_headways=20)
    assert [(o["signal"], o["from"], o["to"]) for o in rec["overrides"]] == [ks]
    o = rec["overrides"][0]
    assert o["veh_h_lane"] == pytest.approx(1500.0)
    d = SatFlowConfig()
    prot = bool(net.mov_protected[ms])
    share = net.mov_sat_flow_veh_s[ms] * 3600 / (d.base_veh_h_lane * d.factor(TURN_STRAIGHT, prot))
    assert o["veh_h"] == pytest.approx(1500.0 * share, abs=0.1)
    assert "base_veh_h_lane" not in rec
    assert sat_flow_file(comp, t, 20, set_base=True)["base_veh_h_lane"] == pytest.approx(1500.0)

    f = tmp_path / "sat.json"
    f.write_text(json.dumps(rec))
    net2 = compile_scenario("grid-1x1", sat=SatFlowConfig.from_json(f)).net
    assert net2.mov_sat_flow_veh_s[ms] * 3600 == pytest.approx(o["veh_h"])
    assert net2.mov_sat_flow_veh_s[ml] == net.mov_sat_flow_veh_s[ml]


def test_lost_times_follow_hcm_definitions():
    """Start-up lost time: onset to the fourth queued vehicle's crossing, less four saturation headways of its
    movement, weighted by greens over the movements with enough of both; end gain: crossings in the yellow per green
    that ended on a queue, times the mean saturation headway; nothing when no movement qualifies."""
    from sim.satflow import Tally, lost_times

    t = Tally()
    a, b, c = ("J", "e1", "e2"), ("J", "e3", "e4"), ("J", "e5", "e6")
    t.sum_s[a], t.n[a] = 2.0 * 30, 30
    t.sum_s[b], t.n[b] = 2.5 * 30, 30
    t.sum_s[c], t.n[c] = 2.0 * 3, 3  # too few headways: its greens are left out
    t.head_sum_s[a], t.head_n[a] = 9.0 * 20, 20  # 9.0 - 4 x 2.0 = 1.0 s
    t.head_sum_s[b], t.head_n[b] = 10.5 * 60, 60  # 10.5 - 4 x 2.5 = 0.5 s
    t.head_sum_s[c], t.head_n[c] = 30.0 * 50, 50
    expect = {"startup_lost_s": pytest.approx((20 * 1.0 + 60 * 0.5) / 80, abs=0.01), "greens": 80, "movements": 2,
              "per_movement_min_s": 0.5, "per_movement_max_s": 1.0}
    assert lost_times(t, min_count=20) == expect
    t.queued_ends, t.yellow_crossings = 10, 5
    headway = (60 + 75 + 6) / 63
    assert lost_times(t, 20)["end_gain_s"] == pytest.approx(round(0.5 * headway, 2))
    assert lost_times(t, min_count=100) is None


@pytest.mark.timeout(180)
def test_satflow_measures_discharge_rates_sumo_can_deliver(tmp_path):
    """One short SUMO run of grid-1x1: some movements measured, each per-lane rate between what a lane of SUMO's
    default cars can carry at all (one car per second of reaction time: 3600) and a slow 1000 veh/h; the record names
    its seeds; the file is ready for --sat-flow."""
    from engine.cli import main
    from sim.netcompile import SatFlowConfig

    out = tmp_path / "sat.json"
    assert main(["satflow", "grid-1x1", "--end", "900", "--seeds", "1", "--min-headways", "5", "--jobs", "1",
                 "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["measured_on"]["sumo_seeds"] == [1]
    assert rec["overrides"], "no movement had five queued vehicles in 15 minutes"
    for o in rec["overrides"]:
        assert o["headways"] >= 5
        assert 1000.0 < o["veh_h_lane"] < 3600.0
    # SUMO's drivers: the fourth queued vehicle crosses within a few seconds of four saturation headways; they stop
    # for the yellow when they can (at most one crossing per yellow after a queued green)
    lost = rec["lost_times"]
    assert lost["greens"] >= 5 and -1.0 < lost["startup_lost_s"] < 4.0
    assert lost["queued_green_ends"] > 0 and 0.0 <= lost["end_gain_s"] < 2.5
    SatFlowConfig.from_json(out)


def test_satflow_refuses_a_missing_plan_and_writes_nothing(tmp_path, capsys):
    from engine.cli import main

    out = tmp_path / "sat.json"
    rc = main(["satflow", "grid-1x1", "--plan", str(tmp_path / "none.json"), "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.json" in err[0] and "not found" in err[0]
    assert not out.exists()
