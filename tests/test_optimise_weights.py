"""Optional bus and pedestrian weights in the optimiser's objective (engine.optimise.evaluation, issue 5).

Bus flows compiled per movement, the weighted objective (exactly the unweighted one at --bus-weight 1, the same
objective in the cyclic evaluator, the offset tables and the CP-SAT split tables), its effect on the plan, the HCM
pedestrian delay, and the CLI's checks.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from engine.errors import GronvagError
from engine.optimise import OptimiseOptions, build_instance, optimise
from engine.optimise.evaluation import GroupEvaluator, network_terms, outside_departures_veh_h, ped_delay_s
from engine.optimise.model import SolveParams, SplitModel
from engine.optimise.tables import ped_cost_table

FAST = dict(time_limit_s=3.0, search_rounds=5, workers=2, seed=3)


@pytest.fixture(scope="module")
def corridor():
    from sim.scenario import compile_scenario

    return compile_scenario("stockholm-corridor")


def _bus_movements(comp) -> dict[int, tuple[float, float, float, float]]:
    """Movements the corridor's bus line passes: (free-flow time from departure to the stop line, the bus flow's
    begin, end and period), from the route file."""
    net = comp.net
    root = ET.parse(comp.scenario.route_files[0]).getroot()
    routes = {r.get("id"): r.get("edges").split() for r in root.iter("route") if r.get("edges")}
    edge_signal = {net.appr_edge[a]: int(net.appr_signal[a]) for a in range(net.n_approaches)}
    out: dict[int, tuple[float, float, float, float]] = {}
    for fl in root.iter("flow"):
        if fl.get("type") != "bus":
            continue
        edges = routes[fl.get("route")]
        t = 0.0
        for k, e in enumerate(edges[:-1]):
            t += net.edge_length_m[e] / net.edge_speed_m_s[e]
            if e in edge_signal:
                m = net.movement_index.get((net.signal_ids[edge_signal[e]], e, edges[k + 1]))
                if m is not None:
                    assert m not in out
                    out[m] = (t, float(fl.get("begin")), float(fl.get("end")), float(fl.get("period")))
    return out


def _group_evaluator(inst, gi: int = 0):
    sigs = [inst.signals[i] for i in inst.groups[gi].members]
    return GroupEvaluator(inst.ctx, sigs, inst.options.stop_cost_s, outside_departures_veh_h(inst.ctx),
                          inst.template), sigs


def _candidates(sigs, k: int = 6, seed: int = 0):
    """The current plan and a few random offsets of it: durations (k, n_phases), offsets (k, n_signals)."""
    rng = np.random.default_rng(seed)
    d = np.concatenate([s.base_s for s in sigs])
    c = sigs[0].base_cycle_s
    return np.repeat(d[None], k, 0), rng.integers(0, c, (k, len(sigs)))


# ------------------------------------------------------------------------------------------------ bus flows


def test_bus_flows_per_movement_match_the_route_files_bus_line(corridor):
    dem = corridor.demand
    window_h = (dem.end_s - dem.begin_s) / 3600.0
    # bus line 4: eastbound every 360 s from 0 s, westbound every 360 s from 180 s: 10 buses each way depart in
    # [0, 3600) (the compiler counts flows by their expected number: 10 + 9.5)
    assert dem.n_buses == 20
    bus_movs = _bus_movements(corridor)
    assert len(bus_movs) == 18  # 9 signals, both directions
    buses = dem.mean_bus_veh_h() * window_h / 2.0  # vClass bus: 2.0 pcu
    assert set(np.flatnonzero(buses > 0).tolist()) == set(bus_movs)
    for m, (t_s, begin, end, period) in bus_movs.items():
        # the flow's buses spread evenly over [begin, end); those reaching the stop line after the window drop out
        want = (min(end + t_s, dem.end_s) - (begin + t_s)) / period
        assert buses[m] == pytest.approx(want, rel=1e-9)
        assert 9.0 < buses[m] <= 10.0
    share = dem.bus_share()
    assert np.all((share >= 0) & (share <= 1))
    assert np.all(share[list(bus_movs)] > 0)


def test_bus_vtype_by_id_and_distribution(corridor, tmp_path):
    """A vType id containing 'bus' counts whatever its vClass; a distribution counts with its bus probability."""
    from sim.scenario import compile_scenario

    edges = "W-J1 J1-J2 J2-P3w P3w-J3 J3-N3"
    rou = tmp_path / "r.rou.xml"
    rou.write_text(f"""<routes>
    <vType id="CityBus" vClass="passenger"/>
    <vType id="car" vClass="passenger"/>
    <vTypeDistribution id="mix"><vType id="c2" vClass="passenger" probability="3"/>
        <vType id="coach1" vClass="coach" probability="1"/></vTypeDistribution>
    <route id="r" edges="{edges}"/>
    <vehicle id="b" type="CityBus" route="r" depart="10"/>
    <vehicle id="c" type="car" route="r" depart="20"/>
    <flow id="f" type="mix" route="r" begin="0" end="3600" vehsPerHour="400"/>
