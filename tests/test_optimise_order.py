"""Phase order (`gronvag optimise --phase-order`, engine.optimise.structure.order_structures / engine.optimise.order):
other orders of green phases are legal programs, and the model's choice never scores worse than the program order."""

from __future__ import annotations

import json

from engine.optimise.structure import green_orders
from engine.plan import Phase, make_plan
from engine.safety import check_plan
from tests.conftest import shared_scenario


def test_green_orders_swap_neighbours_up_to_rotation():
    g = "GGrr"
    states = (g, "yyrr", "rGGr", "ryyr", "rrGG", "rryy")
    assert green_orders(states) == [(0, 4, 2)]  # three greens: one other cyclic order
    four = (g, "y", "rGGr", "y", "rrGG", "y", "Grrg", "y")
    orders = green_orders(four)
    assert all(o[0] == 0 and sorted(o) == [0, 2, 4, 6] for o in orders)
    assert len(orders) == len(set(orders)) and (0, 2, 4, 6) not in orders
    assert green_orders((g, "yyrr", "rrGG", "rryy")) == []


def test_order_variants_are_safe_programs(compiled_shared):
    from engine.optimise.structure import order_structures

    comp = compiled_shared("cologne3")
    net = comp.net
    found = order_structures(net, list(range(net.n_signals)))
    assert found  # cologne3's programs have 3 and 4 green phases
    for s, alts in found.items():
        spec = net.signal_spec(s)
        for states, durs, adj, order in alts:
            plan = make_plan(net.signal_ids[s], [Phase(st, int(d)) for st, d in zip(states, durs, strict=True)])
            assert not check_plan(plan, spec)
            greens = [st for st, a in zip(states, adj, strict=True) if a]
            assert greens == [net.phase_states[net.phases_of(s)[g]] for g in order]


def test_phase_order_never_scores_worse_and_writes_a_valid_plan(tmp_path):
    from engine.optimise.cli import optimise_main

    spec = str(shared_scenario("ingolstadt1"))
    out = tmp_path / "ord"
    assert optimise_main([spec, "--out", str(out), "--time-limit", "4", "--search-rounds", "20", "--phase-order",
                          "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    po = summary["phase_order"]
    assert po["changed"], "ingolstadt1's lagging left turn should lead under the model"
    assert po["objective_new_order"] <= po["objective_program_order"] or po["kept"] == "program order"
    assert summary["predicted"]["optimised"]["objective"] <= po["objective_program_order"] + 1e-6
    from sim.scenario import compile_scenario

    comp = compile_scenario(spec)
    plans = json.loads((out / "plan.json").read_text())["plans"]
    from engine.plan import read_planset

    for plan in read_planset(out / "plan.json").plans:
        s = comp.net.signal_index[plan.signal_id]
        assert not check_plan(plan, comp.net.signal_spec(s))
        for ph in plan.phases:  # no stub turning phase: a protected green lasts its groups' minimum green
            if ph.kind == "green" and not set(ph.state) & set("yu"):
                need = max([int(comp.net.signal_spec(s).min_green_s[j]) for j, c in enumerate(ph.state) if c == "G"]
                           or [1])
                assert ph.duration_s >= need
    assert plans[0]["phases"][0]["state"] == comp.net.phase_states[comp.net.phases_of(0)[0]]
