"""The `gronvag` command line. Parses arguments at the edge and hands typed values to the library.

Every user error (missing or malformed file, impossible request) ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from engine.errors import GronvagError


def _scenario_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", help="a .sumocfg, a folder holding one, a .net.xml (with --routes) or a bundled name")
    p.add_argument("--routes", nargs="+", help="route / trip / flow files (override the configuration's)")
    p.add_argument("--begin", type=float, help="window start, s (default: the configuration's)")
    p.add_argument("--end", type=float, help="window end, s (default: the configuration's)")
    p.add_argument("--bin", type=float, default=900.0, help="demand time-bin width, s (default 900)")
    p.add_argument("--sat-flow", metavar="JSON", help="saturation-flow calibration: base, turn factors, overrides")


def _compile(args):
    from sim.netcompile import SatFlowConfig
    from sim.scenario import compile_scenario

    sat = SatFlowConfig.from_json(args.sat_flow) if args.sat_flow else None
    return compile_scenario(args.scenario, routes=args.routes, bin_s=args.bin, begin_s=args.begin, end_s=args.end,
                            sat=sat)


def cmd_info(args) -> int:
    from rich.console import Console

    from engine.info import print_report, scenario_report

    rep = scenario_report(_compile(args))
    if args.json:
        sys.stdout.write(json.dumps(rep, indent=1) + "\n")
    else:
        print_report(rep, args.detail, Console(width=shutil.get_terminal_size((160, 40)).columns))
    return 0


def cmd_scenarios(args) -> int:
    from sim import scenarios

    if args.build:
        print(scenarios.build(args.build))
        return 0
    for name in scenarios.bundled_names():
        print(name)
    return 0


def cmd_demo(args) -> int:
    from engine.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gronvag", description="Grönvåg traffic signal optimisation engine")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="what the compiler makes of a scenario: signals, phases, movements, demand")
    _scenario_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--detail", action="store_true", help="phases and movements of every signal")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("scenarios", help="list the bundled scenarios, or build one and print its .sumocfg")
    p.add_argument("--build", metavar="NAME")
    p.set_defaults(func=cmd_scenarios)

    p = sub.add_parser("demo", help="the main job on the bundled default scenario")
    p.add_argument("--scenario", default="stockholm-corridor")
    p.add_argument("--seeds", default="1-3")
    p.add_argument("--time-limit", type=float, default=20.0, help="optimiser time limit, s (the proof table's)")
    p.add_argument("--out", default="out/demo")
    p.set_defaults(func=cmd_demo)

    ap.delegated = _add_late_commands(sub)
    return ap


# Commands implemented in other packages as `fn(argv) -> exit code`; each is registered only where it exists.
_DELEGATED = (
    ("optimise", "engine.optimise.cli", "optimise_main", "optimise cycles, splits and offsets (CP-SAT + model search)"),
    ("predict", "models.cli_predict", "predict_main", "the queue/flow models' predicted KPIs for a plan"),
    ("calibrate", "sim.calibrate", "main", "fit the models' constants to SUMO runs of random plans"),
    ("satflow", "sim.satflow", "main", "measure saturation flows per movement in SUMO (queue discharge headways)"),
    ("serve", "controllers.cli", "serve_main", "engine side of the controller link: serve plans over ZeroMQ"),
    ("controller", "controllers.cli", "controller_main", "one intersection controller agent"),
    ("keys", "controllers.cli", "keys_main", "create and list CURVE key pairs"),
)


def _add_late_commands(sub) -> dict:
    """Register the commands implemented elsewhere; returns {name: func(args)} of those that parse their own argv."""
    import importlib

    from sim.cli import add_commands as add_sim

    delegated = add_sim(sub, _scenario_args, _compile)
    for name, module, func, text in _DELEGATED:
        try:
            fn = getattr(importlib.import_module(module), func)
        except ModuleNotFoundError as exc:
            if not (module == exc.name or module.startswith(f"{exc.name}.")):  # present but broken: never hide it
                raise
            continue
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda a, fn=fn: fn(a.rest))
        delegated[name] = p.get_default("func")
    return delegated


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = build_parser()
    if argv and argv[0] in ap.delegated:
        # a delegated command parses its own arguments (argparse.REMAINDER would swallow a leading --help)
        args = argparse.Namespace(rest=argv[1:], func=ap.delegated[argv[0]])
    else:
        args = ap.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GronvagError as exc:
        print(f"gronvag: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gronvag: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["main", "build_parser"]