</routes>""")
    comp = compile_scenario("stockholm-corridor", routes=[rou])
    dem = comp.demand
    assert dem.n_buses == 1 + 100  # the CityBus and a quarter of the 400 mixed vehicles
    m = comp.net.movement_index[("J1", "W-J1", "J1-J2")]
    total = dem.mean_arrival_veh_h()[m]
    bus = dem.mean_bus_veh_h()[m]
    # pcu/h at J1: CityBus 1.0, car 1.0, the mix 400 veh/h at (3 x 1.0 + 1 x 2.0) / 4 pcu, of which coaches 2.0 / 4
    # (the mix's arrivals after the window's end drop out: the last t seconds of free-flow travel to J1)
    t = comp.net.edge_length_m["W-J1"] / comp.net.edge_speed_m_s["W-J1"]
    f = (3600.0 - t) / 3600.0
    assert total == pytest.approx(2.0 + 400 * 1.25 * f, rel=1e-9)
    assert bus == pytest.approx(1.0 + 400 * 0.5 * f, rel=1e-9)


# ------------------------------------------------------------------------------------------ pedestrian flows


def _crossing_edges(comp) -> dict[str, set[str]]:
    root = ET.parse(comp.scenario.net_file).getroot()
    return {e.get("id"): set(e.get("crossingEdges", "").split()) for e in root.iter("edge")
            if e.get("function") == "crossing"}


def test_walks_attributed_to_the_crossings_they_use(corridor):
    """p.N1-J1.J1-S1 walks down the west side of J1 (the sidewalks of N1-J1 and J1-S1) and crosses the west arm;
    p.S1-J1.J1-N1 walks up the east side and crosses the east arm; nobody crosses J1's side-street arms."""
    dem, net = corridor.demand, corridor.net
    flows = dict(zip(net.crossing_ids, dem.crossing_ped_h, strict=True))
    cross = _crossing_edges(corridor)
    j1 = {c: cross[c] for c in net.crossing_ids if c.startswith(":J1_")}
    west = next(c for c, e in j1.items() if "W-J1" in e)
    east = next(c for c, e in j1.items() if "J1-J2" in e)
    assert flows[west] == pytest.approx(0.011111 * 3600) == flows[east]  # period exp(0.011111)
    assert all(flows[c] == 0.0 for c in j1 if c not in (west, east))
    assert dem.n_walks_unrouted == 0
    # the optimiser takes the scenario's flows unless --ped-flow is given
    inst = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST, ped_weight=1.0, signals=("J1",)))
    w = inst.signals[0].weights
    assert w.ped_source == "scenario"
    assert dict(zip(w.ped_crossing, w.ped_flow_h, strict=True)) == pytest.approx({c: flows[c] for c in j1})
    inst = build_instance(corridor.net, corridor.demand,
                          OptimiseOptions(**FAST, ped_weight=1.0, ped_flow_h=55.0, signals=("J1",)))
    assert inst.signals[0].weights.ped_source == "option"
    assert np.all(inst.signals[0].weights.ped_flow_h == 55.0)


