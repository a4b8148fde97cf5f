"""`gronvag predict SCENARIO [--plan FILE] [--model cyclic|queue|both] [--json] [--movements]`.

Prints the models' predicted KPIs (network and per signal) for a plan: the scenario's own programs by default, a
SUMO additional file with tlLogic programs (``.xml``), or a JSON plan file (``gronvag.plan/1``). Imported by the CLI
at start-up, so everything heavy is imported inside :func:`predict_main`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from engine.cli import _scenario_args

    ap = argparse.ArgumentParser(prog="gronvag predict", description="the queue/flow models' predicted KPIs")
    _scenario_args(ap)
    ap.add_argument("--plan", metavar="FILE", help="JSON plan set or SUMO additional file with tlLogic programs "
                                                   "(default: the scenario's own programs)")
    ap.add_argument("--model", choices=("cyclic", "queue", "both"), default="cyclic",
                    help="cyclic flow profile model (steady state) or time-varying queue model (default cyclic)")
    ap.add_argument("--params", metavar="JSON", help="model constants, e.g. '{\"sat_flow_scale\": 1.1, "
                                                     "\"levels\": {\"end_gain_s\": 3}}', a JSON file, or a "
                                                     "`gronvag calibrate` file")
    ap.add_argument("--equal-lane-shares", action="store_true",
                    help="movements sharing a lane get equal shares of it (default: shares in proportion to their "
                         "demand, lane by lane, as the optimiser and the calibration use)")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--movements", action="store_true", help="per-movement figures too")
    return ap


def load_plans(path: str | Path):
    """A PlanSet from a JSON plan file or a SUMO additional file."""
    from engine.errors import GronvagError
    from engine.plan import read_planset

    p = Path(path)
    if not p.is_file():
        raise GronvagError("plan file not found", p)
    if p.suffix.lower() == ".json":
        return read_planset(p)
    from sim.planio import additional_to_planset

    return additional_to_planset(p)


def parse_params(text: str | None):
    """ModelParams from a JSON object (inline or a file, or a `gronvag calibrate` file); unknown keys are an error."""
    from engine.errors import GronvagError
    from models.evaluate import ModelParams

    if not text:
        return ModelParams()
    src = Path(text)
    try:
        is_file = src.is_file()
    except OSError:  # an inline object longer than a file name may be
        is_file = False
    try:
        raw = json.loads(src.read_text() if is_file else text)
    except (OSError, json.JSONDecodeError) as exc:
        raise GronvagError(f"--params is not a JSON object or file ({exc})") from None
    return params_from_obj(raw, src if is_file else None)


def params_from_obj(raw, path=None):
    """ModelParams from a decoded JSON object: the constants, or a `gronvag calibrate` file holding them."""
    from dataclasses import fields, replace

    from engine.errors import GronvagError
    from models.evaluate import ModelParams
    from models.plans import LevelParams

    if not isinstance(raw, dict):
        raise GronvagError("--params must be a JSON object", path)
    if str(raw.get("schema", "")).startswith("gronvag.model-params/"):  # a `gronvag calibrate` file
        raw = raw.get("params")
        if not isinstance(raw, dict):
            raise GronvagError("calibration file without a 'params' object", path)
    raw = dict(raw)
    known = {f.name for f in fields(ModelParams)}
    bad = sorted(set(raw) - known)
    if bad:
        raise GronvagError(f"unknown model parameter {bad[0]!r} (known: {', '.join(sorted(known))})", path)
    levels = raw.pop("levels", None)
    try:
        params = replace(ModelParams(), **raw)
        if levels is not None:
            params = replace(params, levels=replace(LevelParams(), **levels))
    except TypeError as exc:
        raise GronvagError(f"bad --params: {exc}", path) from None
    for name in ("yield_gap_s", "yield_sneakers"):
        value = getattr(params, name)
        if not isinstance(value, int | float) or not value >= 0:
            raise GronvagError(f"model parameter {name!r} must be a number >= 0, not {value!r}", path)
    return params


def _text_report(name: str, ev, movements: bool, net) -> str:
    lines = [
        f"{ev.model} model: mean delay {ev.mean_delay_s:.1f} s/veh, {ev.stops_per_veh:.2f} stops/veh, "
        f"total delay {ev.total_delay_veh_h:.1f} veh*h, {ev.vehicles:.0f} vehicles, max X {ev.max_dos:.2f}",
    ]
    if ev.model == "cyclic":
        n_per = ev.extra.get("analysis_periods", 1)
        lines[-1] += f" (period {ev.extra['period_s']} s, {ev.extra['sweeps']} sweeps" + (
            f", {n_per} analysis periods of {ev.extra['window_h'] * 60 / n_per:.0f} min" if n_per > 1 else "")
        lines[-1] += ")" if ev.extra["converged"] else ", NOT converged)"
    else:
        lines[-1] += (f" (entry backlog {ev.extra['backlog_delay_veh_h']:.1f} veh*h, "
                      f"{ev.extra['residual_queue_veh']:.0f} veh still queued at the end)")
    w = max([len("signal")] + [len(s) for s in ev.signal_ids])
    lines.append(f"  {'signal':<{w}}  delay s/veh  stops/veh  flow veh/h  max X")
    for i, sid in enumerate(ev.signal_ids):
        lines.append(f"  {sid:<{w}}  {ev.signal_delay_s[i]:11.1f}  {ev.signal_stops_per_veh[i]:9.2f}  "
                     f"{ev.signal_flow_veh_h[i]:10.0f}  {ev.signal_max_dos[i]:5.2f}")
    if movements:
        lines.append(f"  {'signal':<{w}}  from -> to: flow veh/h, capacity veh/h, X, delay s/veh, stops/veh, max queue")
        for m in range(net.n_movements):
            lines.append(f"  {net.signal_ids[net.mov_signal[m]]:<{w}}  {net.mov_from_edge[m]} -> {net.mov_to_edge[m]}: "
                         f"{ev.mov_flow_veh_h[m]:.0f}, {ev.mov_capacity_veh_h[m]:.0f}, {ev.mov_dos[m]:.2f}, "
                         f"{ev.mov_delay_s[m]:.1f}, {ev.mov_stops_per_veh[m]:.2f}, {ev.mov_max_queue_veh[m]:.1f}")
    return "\n".join(lines)


def predict_main(argv: list[str]) -> int:
    """Entry point of `gronvag predict` (argv without the command name). Returns the exit code; user errors
    raise engine.errors.GronvagError (the CLI prints them as one line, exit 2)."""
    from engine.cli import _compile
    from engine.errors import GronvagError
    from models.evaluate import MODELS

    args = _parser().parse_args(argv)
    params = parse_params(args.params)
    comp = _compile(args)
    net = comp.net
    if not args.equal_lane_shares:  # the same saturation flows the optimiser and `gronvag calibrate` use
        from dataclasses import replace

        from engine.optimise.calibrate import calibrated_network

        net = calibrated_network(comp.net, comp.demand)
        params = replace(params, lane_split="compiled")
    plans = load_plans(args.plan) if args.plan else None
    models = ("cyclic", "queue") if args.model == "both" else (args.model,)
    results = {}
    try:
        for name in models:
            results[name] = MODELS[name](net, comp.demand, plans, params)
    except ValueError as exc:  # a plan that does not fit the scenario's signals
        raise GronvagError(str(exc), args.plan) from None
    source = args.plan or "the scenario's own programs"
    if args.json:
        out = {"scenario": str(args.scenario), "plan": source,
               "window_s": [comp.demand.begin_s, comp.demand.end_s],
               "models": {k: v.to_dict(movements=args.movements) for k, v in results.items()}}
        sys.stdout.write(json.dumps(out, indent=1, default=float) + "\n")
        return 0
    print(f"{comp.scenario.name}: {comp.net.n_signals} signals, window {comp.demand.begin_s:g}-"
          f"{comp.demand.end_s:g} s, plan: {source}")
    for name, ev in results.items():
        print(_text_report(name, ev, args.movements, net))
    return 0
