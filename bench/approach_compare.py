"""Where the models and SUMO part ways, approach by approach, between two plans.

For each plan (``own`` for the scenario's own programs, or a JSON / SUMO plan file): SUMO's time loss per approach
(veh*h, edgeData over the approach edge and the edges that lead only into it: ``sim.calibrate.measure``),
mean over the seeds, against each model's total delay of the approach's movements (veh*h). Printed per signal, with
the change from the first plan to the second: a model that predicts a gain SUMO does not show, or misses a loss SUMO
shows, is wrong about that approach.

``python -m bench.approach_compare stockholm-corridor own out/opt/plan.add.xml --seeds 1,2,3 --signals J3,J8``
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def model_approach_delay(comp, planset, params, model: str) -> tuple[np.ndarray, float]:
    """(the model's total delay per approach, veh*h (A,); its network mean delay per vehicle, s)."""
    from models.evaluate import MODELS

    ev = MODELS[model](comp.net, comp.demand, planset, params)
    total = ev.mov_delay_s * ev.mov_flow_veh_h * ev.extra["window_h"] / 3600.0
    return np.bincount(comp.net.mov_approach, total, comp.net.n_approaches), ev.network_delay_s


def main(argv: list[str] | None = None) -> int:
    from bench.swap_halves import _load
    from models.cli_predict import params_from_obj
    from models.evaluate import ModelParams
    from sim import calibrate as cal
    from sim.scenario import compile_scenario

    ap = argparse.ArgumentParser(prog="python -m bench.approach_compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("plans", nargs=2, help="two plans: 'own' or a JSON / SUMO plan file")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--signals", help="signals to print (default: all)")
    ap.add_argument("--params", help="model constants (a JSON object of model parameters)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    comp, base = cal.shared_lanes_by_demand(compile_scenario(args.scenario), ModelParams())
    if args.params:
        from dataclasses import replace

        base = replace(params_from_obj(json.loads(args.params)), lane_split=base.lane_split)
    seeds = [int(s) for s in args.seeds.split(",")]
    net = comp.net
    def load(spec):
        ps = _load(comp, spec)
        if spec == "own":  # loaded again on top of the net's programs: under another program id
            from msgspec.structs import replace as with_fields

            ps = with_fields(ps, plans=tuple(with_fields(p, program_id="own") for p in ps.plans))
        return ps

    plansets = [load(p) for p in args.plans]
    wanted = args.signals.split(",") if args.signals else list(net.signal_ids)
    for sid in wanted:
        if sid not in net.signal_index:
            raise SystemExit(f"{args.scenario}: no signal {sid!r}")
    runs = cal.measure(comp, plansets, seeds, args.jobs)  # SUMO's time loss per approach stretch (edgeData)
    sumo = [np.mean([r["approach_time_loss_h"] for r in row], 0) for row in runs]
    models = {m: [model_approach_delay(comp, ps, base, m) for ps in plansets] for m in ("cyclic", "queue")}
    print(f"{comp.scenario.name}: SUMO seeds {args.seeds}; veh*h per approach, plan A -> plan B "
          f"(A = {args.plans[0]}, B = {args.plans[1]})")
    print("network mean delay [s/veh]: " + ", ".join(
        f"{m} {v[0][1]:.1f} -> {v[1][1]:.1f}" for m, v in models.items()))
    print(f"{'approach':14s} {'SUMO':>17s} {'cyclic':>17s} {'queue':>17s}")
    for sid in wanted:
        for a in np.flatnonzero(net.appr_signal == net.signal_index[sid]):
            cells = [(sumo[0][a], sumo[1][a])] + [(v[0][0][a], v[1][0][a]) for v in models.values()]
            print(f"{sid + ' ' + net.appr_edge[a]:14s} " + " ".join(f"{x:6.2f} -> {y:6.2f}" for x, y in cells))
    totals = [(sumo[0].sum(), sumo[1].sum())] + [(v[0][0].sum(), v[1][0].sum()) for v in models.values()]
    print(f"{'all approaches':14s} " + " ".join(f"{x:6.1f} -> {y:6.1f}" for x, y in totals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