_SUMO_COUNT = """
import json, sys
from collections import defaultdict
from sim.sumo import connection_module
ls = connection_module("libsumo")
net, routes, adds = sys.argv[1:4]
ls.start(["sumo", "-n", net, "-r", routes, "-a", adds, "--begin", "0", "--end", "3600", "--no-step-log",
          "--no-warnings", "--seed", "1"])
seen = defaultdict(set)
for _ in range(3600):
    ls.simulationStep()
    for p in ls.person.getIDList():
        r = ls.person.getRoadID(p)
        if r.startswith(":") and "_c" in r:
            seen[r].add(p)
ls.close()
print(json.dumps({k: len(v) for k, v in seen.items()}))
"""


def test_walk_attribution_agrees_with_sumo(corridor):
    """SUMO's own pedestrians (one seed, one hour): the same crossings used and unused, counts within noise."""
    import json
    import subprocess
    import sys

    sc = corridor.scenario
    out = subprocess.run([sys.executable, "-c", _SUMO_COUNT, str(sc.net_file), ",".join(map(str, sc.route_files)),
                          ",".join(map(str, sc.additional_files))], capture_output=True, text=True, timeout=120,
                         check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    flows = dict(zip(corridor.net.crossing_ids, corridor.demand.crossing_ped_h, strict=True))
    assert {c for c, v in flows.items() if v > 0} == {c for c, v in seen.items() if v > 0}
    for c, v in flows.items():  # Poisson arrivals (exp periods): within 4 standard deviations
        assert abs(seen.get(c, 0) - v) <= 4 * np.sqrt(v) + 1, (c, v, seen.get(c, 0))
    assert sum(seen.values()) == pytest.approx(sum(flows.values()), rel=0.1)


# ---------------------------------------------------------------------------------------------- objective


def test_bus_weight_one_is_the_unweighted_objective_exactly(corridor):
    inst = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST, bus_weight=1.0))
    assert all(not s.weights.weighted for s in inst.signals)
    ge, sigs = _group_evaluator(inst)
    bare = [dataclasses.replace(s, weights=None) for s in sigs]
    ge0 = GroupEvaluator(inst.ctx, bare, inst.options.stop_cost_s, outside_departures_veh_h(inst.ctx), inst.template)
    d, o = _candidates(sigs)
    for per_movement in (False, True):
        a, b = ge.score(d, o, per_movement), ge0.score(d, o, per_movement)
        assert np.array_equal(a.objective, b.objective)
        if per_movement:
            assert np.array_equal(a.mov_cost, b.mov_cost)
    # the CP-SAT split model: the same tables, the same optimum
    c = sigs[0].base_cycle_s
    r1 = SplitModel(sigs[:1], c, period_h=1.0, stop_cost_s=inst.options.stop_cost_s, caps=[None]).solve(
        SolveParams(2.0, 1, 1))
    r0 = SplitModel(bare[:1], c, period_h=1.0, stop_cost_s=inst.options.stop_cost_s, caps=[None]).solve(
        SolveParams(2.0, 1, 1))
    assert r1.objective == r0.objective and np.array_equal(r1.durations[0], r0.durations[0])


