"""The virtual controller network: SUMO -> engine -> ZeroMQ (CURVE, loopback) -> controller agents -> SUMO.

* served plans in force from the first second give exactly the KPIs (and the signal states, second by second) of SUMO
  running the same plans in process; without plans the controllers' fallbacks reproduce SUMO's fixed run;
* a second plan sent mid-run is accepted, applied at a safe point, and every state the harness showed passes
  engine.safety (no conflicting greens, minimum greens, yellows, red-ambers and clearances kept across the switch);
* live activation (next_cycle) without SUMO; unsafe plans refused before anything starts; close() releases all.
"""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec
import numpy as np
import pytest

from bench.prove_controller_link import variant_plan_set
from controllers.virtual import VirtualNetwork, controller_ids, own_program, sumo_state
from engine.errors import GronvagError
from engine.plan import Phase, PlanSet, SignalPlan, encode_planset, phase_kind
from engine.safety import GREEN_MAJOR, GREEN_MINOR, check_plan, encode_state

WINDOW_S = 450


@pytest.fixture(scope="module")
def corridor():
    from sim.scenario import compile_scenario

    return compile_scenario("stockholm-corridor", end_s=WINDOW_S)


def _write(ps: PlanSet, path: Path) -> Path:
    path.write_bytes(encode_planset(ps))
    return path


def _per_second(changes: list[tuple[int, str]], begin: int, end: int) -> list[str]:
    """States shown each second of [begin, end) from the (t, state) change list."""
    out: list[str] = []
    for k, (t, st) in enumerate(changes):
        t_next = changes[k + 1][0] if k + 1 < len(changes) else end
        assert t == begin + len(out)
        out.extend([st] * (t_next - t))
    return out


def trace_errors(states: list[str], spec) -> list[str]:
    """Safety problems of a shown state sequence: every second checked for conflicting greens, and the stretch from
    the first complete green run to the last occurrence of that same state checked as one cyclic program with
    engine.safety.check_plan (its wrap joins the last run to a state that really followed it)."""
    codes = np.stack([encode_state(s) for s in states])
    green = (codes == GREEN_MAJOR) | (codes == GREEN_MINOR)
    errs = []
    ii, jj = np.nonzero(np.triu(spec.conflicts, 1))
    both = green[:, ii] & green[:, jj]
    for t, k in zip(*np.nonzero(both), strict=True):
        errs.append(f"t={t}: conflicting groups {ii[k]} and {jj[k]} green together")
    runs: list[list] = []
    for st in states:
        if runs and runs[-1][0] == st:
            runs[-1][1] += 1
        else:
            runs.append([st, 1])
    first = next(i for i in range(1, len(runs)) if phase_kind(runs[i][0]) == "green")
    last = max(i for i in range(first + 1, len(runs)) if runs[i][0] == runs[first][0])
    seg = runs[first:last]
    plan = SignalPlan(signal_id=spec.signal_id, cycle_s=sum(d for _, d in seg), offset_s=0,
                      phases=tuple(Phase(st, d, kind=phase_kind(st)) for st, d in seg))
    return errs + check_plan(plan, spec)


def test_trace_checker_catches_unsafe_sequences(corridor):
    """The checker the switching test relies on: a clean program passes, a cut clearance or a direct jump fails."""
    net = corridor.net
    plan = own_program(net, 0)
    spec = net.signal_spec(0)
    clean = [sumo_state(plan, t)[2] for t in range(400)]
    assert trace_errors(clean, spec) == []
    greens = [ph.state for ph in plan.phases if ph.kind == "green"]
    cut = [greens[-1] if phase_kind(st) != "green" and t > 200 else st for t, st in enumerate(clean)]  # no clearance
    assert trace_errors(cut, spec)
    mixed = [st if t < 200 else greens[0].replace("r", "G") for t, st in enumerate(clean)]  # conflicting greens
    assert any("together" in e for e in trace_errors(mixed, spec))


def test_remote_equals_in_process_plan(corridor, tmp_path):
    """Same plans, same seed: the controller link gives the in-process KPIs exactly, and shows SUMO's states."""
    from sim.controllers import PlanController
    from sim.harness import RunConfig, run

    net = corridor.net
    ps = variant_plan_set(net, scenario="stockholm-corridor")
    assert any(p.offset_s != own_program(net, s).offset_s for s, p in enumerate(ps.plans))
    plan_file = _write(ps, tmp_path / "plan.json")
    inproc = run(corridor.scenario, net, PlanController(plan_file), RunConfig(seed=3), tmp_path / "inproc")
    vn = VirtualNetwork(plan_file)
    remote = run(corridor.scenario, net, vn, RunConfig(seed=3), tmp_path / "remote")
    assert inproc["kpi"]["n_tripinfo"] > 100
    assert remote["kpi"] == inproc["kpi"]
    assert remote["per_signal"] == inproc["per_signal"]
    # every second every controller showed what SUMO shows running the plan
    for s, plan in enumerate(ps.plans):
        shown = _per_second(vn.trace[s], 0, WINDOW_S)
        assert shown == [sumo_state(plan, t)[2] for t in range(WINDOW_S)], plan.signal_id
    rep = vn.report
    assert rep["exact_start"] and set(rep["engine"]["status"].values()) == {"applied"}
    assert rep["engine"]["counts"]["ack_applied"] == net.n_signals
    assert (tmp_path / "remote" / "controller_link.json").is_file()


