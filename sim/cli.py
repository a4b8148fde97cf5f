"""CLI commands of the SUMO side: evaluate (sweeps of runs) and compare (reports over sweeps)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_evaluate(args) -> int:
    from sim.evaluate import evaluate, parse_seeds

    controllers = [c.strip() for c in args.controller.split(",") if c.strip()]
    records = evaluate(
        args.scenario, controllers, parse_seeds(args.seeds), Path(args.out), plan=args.plan, protocol=args.protocol,
        routes=args.routes, jobs=args.jobs, dask_address=args.dask, backend=args.backend, gui=args.gui,
        begin_s=args.begin, end_s=args.end, scale=args.scale,
    )
    failed = [r for r in records if r["status"] != "ok"]
    for r in sorted(records, key=lambda r: (r["controller"], r["seed"])):
        if r["status"] == "ok":
            k = r["kpi"]
            print(f"{r['controller']:>14} seed {r['seed']:>3}: benchmark delay {k['benchmark_delay_s']:8.2f} s  "
                  f"time loss {k['mean_time_loss_s'] or 0:8.2f} s  arrived {k['arrived']:>6}  "
                  f"teleports {k['teleports']:>4}  ({r['wall_s']:.1f} s wall)")
        else:
            print(f"{r['controller']:>14} seed {r['seed']:>3}: FAILED: {r['error']}")
    print(f"{len(records) - len(failed)} runs ok, {len(failed)} failed; records in {Path(args.out) / 'runs'}")
    return 1 if failed else 0


def add_commands(sub, scenario_args, _compile) -> dict:
    """Register evaluate and compare; returns the commands that parse their own argv ({name: func(args)})."""
    p = sub.add_parser("evaluate", help="run a scenario in SUMO with controllers and seeds; write KPIs per run")
    p.add_argument("scenario", help="a .sumocfg, a folder holding one, a .net.xml (with --routes) or a bundled name")
    p.add_argument("--routes", nargs="+", help="route files (override the configuration's)")
    p.add_argument("--begin", type=float, help="window start, s (default: the configuration's)")
    p.add_argument("--end", type=float, help="window end, s (default: the configuration's)")
    p.add_argument("--controller", default="fixed",
                   help="comma-separated: fixed, webster, webster-coord, actuated, max-pressure, plan")
    p.add_argument("--plan", help="plan file for controller 'plan': SUMO additional file with tlLogic, or JSON plan")
    p.add_argument("--seeds", default="1", help="e.g. 1-10 or 1,3,5")
    p.add_argument("--protocol", choices=("default", "resco"), default="default",
                   help="resco: --time-to-teleport -1 and unfinished trips counted (the benchmark protocol)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="demand scale (SUMO --scale): 1.1 inserts 10 %% more vehicles on the same routes (stress test)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--jobs", type=int, help="parallel SUMO processes (default: cores)")
    p.add_argument("--dask", metavar="ADDRESS", help="run on a dask.distributed scheduler instead")
    p.add_argument("--backend", choices=("libsumo", "traci"), default="libsumo")
    p.add_argument("--gui", action="store_true", help="sumo-gui over TraCI (implies --backend traci)")
    p.set_defaults(func=cmd_evaluate)

    from sim.report import compare_main

    p = sub.add_parser("compare", help="table (markdown, CSV) and plots of KPIs over evaluate output folders",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda a: compare_main(a.rest))
    return {"compare": p.get_default("func")}