def test_weighted_objective_is_the_weighted_sum_of_movement_costs(corridor):
    base = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST))
    inst = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST, bus_weight=7.0))
    ge1, sigs1 = _group_evaluator(base)
    ge7, sigs7 = _group_evaluator(inst)
    d, o = _candidates(sigs1)
    s1 = ge1.score(d, o, per_movement=True)
    s7 = ge7.score(d, o, per_movement=True)
    w = 1.0 + 6.0 * np.concatenate([s.weights.mov_bus_share for s in sigs7])
    assert np.allclose(ge7.mov_weight, w)
    np.testing.assert_allclose(s7.objective, (s1.mov_cost * w).sum(1), rtol=1e-9)
    np.testing.assert_allclose(s7.mov_cost, s1.mov_cost * w, rtol=1e-12)
    assert np.all(s7.objective > s1.objective)
    # offset tables: each row scaled by its downstream movement's weight
    t1 = ge1.offset_pair_tables(d[0], o[0], sigs1[0].base_cycle_s)
    t7 = ge7.offset_pair_tables(d[0], o[0], sigs7[0].base_cycle_s)
    assert [(i, j) for i, j, _ in t1] == [(i, j) for i, j, _ in t7]
    assert all(np.all(b >= a - 1e-9) for (_, _, a), (_, _, b) in zip(t1, t7, strict=True))
    assert any(np.any(b > a + 1e-6) for (_, _, a), (_, _, b) in zip(t1, t7, strict=True))


def test_split_model_tables_carry_the_bus_weights(corridor):
    """The CP-SAT split objective of a fixed plan is the sum of the closed-form movement costs times w_m."""
    from engine.optimise.tables import split_cost_table

    inst = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST, bus_weight=7.0, signals=("J3",)))
    sig = inst.signals[0]
    c = sig.base_cycle_s
    m = SplitModel([sig], c, period_h=1.0, stop_cost_s=13.3, caps=[None])
    m.fix([sig.base_s])
    got = m.solve(SolveParams(2.0, 1, 1)).objective
    e = np.floor((np.rint(sig.mov_coef * 100).astype(np.int64) @ sig.base_s
                  + np.rint(sig.mov_const * 100).astype(np.int64)) / 100)
    want = 0
    for i in range(sig.movements.size):
        if sig.mov_flow_veh_h[i] > 0 and sig.mov_coef[i].any():
            t = split_cost_table(sig.mov_flow_veh_h[i], sig.mov_sat_veh_h[i], c, np.array([e[i]]), 1.0, 13.3)
            want += int(np.rint(t[0] * sig.weights.mov_weight[i]))
    assert np.any(sig.weights.mov_weight > 1.0)
    assert got == want


def _bus_green(sig, d) -> float:
    share = sig.weights.mov_bus_share
    return float((sig.capacity_green_s(d) * (share > 0)).sum())


def test_large_bus_weight_gives_buses_more_green_and_less_delay(corridor):
    # CP-SAT split model of one signal at its current cycle: solved to optimality, so the comparison is exact
    i1 = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST, signals=("J3",)))
    iw = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST, signals=("J3",), bus_weight=200.0))
    s1, sw = i1.signals[0], iw.signals[0]
    c = s1.base_cycle_s
    r1 = SplitModel([s1], c, period_h=1.0, stop_cost_s=13.3, caps=[None]).solve(SolveParams(3.0, 1, 1))
    rw = SplitModel([sw], c, period_h=1.0, stop_cost_s=13.3, caps=[None]).solve(SolveParams(3.0, 1, 1))
    assert r1.status == rw.status == "OPTIMAL"
    assert _bus_green(sw, rw.durations[0]) > _bus_green(s1, r1.durations[0])
    # the whole pipeline (CP-SAT, then the local search) on the corridor: lower predicted delay per bus
    a = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST))
    b = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST, bus_weight=50.0))
    ra, rb = optimise(a), optimise(b)
    bus_a = network_terms(b, ra.optimised[1], ra.solution)["bus_delay_s"]
    bus_b = network_terms(b, rb.optimised[1], rb.solution)["bus_delay_s"]
    assert bus_b < bus_a
    assert rb.optimised[1].mean_delay_s >= ra.optimised[1].mean_delay_s - 1e-9  # what the buses' gain costs the rest


# --------------------------------------------------------------------------------------------- pedestrians