def test_remote_without_plan_runs_the_scenario_programs(corridor, tmp_path):
    """No plan: each controller runs its fallback, the scenario's own program; that is SUMO's fixed run."""
    from sim.controllers import make_controller
    from sim.harness import RunConfig, run

    fixed = run(corridor.scenario, corridor.net, make_controller("fixed"), RunConfig(seed=2), tmp_path / "fixed")
    vn = VirtualNetwork(None)
    remote = run(corridor.scenario, corridor.net, vn, RunConfig(seed=2), tmp_path / "remote")
    assert remote["kpi"] == fixed["kpi"]
    assert set(vn.report["modes"].values()) == {"fallback"}


def test_second_plan_mid_run_switches_at_safe_points(corridor, tmp_path):
    """The engine sends a second plan at t=150 s: every controller accepts it, switches at a safe point, acknowledges
    it applied; the states the harness showed pass the safety rules across the switch."""
    from sim.harness import RunConfig, run

    net = corridor.net
    first = variant_plan_set(net, green_shift_s=6, offset_step_s=13)
    second = variant_plan_set(net, green_shift_s=-5, offset_step_s=29)
    t_update = 150
    vn = VirtualNetwork(_write(first, tmp_path / "p1.json"), updates=[(t_update, _write(second, tmp_path / "p2.json"))])
    rec = run(corridor.scenario, net, vn, RunConfig(seed=1), tmp_path / "remote")
    assert rec["kpi"]["n_tripinfo"] > 100
    rep = vn.report
    assert set(rep["engine"]["status"].values()) == {"applied"}
    assert rep["published"][-1]["t_s"] == t_update
    for s, (p1, p2) in enumerate(zip(first.plans, second.plans, strict=True)):
        spec = net.signal_spec(s)
        applied = rep["applied"][p1.signal_id]
        assert len(applied) == 1, applied  # the second plan, applied once
        t_switch = applied[0][1]
        assert t_update <= t_switch <= t_update + 2 * max(p1.cycle_s, p2.cycle_s)
        shown = _per_second(vn.trace[s], 0, WINDOW_S)
        # before the switch: the first plan as SUMO would run it; after: the second plan's phase sequence
        assert shown[:t_switch] == [sumo_state(p1, t)[2] for t in range(t_switch)]
        after = [st for k, st in enumerate(shown[t_switch:]) if k == 0 or st != shown[t_switch + k - 1]]
        seq2 = [ph.state for ph in p2.phases]
        j = seq2.index(after[0])
        assert after[:len(seq2)] == (seq2[j:] + seq2[:j])[:len(after)]
        assert trace_errors(shown, spec) == [], p1.signal_id


def test_live_activation_next_cycle_without_sumo(corridor, tmp_path):
    """Activation next_cycle: the controllers start the window on their fallbacks and switch during it, safely."""
    net = corridor.net
    ps = variant_plan_set(net)
    vn = VirtualNetwork(ps, activation="next_cycle")
    try:
        vn.additional_files(corridor.scenario, net, tmp_path)
        vn.reset(net, None, [])
        assert not vn.report["exact_start"]
        for t in range(400):
            states = vn.signal_states(float(t))
            assert len(states) == net.n_signals
    finally:
        vn.close()
    for s, plan in enumerate(ps.plans):
        shown = _per_second(vn.trace[s], 0, 400)
        fallback = own_program(net, s)
        t_switch = vn.report["applied"][plan.signal_id][0][1]
        assert shown[:t_switch] == [sumo_state(fallback, t)[2] for t in range(t_switch)]
        assert trace_errors(shown, net.signal_spec(s)) == []
    assert set(vn.report["engine"]["status"].values()) == {"applied"}


def test_unsafe_plan_refused_and_close_releases_everything(corridor, tmp_path):
    net = corridor.net
    ps = variant_plan_set(net)
    bad = ps.plans[0]
    greens = [k for k, ph in enumerate(bad.phases) if ph.kind == "green"]
    phases = list(bad.phases)
    phases[greens[0]] = Phase("G" * bad.n_links, phases[greens[0]].duration_s)  # everything green at once
    unsafe = PlanSet(plans=(msgspec.structs.replace(bad, phases=tuple(phases)),) + ps.plans[1:])
    threads_before = {t.ident for t in threading.enumerate()}
    vn = VirtualNetwork(unsafe)
    vn.additional_files(corridor.scenario, net, tmp_path)
    with pytest.raises(GronvagError, match="unsafe plan"):
        vn.reset(net, None, [])
    vn.close()
    # a started network: close joins the engine and ZAP threads, closes the sockets, removes the temporary folder
    vn = VirtualNetwork(ps)
    vn.additional_files(corridor.scenario, net, tmp_path)
    vn.reset(net, None, [])
    tmp = vn._tmp
    assert tmp.is_dir() and any(t.ident not in threads_before for t in threading.enumerate())
    vn.signal_states(0.0)
    vn.close()
    vn.close()  # idempotent
    assert not tmp.exists()
    assert {t.ident for t in threading.enumerate() if t.is_alive()} <= threads_before
    with pytest.raises(GronvagError, match="activation"):
        VirtualNetwork(ps, activation="later")


def test_controller_ids_are_valid_and_distinct():
    assert controller_ids(["J1", "cluster 7#2", "tls1", "GS_a:b"]) == ["J1", "tls1_", "tls1", "GS_a:b"]
