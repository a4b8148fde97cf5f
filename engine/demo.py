"""`gronvag demo` / `make demo`: the main job on the bundled default scenario.

Until the optimiser lands, the demo compiles the bundled Stockholm corridor, prints what the compiler found, runs it
in SUMO with its own fixed-time plans and with the available baselines over a few seeds, and prints the KPI table.
"""

from __future__ import annotations

from pathlib import Path


def run_demo(args) -> int:
    import shutil

    from rich.console import Console

    from engine.info import print_report, scenario_report
    from sim.evaluate import evaluate, parse_seeds
    from sim.scenario import compile_scenario

    console = Console(width=shutil.get_terminal_size((160, 40)).columns)
    comp = compile_scenario(args.scenario)
    print_report(scenario_report(comp), False, console)
    controllers = ["fixed", "max-pressure"]
    try:
        import sim.baselines  # noqa: F401

        controllers += ["actuated", "webster"]
    except ImportError:
        pass
    out = Path(args.out)
    records = evaluate(args.scenario, controllers, parse_seeds(args.seeds), out)
    try:
        from sim.report import compare

        compare([out], out, console=console)
    except ImportError:
        for r in sorted(records, key=lambda r: (r["controller"], r["seed"])):
            k = r.get("kpi") or {}
            console.print(f"{r['controller']:>14} seed {r['seed']}: {r['status']} "
                          f"delay {k.get('benchmark_delay_s', float('nan')):.1f} s")
    failed = [r for r in records if r["status"] != "ok"]
    for r in failed:
        console.print(f"[red]{r['controller']} seed {r['seed']} failed:[/red] {r['error']}")
    console.print(f"run records, tripinfo and SUMO outputs in {out}")
    return 1 if failed else 0