def test_ped_delay_formula_by_hand(corridor):
    assert ped_delay_s(90.0, 30.0) == pytest.approx(60.0**2 / 180.0) == pytest.approx(20.0)
    assert ped_delay_s(60.0, 60.0) == 0.0
    assert ped_delay_s(100.0, 0.0) == pytest.approx(50.0)
    assert ped_cost_table(100.0, 2.0, 90.0, np.array([30.0]))[0] == pytest.approx(2 * 100 * 20.0)
    # one signal of the corridor: walk greens read from the state strings by hand
    inst = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST, ped_weight=2.0, ped_flow_h=120.0))
    net = corridor.net
    sig = inst.signals[0]
    d = sig.base_s.astype(float)
    c = d.sum()
    base = int(net.signal_link_ptr[sig.index])
    want, n = 0.0, 0
    for link in range(base, int(net.signal_link_ptr[sig.index + 1])):
        if net.link_crossing[link] < 0:
            continue
        g = sum(d[p] for p, st in enumerate(sig.states) if st[link - base] in "Gg")
        want += 120.0 * (c - g) ** 2 / (2 * c)  # one link per crossing in the corridor
        n += 1
    assert n == 4
    assert sig.weights.ped_delay_s_h(d) == pytest.approx(want, rel=1e-12)
    assert sig.weights.ped_cost(d) == pytest.approx(2.0 * want, rel=1e-12)
    # the evaluator adds exactly that to the objective; the CP-SAT model, its rounded tables
    ge, sigs = _group_evaluator(inst)
    plain = build_instance(corridor.net, corridor.demand, OptimiseOptions(**FAST))
    ge0, _ = _group_evaluator(plain)
    dd, oo = _candidates(sigs, 2)
    ped = sum(s.weights.ped_cost(s.base_s.astype(float)) for s in sigs)
    np.testing.assert_allclose(ge.score(dd, oo).objective - ge0.score(dd, oo).objective, ped, rtol=1e-9)
    fixed = []
    for s in (sig, plain.signals[0]):
        m = SplitModel([s], int(c), period_h=1.0, stop_cost_s=13.3, caps=[None])
        m.fix([s.base_s])
        fixed.append(m.solve(SolveParams(2.0, 1, 1)).objective)
    assert fixed[0] - fixed[1] == pytest.approx(2.0 * want, abs=n)


def test_higher_ped_weight_never_worsens_predicted_ped_delay(corridor):
    delays = []
    for w in (0.0, 1.0, 10.0):
        inst = build_instance(corridor.net, corridor.demand,
                              OptimiseOptions(**FAST, ped_weight=w, ped_flow_h=300.0))
        res = optimise(inst)
        delays.append(network_terms(inst, res.optimised[1], res.solution)["ped_delay_s"])
    assert all(b <= a + 1e-9 for a, b in zip(delays, delays[1:], strict=False)), delays
    # and at one signal's exact optimum
    per = []
    for w in (0.0, 1.0, 10.0, 100.0):
        inst = build_instance(corridor.net, corridor.demand,
                              OptimiseOptions(**FAST, signals=("J3",), ped_weight=w, ped_flow_h=300.0))
        s = inst.signals[0]
        r = SplitModel([s], s.base_cycle_s, period_h=1.0, stop_cost_s=13.3, caps=[None]).solve(SolveParams(3.0, 1, 1))
        assert r.status == "OPTIMAL"
        per.append(float(s.weights.ped_delay_s_h(r.durations[0].astype(float))))
    assert all(b <= a + 1e-9 for a, b in zip(per, per[1:], strict=False)), per
    assert per[-1] < per[0]


# -------------------------------------------------------------------------------------------- options, CLI


@pytest.mark.parametrize("kw", [dict(bus_weight=-1.0), dict(ped_weight=-0.5), dict(ped_flow_h=-10.0),
                                dict(bus_weight=float("nan"))])
def test_bad_weights_raise(kw):
    with pytest.raises(GronvagError, match="must be a finite number >= 0"):
        OptimiseOptions(**kw).check()


@pytest.mark.parametrize("argv,flag", [(["--bus-weight", "-2"], "--bus-weight"),
                                       (["--ped-weight", "-1"], "--ped-weight"),
                                       (["--ped-weight", "1", "--ped-flow", "-5"], "--ped-flow")])
