"""`gronvag optimise SCENARIO --out DIR [options]`: optimise cycles, splits and offsets and write the plan.

    gronvag optimise stockholm-corridor --out out/corridor --time-limit 30 --seed 1
    gronvag optimise ../shared/scenarios/cologne3 --out out/c3 --cycle-min 50 --cycle-max 100 --pin 360082:0=30

Arguments are parsed here into :class:`OptimiseOptions`; errors the user can fix (unknown scenario or signal, a
request no timing can meet) end as one line on stderr and exit code 2, with no output written.

One plan per signal for the whole demand window (its validity period is the window); time-of-day plans from the
time-sliced demand are not made yet. ``--time-limit`` bounds the model optimisation (scenario compile excluded);
``--sim-check`` adds SUMO runs on training seeds after it (see :mod:`engine.optimise.simcheck`). ``--help`` needs a
SCENARIO before it when called through ``gronvag`` (``gronvag optimise x --help``).

Objective weights (:mod:`engine.optimise.evaluation`): ``--bus-weight W`` counts a bus's delay and stops W times
(default 1: off); ``--ped-weight W`` adds W times the HCM pedestrian delay at signalised crossings (default 0: off),
with the scenario's pedestrian flows per crossing (its walks routed on the pedestrian graph), or ``--ped-flow P``
pedestrians/h per crossing (also the default, 100, when the scenario has no walks).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from engine.errors import GronvagError
from engine.optimise.instance import DEFAULT_STOP_COST_S, OptimiseOptions, Pin


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="gronvag optimise",
        description="Optimise cycle, splits and offsets of a scenario's signals (CP-SAT, then a local search on the "
                    "cyclic flow profile model) and write the plan: plan.json, plan.add.xml (SUMO), summary.md.")
    ap.add_argument("scenario", help="a .sumocfg, a folder holding one, a .net.xml (with --routes) or a bundled name")
    ap.add_argument("--out", required=True, help="output folder (new, empty, or an earlier optimise output)")
    ap.add_argument("--time-limit", type=float, default=30.0, help="optimisation wall time, s (default 30)")
    ap.add_argument("--seed", type=int, default=1, help="random seed: same seed, same plan (default 1)")
    ap.add_argument("--workers", type=int, default=2, help="CP-SAT worker threads (default 2)")
    ap.add_argument("--signals", help="comma-separated traffic light ids to optimise (default: all)")
    ap.add_argument("--stop-cost", type=float, default=DEFAULT_STOP_COST_S,
                    help=f"seconds of delay one stop costs (default {DEFAULT_STOP_COST_S:g}: its fuel and CO2)")
    ap.add_argument("--bus-weight", type=float, default=1.0, metavar="W",
                    help="a bus's delay and stops count W times what they count now (its pcu, 2.0, times a car's; "
                         "for person delay W = bus occupancy / (car occupancy x 2)); buses: vClass bus/coach or a "
                         "vType id with 'bus' (default 1: off; see engine.optimise.evaluation)")
    ap.add_argument("--ped-weight", type=float, default=0.0, metavar="W",
                    help="add W times the pedestrian delay at signalised crossings, HCM (C - g_walk)^2 / (2 C) per "
                         "pedestrian (default 0: pedestrians not in the objective)")
    ap.add_argument("--ped-flow", type=float, default=None, metavar="P",
                    help="pedestrians/h per signalised crossing for --ped-weight (default: the scenario's walks "
                         "routed to the crossings they use, or 100 per crossing when the scenario has none)")
    ap.add_argument("--cycle-min", type=int, default=40, help="shortest cycle, s (default 40)")
    ap.add_argument("--cycle-max", type=int, default=120, help="longest cycle, s (default 120)")
    ap.add_argument("--max-dos", type=float, default=0.90,
                    help="degree-of-saturation cap, hard wherever a timing can meet it (default 0.90)")
    ap.add_argument("--pin", action="append", default=[], metavar="SIGNAL:PHASE=SECONDS",
                    help="fix a phase duration (0-based phase index of the program); repeatable")
    ap.add_argument("--program-id", default="gronvag-opt", help="programID of the new SUMO programs")
    ap.add_argument("--coord-travel-max", type=float, default=120.0,
                    help="signals linked by traffic within this free-flow travel time share a cycle (s)")
    ap.add_argument("--search-rounds", type=int, default=400, help="local-search rounds at most (default 400)")
    ap.add_argument("--no-search", action="store_true", help="CP-SAT only, no local search")
    ap.add_argument("--phase-skip", action="store_true",
                    help="leave out green phases a program does not need (every signal group keeps its green; "
                         "transitions from the safety spec; see engine.optimise.structure)")
    ap.add_argument("--phase-order", action="store_true",
                    help="let the model choose the order of each signal's green phases (lead or lag of turning "
                         "phases) where the safety rules allow another (see engine.optimise.order)")
    ap.add_argument("--equal-lane-shares", action="store_true",
                    help="keep the compiler's 1/k split of shared lanes (default: divide them by demand)")
    ap.add_argument("--routes", nargs="+", help="route / trip / flow files (override the configuration's)")
    ap.add_argument("--begin", type=float, help="window start, s (default: the configuration's)")
    ap.add_argument("--end", type=float, help="window end, s (default: the configuration's)")
    ap.add_argument("--bin", type=float, default=900.0, help="demand time-bin width, s (default 900)")
    ap.add_argument("--sat-flow", metavar="JSON",
                    help="saturation-flow file: base, turn factors, overrides (e.g. measured by gronvag satflow)")
    ap.add_argument("--sim-check", action="store_true",
                    help="let SUMO choose among model-optimal plans at several cycles and the current plan "
                         "(training seeds --sim-seeds; see engine.optimise.simcheck)")
    ap.add_argument("--sim-seeds", default="1001-1003", help="SUMO seeds of the check (default 1001-1003)")
    ap.add_argument("--sim-cycles", type=int, default=4, help="cycle levels the check tries (default 4)")
    ap.add_argument("--sim-rounds", type=int, default=2, help="rounds of the check (default 2)")
    ap.add_argument("--sim-margin", type=float, default=0.05,
                    help="the check changes the cycle only for a gain of at least this share (default 0.05)")
    ap.add_argument("--sim-stress", type=float, default=1.1, metavar="SCALE",
                    help="the check's stress test: its choice must do no worse than the current plan with the demand "
                         "x SCALE on seeds --sim-stress-seeds (default 1.1; 0: off)")
    ap.add_argument("--sim-stress-seeds", default="2001-2030", help="seeds of the stress test (default 2001-2030)")
    ap.add_argument("--sim-polish", type=int, default=0, metavar="N",
                    help="then a local search in SUMO on the training seeds, at most N plan evaluations "
                         "(default 0: off; see engine.optimise.simpolish)")
    ap.add_argument("--sim-validate", metavar="SEEDS",
                    help="then run the chosen plan and the scenario's programs on these other seeds; keep the plan "
                         "only if SUMO shows it better there, beyond the noise (else write the programs; "
                         "engine.optimise.simvalidate)")
    ap.add_argument("--sim-shared", action="store_true",
                    help="the polish also tries each split step at all signals of one phase structure at once")
    ap.add_argument("--sim-sweep", action="store_true",
                    help="the polish first runs every 2 s split step shared by all signals of one phase structure; "
                         "the best is kept only if it shows its gain again on --sim-confirm-seeds")
    ap.add_argument("--sim-confirm-seeds", default="3001-3024",
                    help="seeds on which the sweep confirms its best step (default 3001-3024; apart from --sim-seeds)")
    ap.add_argument("--protocol", default="default", help="SUMO protocol of the check: default or resco")
    ap.add_argument("--jobs", type=int, default=2, help="parallel SUMO runs of the check (default 2)")
    ap.add_argument("--periods", metavar="N|FROM-TO,...",
                    help="time-of-day plans: N equal periods of the window, or contiguous periods as H:MM or seconds "
                         "(e.g. 7:00-7:30,7:30-8:00); one plan per period, joined by transition cycles and a WAUT "
                         "(engine.optimise.periods)")
    ap.add_argument("--params", metavar="JSON",
                    help="the models' constants: a `gronvag calibrate` file or a JSON object (default: defaults)")
    ap.add_argument("--quiet", action="store_true", help="no progress display")
    return ap


def options_from_args(args) -> OptimiseOptions:
    signals = tuple(s.strip() for s in args.signals.split(",") if s.strip()) if args.signals else None
    opts = OptimiseOptions(
        time_limit_s=args.time_limit, seed=args.seed, workers=args.workers, stop_cost_s=args.stop_cost,
        cycle_min_s=args.cycle_min, cycle_max_s=args.cycle_max, max_dos=args.max_dos, signals=signals,
        pins=tuple(Pin.parse(p) for p in args.pin), program_id=args.program_id,
        coord_travel_max_s=args.coord_travel_max, search=not args.no_search, search_rounds=args.search_rounds,
        shared_lanes_by_demand=not args.equal_lane_shares, bus_weight=args.bus_weight, ped_weight=args.ped_weight,
        ped_flow_h=args.ped_flow)
    opts.check()
    return opts


class _RichReporter:
    def __init__(self, progress, task, t0: float):
        self.progress = progress
        self.task = task
        self.t0 = t0

    def stage(self, text: str) -> None:
        self.progress.update(self.task, description=text, completed=time.perf_counter() - self.t0)

    def objective(self, value: float) -> None:
        self.progress.update(self.task, obj=f"objective {value:,.0f}", completed=time.perf_counter() - self.t0)


def run(args, argv: list[str]) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from engine.optimise.instance import build_instance
    from engine.optimise.output import build_summary, output_files, write_outputs
    from engine.optimise.run import Reporter, optimise
    from models.cli_predict import parse_params
    from sim.netcompile import SatFlowConfig
    from sim.scenario import compile_scenario

    opts = options_from_args(args)
    params = parse_params(args.params) if args.params else None
    console = Console(stderr=True)
    sat = SatFlowConfig.from_json(args.sat_flow) if args.sat_flow else None
    comp = compile_scenario(args.scenario, routes=args.routes, bin_s=args.bin, begin_s=args.begin, end_s=args.end,
                            sat=sat)
    if args.periods:
        return run_periods(args, argv, opts, params, comp, console, sat)
    inst = build_instance(comp.net, comp.demand, opts, scenario=comp.scenario.name, net_file=comp.scenario.net_file,
                          phase_skip=args.phase_skip, model_params=params)
    base_inst = inst
    if inst.skipped:
        base_inst = build_instance(comp.net, comp.demand, opts, scenario=comp.scenario.name,
                                   net_file=comp.scenario.net_file, model_params=params)
    order_info = None
    t0 = time.perf_counter()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[obj]}"), console=console, disable=args.quiet, transient=True)
    sim_info = polish_info = valid_info = None
    with progress:
        task = progress.add_task("optimising", total=opts.time_limit_s, obj="")
        reporter = _RichReporter(progress, task, t0) if not args.quiet else Reporter()
        res = optimise(inst, reporter)
        if args.phase_order:
            res, inst, base_inst, order_info = _phase_order(args, comp, opts, params, inst, base_inst, res, reporter)
        if args.sim_check:
            from engine.optimise.simcheck import SimCheckOptions, sim_select
            from sim.evaluate import parse_seeds

            sopts = SimCheckOptions(seeds=tuple(parse_seeds(args.sim_seeds)), cycles=args.sim_cycles,
                                    rounds=args.sim_rounds, protocol=args.protocol, jobs=args.jobs,
                                    margin=args.sim_margin, stress_scale=args.sim_stress,
                                    stress_seeds=tuple(parse_seeds(args.sim_stress_seeds)),
                                    model_time_s=max(2.0, opts.time_limit_s / 2))
            with tempfile.TemporaryDirectory(prefix="gronvag-simcheck-") as tmp:
                res, inst, sim_info = sim_select(inst, res, args.scenario, sopts, Path(tmp), reporter,
                                                 routes=args.routes, begin=args.begin, end=args.end,
                                                 base_inst=base_inst)
        if args.sim_polish > 0:
            from engine.optimise.simpolish import SimPolishOptions, sim_polish
            from sim.evaluate import parse_seeds

            popts = SimPolishOptions(budget=args.sim_polish, seeds=tuple(parse_seeds(args.sim_seeds)),
                                     protocol=args.protocol, jobs=args.jobs, seed=opts.seed,
                                     shared=args.sim_shared, sweep=args.sim_sweep,
                                     confirm_seeds=tuple(parse_seeds(args.sim_confirm_seeds)))
            with tempfile.TemporaryDirectory(prefix="gronvag-simpolish-") as tmp:
                res, polish_info = sim_polish(inst, res, comp, popts, Path(tmp), reporter)
        if args.sim_validate:
            from engine.optimise.simvalidate import SimValidateOptions, sim_validate
            from sim.evaluate import parse_seeds

            vopts = SimValidateOptions(seeds=tuple(parse_seeds(args.sim_validate)), protocol=args.protocol,
                                       jobs=args.jobs)
            res, inst, valid_info = sim_validate(inst, res, base_inst, comp, vopts, reporter)
    command = "gronvag optimise " + " ".join(shlex.quote(a) for a in argv)
    summary = build_summary(inst, res.solution, res.outcomes, res.current, res.optimised, command)
    if sim_info is not None:
        summary["sim_check"] = sim_info
    if polish_info is not None:
        summary["sim_polish"] = polish_info
    if valid_info is not None:
        summary["sim_validate"] = valid_info
    if order_info is not None:
        summary["phase_order"] = order_info
    summary["wall_s"] = round(time.perf_counter() - t0, 2)
    out = write_outputs(args.out, output_files(inst, res.solution, summary))
    cur, new = summary["predicted"]["current"], summary["predicted"]["optimised"]
    if not args.quiet:
        console.print(f"[bold]{comp.scenario.name}[/bold]: {len(inst.signals)} signals in {len(inst.groups)} "
                      f"group(s), {summary['wall_s']} s")
        console.print(f"predicted objective {cur['objective']:,.0f} -> {new['objective']:,.0f}; mean delay "
                      f"{cur['mean_delay_s']:.1f} -> {new['mean_delay_s']:.1f} s/veh; stops/veh "
                      f"{cur['stops_per_veh']:.2f} -> {new['stops_per_veh']:.2f}")
    print(out)
    return 0


def _phase_order(args, comp, opts, params, inst, base_inst, res, reporter):
    """--phase-order: the model's choice of green-phase orders, then the optimiser again on those structures; the
    re-optimised result only where the model scores it better. Returns (res, inst, base_inst, summary record)."""
    from engine.optimise.instance import build_instance
    from engine.optimise.order import choose_orders
    from engine.optimise.run import optimise

    def build(structures):
        return build_instance(comp.net, comp.demand, opts, scenario=comp.scenario.name,
                              net_file=comp.scenario.net_file, phase_skip=args.phase_skip, model_params=params,
                              structures=structures)

    chosen, records = choose_orders(build, inst, res, reporter)
    info = {"changed": records, "kept": "program order"}
    if not chosen:
        return res, inst, base_inst, info
    inst2 = build(chosen)
    res2 = optimise(inst2, reporter)
    info["objective_program_order"] = round(float(res.optimised[0]), 1)
    info["objective_new_order"] = round(float(res2.optimised[0]), 1)
    if res2.optimised[0] < res.optimised[0]:
        info["kept"] = "new order"
        return res2, inst2, (inst2 if base_inst is inst else base_inst), info
    return res, inst, base_inst, info


def run_periods(args, argv: list[str], opts, params, comp, console, sat=None) -> int:
    """`--periods`: optimise each period on its own demand, join the plans with transition cycles, write once."""
    import dataclasses

    from engine.optimise.instance import build_instance
    from engine.optimise.output import build_summary, planset_files, render_markdown, write_outputs
    from engine.optimise.periods import join, parse_periods
    from engine.optimise.run import Reporter, optimise
    from engine.optimise.solution import to_planset
    from engine.plan import PlanSet, now_iso
    from sim.scenario import compile_scenario

    if args.sim_check or args.sim_polish or args.sim_validate or args.phase_order:
        raise GronvagError("--sim-check, --sim-polish, --sim-validate and --phase-order work on one period; run "
                           "them without --periods")
    periods = parse_periods(args.periods, comp.demand.begin_s, comp.demand.end_s)
    t0 = time.perf_counter()
    plans, summaries = [], []
    for k, (b, e) in enumerate(periods):
        pc = compile_scenario(args.scenario, routes=args.routes, bin_s=args.bin, begin_s=b, end_s=e, sat=sat)
        popts = dataclasses.replace(opts, time_limit_s=opts.time_limit_s / len(periods),
                                    program_id=f"{opts.program_id}-p{k + 1}")
        inst = build_instance(pc.net, pc.demand, popts, scenario=pc.scenario.name, net_file=pc.scenario.net_file,
                              phase_skip=args.phase_skip, model_params=params)
        if not args.quiet:
            console.print(f"period {k + 1}/{len(periods)}: {b:g}-{e:g} s")
        res = optimise(inst, Reporter())
        plans.append(list(to_planset(inst, res.solution).plans))
        summaries.append(build_summary(inst, res.solution, res.outcomes, res.current, res.optimised, ""))
    joined, transitions = join(plans, periods, comp.net)
    ps = PlanSet(plans=tuple(joined), scenario=comp.scenario.name, created=now_iso())
    command = "gronvag optimise " + " ".join(shlex.quote(a) for a in argv)
    summary = {"scenario": comp.scenario.name, "command": command, "periods": [
        {"from_s": b, "to_s": e, **s} for (b, e), s in zip(periods, summaries, strict=True)],
        "transitions": transitions, "wall_s": round(time.perf_counter() - t0, 2)}
    md = [f"# Time-of-day plans: {comp.scenario.name}", "", f"Made by `{command}`.", "",
          f"{len(periods)} periods; plans switch at the first cycle start after each boundary, through one "
          "transition cycle that brings the new plan to its offset (engine.optimise.periods).", "",
          "| period | cycle(s) [s] | predicted mean delay current -> optimised [s/veh] |", "|---|---|---|"]
    for (b, e), s in zip(periods, summaries, strict=True):
        cyc = sorted({g["cycle_s"] for g in s["groups"]})
        md.append(f"| {b:g}-{e:g} s | {', '.join(map(str, cyc))} | {s['predicted']['current']['mean_delay_s']:.1f} "
                  f"-> {s['predicted']['optimised']['mean_delay_s']:.1f} |")
    for k, s in enumerate(summaries):
        md += ["", render_markdown(s).replace("# Optimised signal plan:", f"## Period {k + 1}:", 1).replace(
            "\n## ", "\n### ")]
    out = write_outputs(args.out, planset_files(ps, summary, "\n".join(md) + "\n"))
    if not args.quiet:
        console.print(f"[bold]{comp.scenario.name}[/bold]: {len(periods)} periods, {len(transitions)} transitions, "
                      f"{summary['wall_s']} s")
    print(out)
    return 0


def _check_seed_options(args) -> None:
    """Fail before any work on a seed list the SUMO stages could not read, naming the option."""
    from sim.evaluate import parse_seeds

    seeds = {}
    for opt, text in (("--sim-seeds", args.sim_seeds), ("--sim-stress-seeds", args.sim_stress_seeds),
                      ("--sim-validate", args.sim_validate), ("--sim-confirm-seeds", args.sim_confirm_seeds)):
        if text is None:
            continue
        try:
            seeds[opt] = set(parse_seeds(text))
        except GronvagError:
            raise GronvagError(f"bad {opt} {text!r}: use e.g. 1-10 or 1,3,5") from None
    both = seeds.get("--sim-seeds", set()) & seeds.get("--sim-confirm-seeds", set())
    if both and args.sim_sweep and args.sim_polish > 0:
        raise GronvagError(f"--sim-confirm-seeds share seeds {sorted(both)} with --sim-seeds: a confirmation runs on "
                           "seeds that took no part in the choice")


def optimise_main(argv: list[str]) -> int:
    """Entry point of `gronvag optimise`: returns the exit code (2 with one line on stderr for user errors)."""
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        if args.sim_stress < 0:
            raise GronvagError(f"--sim-stress {args.sim_stress:g}: a demand scale is >= 0 (0: no stress test)")
        _check_seed_options(args)
        return run(args, list(argv))
    except GronvagError as exc:
        print(f"gronvag: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "optimise_main", "options_from_args"]
