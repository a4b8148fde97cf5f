"""`gronvag demo` / `make demo`: the main job on the bundled default scenario.

1. compile the bundled Stockholm corridor and print what the compiler found;
2. optimise its plans with the request of the optimiser's proof table (bench/results/optimiser.md): the model's
   candidates checked in SUMO on training seeds 1001-1006 and the choice stress-tested with 10 % more demand on seeds
   2001-2030; then the SUMO polish, a sweep of split steps shared by like signals first, each kept step confirmed on
   seeds 3001-3024; the maximum degree of saturation 1.0. No seed of step 3 is used (about 20 minutes on 2 cores);
3. run SUMO over a few seeds with the optimised plan and the baselines an engineer would otherwise use (the
   scenario's own plans, Webster, SUMO's actuated control, max-pressure), and print the KPI table.

Everything lands in ``--out`` (default ``out/demo``): the optimised plan (JSON and SUMO additional file), each run's
SUMO outputs and record, and the comparison as markdown, CSV and plots.
"""

from __future__ import annotations

from pathlib import Path

# the optimiser's request in the proof table (bench/prove_optimiser.py's --optimise-args and flags), less the
# time limit and seed, which the demo passes itself
DEMO_REQUEST = ("--sim-check", "--sim-polish", "40", "--phase-skip", "--sim-seeds", "1001-1006", "--sim-shared",
                "--sim-sweep", "--max-dos", "1.0", "--protocol", "default", "--jobs", "2")


def run_demo(args) -> int:
    import shutil

    from rich.console import Console

    from engine.info import print_report, scenario_report
    from sim.evaluate import evaluate, parse_seeds
    from sim.report import compare
    from sim.scenario import compile_scenario

    console = Console(width=shutil.get_terminal_size((160, 40)).columns)
    out = Path(args.out)
    comp = compile_scenario(args.scenario)
    print_report(scenario_report(comp), False, console)

    controllers = ["fixed", "webster", "actuated", "max-pressure"]
    plan = None
    plan_dir = out / "optimise"
    try:
        from engine.optimise.cli import optimise_main
    except ModuleNotFoundError:
        optimise_main = None
    if optimise_main is not None:
        console.rule("optimise")
        code = optimise_main([args.scenario, "--out", str(plan_dir), "--time-limit", str(args.time_limit),
                              "--seed", "1", *DEMO_REQUEST])
        if code == 0 and (plan_dir / "plan.json").is_file():
            plan = plan_dir / "plan.json"
            controllers.append("plan")
        else:
            console.print(f"[red]optimise failed (exit {code}); comparing the baselines only[/red]")
    console.rule("SUMO")
    records = evaluate(args.scenario, controllers, parse_seeds(args.seeds), out / "runs", plan=plan)
    compare([out / "runs"], out, console=console)
    failed = [r for r in records if r["status"] != "ok"]
    for r in failed:
        console.print(f"[red]{r['controller']} seed {r['seed']} failed:[/red] {r['error']}")
    if plan is not None:
        console.print(f"'plan' is the optimised plan: {plan} (SUMO file {plan_dir / 'plan.add.xml'})")
    console.print(f"run records, tripinfo and SUMO outputs in {out / 'runs'}; tables and plots in {out}")
    return 1 if failed else 0