def test_cli_bad_weights_one_line_exit_2(tmp_path, capsys, argv, flag):
    from engine.optimise.cli import optimise_main

    rc = optimise_main(["stockholm-corridor", "--out", str(tmp_path / "o"), "--quiet", *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and flag in err and err.startswith("gronvag: error:")
    assert not (tmp_path / "o").exists()


def test_cli_summary_shows_weights(tmp_path, capsys):
    import json

    from engine.optimise.cli import build_parser, optimise_main

    help_text = build_parser().format_help()
    assert "--bus-weight" in help_text and "--ped-weight" in help_text and "--ped-flow" in help_text
    out = tmp_path / "o"
    rc = optimise_main(["stockholm-corridor", "--out", str(out), "--quiet", "--time-limit", "3", "--search-rounds",
                        "5", "--bus-weight", "20", "--ped-weight", "1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["options"]["bus_weight"] == 20.0 and summary["options"]["ped_weight"] == 1.0
    for key in ("objective_weighted", "bus_delay_s", "ped_delay_s"):
        assert key in summary["predicted"]["current"] and key in summary["predicted"]["optimised"]
    assert all("bus_delay_s_per_bus" in s and "ped_delay_s_per_ped" in s for s in summary["signals"])
    md = (out / "summary.md").read_text()
    assert "weighted objective (bus weight 20, pedestrian weight 1)" in md and "delay per pedestrian" in md


# ---------------------------------------------------------------------------------- SUMO's figure under weights


def test_sumo_score_adds_the_weighted_bus_and_pedestrian_losses_per_vehicle():
    from engine.optimise.simcheck import sumo_score

    rec = {"n_tripinfo": 200, "bus_time_loss_sum_s": 400.0, "ped_time_loss_sum_s": 1000.0}
    plain = OptimiseOptions()
    assert sumo_score(50.0, rec, plain) == 50.0
    assert sumo_score(50.0, rec, dataclasses.replace(plain, bus_weight=3.0)) == pytest.approx(50.0 + 2 * 400 / 200)
    both = dataclasses.replace(plain, bus_weight=2.0, ped_weight=0.5)
    assert sumo_score(50.0, rec, both) == pytest.approx(50.0 + (400 + 0.5 * 1000) / 200)
    assert sumo_score(50.0, {"n_tripinfo": 0}, both) == 50.0  # nothing measured: nothing to add


def test_sumo_runs_report_the_bus_and_pedestrian_losses_the_score_needs(corridor, tmp_path):
    """measure_one (the polish's SUMO runs) on the corridor, which has a bus line and walks: the sums equal what
    the tripinfo file says for the bus vehicles and the persons' walks."""
    from engine.plan import PlanSet, make_plan
    from sim.calibrate import measure_one
    from sim.planio import additional_to_planset

    own = additional_to_planset(corridor.scenario.net_file)  # the programs, re-made as plans of their own
    plans = PlanSet(plans=tuple(make_plan(p.signal_id, p.phases, p.offset_s) for p in own.plans))
    rec = measure_one(corridor, plans, 1, tmp_path / "run")
    bus_types = {v.get("id") for v in ET.parse(corridor.scenario.route_files[0]).getroot().iter("vType")
                 if v.get("vClass") in ("bus", "coach") or "bus" in (v.get("id") or "")}
    assert bus_types
    root = ET.parse(tmp_path / "run" / "tripinfo.xml").getroot()
    trips = list(root.iter("tripinfo"))
    bus = sum(float(t.get("timeLoss")) for t in trips if t.get("vType") in bus_types)
    walks = sum(float(w.get("timeLoss", 0)) for p in root.iter("personinfo") for w in p.iter("walk"))
    assert rec["n_tripinfo"] == len(trips)
    assert rec["bus_time_loss_sum_s"] == pytest.approx(bus) and bus > 0
    assert rec["ped_time_loss_sum_s"] == pytest.approx(walks) and walks > 0
