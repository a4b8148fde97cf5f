"""Giving-way constants chosen on calibration plans: the models' rank correlation with SUMO over a grid of
(t0, sneakers).

    python -m bench.giving_way_grid stockholm-corridor --gaps 1.5,2,2.5,3,3.5 --sneakers 0.5,1,2

The plans are the calibration set `gronvag calibrate` measures (24 random plans drawn with seed 1000, SUMO seeds
101-103; ``--sumo-cache DIR`` reuses runs). For every pair the model's network delay is set against SUMO's mean time
loss and the Spearman rank correlation printed; the pair with the highest is the one to choose. ``--judged`` also
prints the fidelity benchmark's judged plan samples (plan seeds 0 and 7, SUMO seeds 1-3) beside, for the record:
they are not for choosing. This is how models.evaluate.ModelParams' defaults (3.0 s, 0.5) were chosen
(bench/results/models_fidelity.md, session 8 notes).

``--sat-flow FILE`` (saturation flows measured by `gronvag satflow`) runs every pair twice on the same plans: on the
compiler's saturation flows and on the measured ones, so the calibration plans say whether the measured flows help
(models_fidelity.md, session 12 notes).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, not {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    from models.evaluate import MODELS

    ap = argparse.ArgumentParser(prog="python -m bench.giving_way_grid", description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("--gaps", type=_floats, default=[2.0, 2.5, 3.0, 3.5], help="t0 values, s")
    ap.add_argument("--sneakers", type=_floats, default=[0.0, 0.5, 1.0], help="vehicles per lane and green")
    ap.add_argument("--model", choices=sorted(MODELS), default="cyclic")
    ap.add_argument("--plans", type=int, default=24)
    ap.add_argument("--judged", action="store_true", help="also print the judged plan samples (plan seeds 0, 7)")
    ap.add_argument("--end", type=float, help="window end, s (default: the configuration's)")
    ap.add_argument("--sumo-cache", type=Path)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--params", metavar="JSON",
                    help="the other model constants the grid runs on (a JSON object, as gronvag predict --params)")
    ap.add_argument("--sat-flow", metavar="JSON", type=Path,
                    help="also run every pair on these measured saturation flows (gronvag satflow), same plans")
    args = ap.parse_args(argv)
    if any(g < 0 for g in args.gaps) or any(s < 0 for s in args.sneakers):
        ap.error("t0 and sneakers must be >= 0")
    from engine.errors import GronvagError

    try:
        return _grid(args)
    except GronvagError as exc:  # a bad scenario, sat-flow or params file: one line naming it
        print(f"giving_way_grid: error: {exc}", file=sys.stderr)
        return 2


def _grid(args) -> int:
    from models.cli_predict import parse_params
    from models.evaluate import MODELS, ModelParams
    from sim import calibrate as cal
    from sim.scenario import compile_scenario

    comp, base = cal.shared_lanes_by_demand(compile_scenario(args.scenario, end_s=args.end),
                                            parse_params(args.params) if args.params else ModelParams())
    nets = {"": comp}  # the plans are drawn on the compiler's flows; the measured ones only change the model
    if args.sat_flow:
        from sim.netcompile import SatFlowConfig

        sat = SatFlowConfig.from_json(args.sat_flow)
        nets = {"compiled flows, ": comp,
                "measured flows, ": cal.shared_lanes_by_demand(compile_scenario(args.scenario, end_s=args.end,
                                                                               sat=sat), base)[0]}
    # (plan sets, SUMO's mean time loss of each): the calibration set, and the same draw for the judged samples
    samples = {"calibration": cal.calibration_set(comp, args.plans, workers=args.jobs, cache=args.sumo_cache)[:2]}
    if args.judged:
        for pseed in (0, 7):
            samples[f"judged seed {pseed}"] = cal.calibration_set(comp, 50, (1, 2, 3), pseed, args.jobs,
                                                                  cache=args.sumo_cache)[:2]
    print(f"{comp.scenario.name}: {args.model} model, Spearman (MAPE) against SUMO's mean time loss ("
          + ", ".join(f"{k}: {len(v[0])} plans" for k, v in samples.items()) + ")")
    best = None
    for gap, sneakers, (flows, c) in itertools.product(args.gaps, args.sneakers, nets.items()):
        params = replace(base, yield_gap_s=gap, yield_sneakers=sneakers)
        cells = []
        for name, (plans, sumo) in samples.items():
            model = np.array([MODELS[args.model](c.net, c.demand, p, params).network_delay_s for p in plans])
            fit = cal.fit_stats(model, sumo)
            rho = fit["spearman"]
            cells.append(f"{name} {rho:.3f} ({fit['mape_pct']:.1f} %)")
            if name == "calibration" and (best is None or rho > best[0]):
                best = (rho, gap, sneakers, flows)
        print(f"{flows}t0 {gap:4.2f} s, sneakers {sneakers:4.2f}: " + " | ".join(cells), flush=True)
    print(f"best on the calibration plans: {best[3]}t0 {best[1]:g} s, {best[2]:g} sneakers (Spearman {best[0]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
