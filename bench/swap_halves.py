"""Which half of a plan costs delay in SUMO: its splits or its offsets.

Two plans for the same signals with the same phase sequences (``own`` for the scenario's own programs, or a JSON /
SUMO plan file) are run in SUMO as they are and with their halves swapped: A's phase durations with B's offsets,
and B's durations with A's offsets. Benchmark delay (exact never-departed set), mean over the seeds, each seed
listed.

``python -m bench.swap_halves stockholm-corridor own out/opt/plan.json --seeds 1001-1006``
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _load(comp, spec: str):
    from models.cli_predict import load_plans
    from sim.planio import additional_to_planset

    if spec == "own":
        return additional_to_planset(comp.scenario.net_file)
    return load_plans(spec)


def swap(comp, a, b):
    """{label: PlanSet}: A, B, A's durations with B's offsets, B's durations with A's offsets."""
    from engine.plan import PlanSet, make_plan

    pa = {p.signal_id: p for p in a.plans}
    pb = {p.signal_id: p for p in b.plans}
    ids = [p.signal_id for p in b.plans]
    missing = sorted(set(ids) - set(pa))
    if missing:
        raise SystemExit(f"plan A has no plan for {missing[0]!r}")
    for s in ids:
        if [ph.state for ph in pa[s].phases] != [ph.state for ph in pb[s].phases]:
            raise SystemExit(f"{s}: the two plans' phase sequences differ; halves cannot be swapped")

    def mk(dur, off):
        return PlanSet(plans=tuple(make_plan(s, dur[s].phases, off[s].offset_s) for s in ids))

    return {"A": mk(pa, pa), "B": mk(pb, pb), "A splits + B offsets": mk(pa, pb), "B splits + A offsets": mk(pb, pa)}


def main(argv: list[str] | None = None) -> int:
    from sim import calibrate as cal
    from sim.evaluate import parse_seeds
    from sim.scenario import compile_scenario

    ap = argparse.ArgumentParser(prog="python -m bench.swap_halves", description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("plan_a", help="'own' or a plan file")
    ap.add_argument("plan_b", help="'own' or a plan file")
    ap.add_argument("--seeds", default="1001-1006")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    comp = compile_scenario(args.scenario)
    cands = swap(comp, _load(comp, args.plan_a), _load(comp, args.plan_b))
    seeds = parse_seeds(args.seeds)
    res = cal.measure(comp, list(cands.values()), seeds, workers=args.jobs)
    print(f"{comp.scenario.name}: A = {args.plan_a}, B = {args.plan_b}; benchmark delay [s/veh], seeds {args.seeds}")
    for name, row in zip(cands, res, strict=True):
        v = [r["benchmark_delay_s"] for r in row]
        print(f"{name:22s} {np.mean(v):6.1f}   " + ", ".join(f"{x:.1f}" for x in v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
