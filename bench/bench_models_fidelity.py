"""Fidelity of the models against SUMO: random valid fixed-time plans, model delay vs SUMO time loss.

For each scenario (grid4x4 and cologne3 from ../shared/scenarios when present, and the bundled corridor):

1. **calibrate** (``sim.calibrate``, the same procedure as ``gronvag calibrate``): 24 random plans drawn with
   seed 1000, SUMO seeds 101-103, the constants fitted to SUMO's mean time loss;
2. **judge** on N different random plans (drawn with seed 0), each run in SUMO with seeds 1-3: the model's mean
   delay per vehicle inside the network (``Evaluation.network_delay_s``: a vehicle held outside a full entry
   approach counts from when it enters, as SUMO's time loss counts it; SUMO books the wait outside as departure
   delay) against SUMO's mean ``timeLoss`` of the vehicles that departed (tripinfo), with the default constants and
   with the calibrated ones; and per signal: the model's total delay at the signal (veh*h; the cyclic model's less
   its wait outside full entry approaches, which SUMO does not book on the edges either) against SUMO's
   ``timeLoss`` summed over the signal's approach edges and the edges that lead only into them (edgeData;
   ``sim.calibrate.approach_stretches``: a queue that outgrows a turn pocket's section backs up there). Reported:
   Spearman rank correlation (goal >= 0.9) and mean absolute percentage error (goal <= 15 %), for the cyclic and
   the queue model.

Random plans (``sim.calibrate.random_plansets``): the scenario's phase sequences, a common random cycle of
50-130 s, offsets uniform over the cycle, green splits demand-proportional with log-normal noise (sigma 0.4):
from well to badly timed. ``--splits uniform`` draws Dirichlet(1) splits instead: most such plans starve some
movement; on cologne3 they gridlock the entries (hundreds of vehicles never inserted), where SUMO's time loss
(which leaves out the wait to enter) and any model part ways; reported as a stress set.

``python -m bench.bench_models_fidelity [--plans 50] [--seeds 1,2,3] [--md FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "scenarios"


def scenarios_available(smoke: bool) -> list[str]:
    out = []
    for name in ("grid4x4", "cologne3"):
        cfg = SHARED / name / f"{name}.sumocfg"
        if cfg.is_file():
            out.append(str(cfg))
    out.append("stockholm-corridor")
    return out[:1] if smoke else out


def _model_delays(comp, plansets, params, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean delay per vehicle (K,) and total delay per signal in veh*h (K, S), one evaluation per plan set."""
    from models.evaluate import MODELS

    mean, rows = [], []
    for ps in plansets:
        ev = MODELS[model](comp.net, comp.demand, ps, params)
        mean.append(ev.network_delay_s)
        # the wait of vehicles held outside a full entry approach is not time loss on its edges in SUMO either
        outside = ev.extra.get("signal_held_outside_delay_veh_h", 0.0)
        rows.append(ev.signal_delay_s * ev.signal_flow_veh_h * ev.extra["window_h"] / 3600 - outside)
    return np.array(mean), np.array(rows)


def noise_ceiling(sumo_loss: np.ndarray, other_runs: list[list[dict]], other_seeds: list[int]) -> dict:
    """How well a perfect model could rank the plans against a mean over this many SUMO seeds: the Spearman rank
    correlation between the judged seeds' mean and the mean over as many other seeds (split-half reliability r),
    and sqrt(r), the correlation a model equal to the expected SUMO delay would reach against a noisy mean."""
    from sim import calibrate as cal

    other = np.array([[r["mean_time_loss_s"] for r in row] for row in other_runs]).mean(1)
    r = cal.fit_stats(other, sumo_loss)["spearman"]
    return {"seeds": other_seeds, "split_half_spearman": r, "ceiling": round(float(np.sqrt(max(r, 0.0))), 3)}


def approach_rank_costs(model_appr: np.ndarray, sumo_appr: np.ndarray, names, top: int) -> list[dict]:
    """Which approaches cost the model its rank: for plans k and approaches a, the model's error
    E[k, a] = model - SUMO (veh*h) and T[k] = SUMO's total over the approaches; cov(E[:, a], T) / var(T) is the
    share of the spread of SUMO's totals that approach a's error removes (negative: the model misses growth that
    SUMO shows there as the total grows; the shares sum to cov(model total, T) / var(T) - 1). The ``top`` most
    negative, each with its shares, SUMO's and the model's mean and their correlation over the plans."""
    m, y = np.asarray(model_appr, float), np.asarray(sumo_appr, float)
    tot = y.sum(1)
    var = float(tot.var(ddof=1))
    rows = []
    for a in range(y.shape[1]):
        e = m[:, a] - y[:, a]
        r = np.corrcoef(m[:, a], y[:, a])[0, 1] if m[:, a].std() > 0 and y[:, a].std() > 0 else float("nan")
        rows.append({"approach": names[a], "error_share": round(float(np.cov(e, tot)[0, 1] / var), 3),
                     "sumo_share": round(float(np.cov(y[:, a], tot)[0, 1] / var), 3),
                     "sumo_mean_veh_h": round(float(y[:, a].mean()), 2),
                     "model_mean_veh_h": round(float(m[:, a].mean()), 2), "r": round(float(r), 2)})
    return sorted(rows, key=lambda r: r["error_share"])[:top]


def evaluate_scenario(spec: str, n_plans: int, seeds: list[int], splits: str = "demand", calibrate: bool = True,
                      cal_plans: int = 24, cal_seeds=(101, 102, 103), workers: int = 2, sumo_cache=None,
                      sat_flow=None, plan_seed: int = 0, ceiling_seeds=None, variant=None,
                      approaches: int = 0) -> dict:
    from models.cli_predict import params_from_obj
    from models.evaluate import ModelParams
    from sim import calibrate as cal
    from sim.scenario import compile_scenario

    comp, base = cal.shared_lanes_by_demand(compile_scenario(spec), ModelParams())
    name = comp.scenario.name
    params = {"default": {"cyclic": base, "queue": base}}
    comps = {"default": comp}
    out = {"scenario": name, "plans": n_plans, "splits": splits, "seeds": seeds}
    if sat_flow is not None:  # the same plans, the models on saturation flows from a file (gronvag satflow)
        from sim.netcompile import SatFlowConfig

        comps["satflow"], _ = cal.shared_lanes_by_demand(
            compile_scenario(spec, sat=SatFlowConfig.from_json(sat_flow)), ModelParams())
        params["satflow"] = {"cyclic": base, "queue": base}
        out["sat_flow_file"] = str(sat_flow)
    if variant:  # the same plans, the models with some constants changed (a JSON object of ModelParams fields)
        from dataclasses import replace

        var = replace(params_from_obj(variant), lane_split=base.lane_split)
        params["variant"] = {"cyclic": var, "queue": var}
        out["variant_params"] = variant
    if calibrate:
        params["calibrated"] = {}
        data = cal.calibration_set(comp, cal_plans, cal_seeds, workers=workers, cache=sumo_cache)
        for model in ("cyclic", "queue"):
            t0 = time.perf_counter()
            rec = cal.calibrate(comp, cal_plans, cal_seeds, model, workers=workers, data=data,
                                log=lambda s, m=model: print(f"  calibrate {m}: {s}", flush=True))
            params["calibrated"][model] = params_from_obj(rec["params"])
            out[f"calibration_{model}"] = {k: rec[k] for k in ("fit_before", "fit_after", "calibrated_on")}
            out[f"calibration_{model}"]["wall_s"] = round(time.perf_counter() - t0 + data[2], 1)
            out[f"calibration_{model}"]["values"] = {
                k: (getattr(params["calibrated"][model].levels, k[7:]) if k.startswith("levels.")
                    else getattr(params["calibrated"][model], k)) for k in rec["fitted"]}
    rng = np.random.default_rng(plan_seed)
    out["plan_seed"] = plan_seed
    y = cal.phase_flow_ratios(comp.net, comp.demand) if splits == "demand" else None
    plansets = cal.random_plansets(comp.net, n_plans, rng, flow_ratio=y)
    t0 = time.perf_counter()
    runs = cal.measure(comp, plansets, seeds, workers, cache=sumo_cache)
    out["sumo_wall_s"] = round(time.perf_counter() - t0, 1)
    sumo_loss = np.array([[r["mean_time_loss_s"] for r in row] for row in runs]).mean(1)
    sumo_sig = np.array([[r["signal_time_loss_h"] for r in row] for row in runs]).mean(1)
    out["sumo_mean_time_loss_s"] = np.round(sumo_loss, 2).tolist()
    out["sumo_benchmark_delay_s"] = np.round(np.array([[r["benchmark_delay_s"] for r in row]
                                                       for row in runs]).mean(1), 2).tolist()
    out["never_departed"] = [float(np.mean([r["never_departed"] for r in row])) for row in runs]
    if ceiling_seeds:
        out["ceiling"] = noise_ceiling(sumo_loss, cal.measure(comp, plansets, list(ceiling_seeds), workers,
                                                              cache=sumo_cache), list(ceiling_seeds))
    for which, by_model in params.items():
        for model, p in by_model.items():
            mean, per_sig = _model_delays(comps.get(which, comp), plansets, p, model)
            res = {"network": cal.fit_stats(mean, sumo_loss), "per_signal": cal.fit_stats(per_sig, sumo_sig),
                   "per_signal_each": {comp.net.signal_ids[s]: cal.fit_stats(per_sig[:, s], sumo_sig[:, s])
                                       for s in range(per_sig.shape[1])},
                   "model_network_delay_s": np.round(mean, 2).tolist()}
            if approaches and which == "default":
                res["approaches"] = _approach_costs(comp, plansets, p, model, runs, approaches)
            out[f"{model}_{which}"] = res
            print(f"{name} {model} ({which}): network {res['network']}, per signal {res['per_signal']}", flush=True)
    return out


def _approach_costs(comp, plansets, params, model: str, runs, top: int) -> list[dict] | str:
    from bench.approach_compare import model_approach_delay

    if not all("approach_time_loss_h" in r for row in runs for r in row):
        return "SUMO records without time loss per approach (a cache from before it was recorded): use a new cache"
    sumo = np.array([np.mean([r["approach_time_loss_h"] for r in row], 0) for row in runs])
    model_appr = np.array([model_approach_delay(comp, ps, params, model)[0] for ps in plansets])
    names = [f"{comp.net.signal_ids[comp.net.appr_signal[a]]} {e}" for a, e in enumerate(comp.net.appr_edge)]
    return approach_rank_costs(model_appr, sumo, names, top)


def to_markdown(results: dict, command: str) -> str:
    lines = ["# Model fidelity against SUMO", "",
             f"Made by `{command}` ({time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}).", "",
             "Model: mean delay per vehicle inside the network (`Evaluation.network_delay_s`: a vehicle held "
             "outside a full entry approach counts from when it enters); SUMO: mean time loss per vehicle that "
             "departed (tripinfo), mean of the seeds. Per signal: the model's total delay at the signal (cyclic "
             "model: less the wait outside full entry approaches) against SUMO's time loss on its approach edges "
             "and the edges leading only into them. Calibrated: constants "
             "fitted by `sim.calibrate` on other plans (plan seed 1000) and other SUMO seeds (101-103). Goals: "
             "Spearman >= 0.9, MAPE <= 15 %.", "",
             "| scenario | plans x seeds | splits | model | constants | Spearman | MAPE % | per-signal Spearman "
             "| per-signal MAPE % | SUMO time loss range [s] |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results.values():
        lo, hi = min(r["sumo_mean_time_loss_s"]), max(r["sumo_mean_time_loss_s"])
        for key in sorted(k for k in r if k.startswith(("cyclic_", "queue_"))):
            model, which = key.split("_", 1)
            n, s = r[key]["network"], r[key]["per_signal"]
            lines.append(f"| {r['scenario']} | {r['plans']} x {len(r['seeds'])} | {r['splits']} | {model} "
                         f"| {which} | {n['spearman']} | {n['mape_pct']} | {s['spearman']} | {s['mape_pct']} "
                         f"| {lo:.0f}-{hi:.0f} |")
    lines += ["", "Calibrated constants (fit on the calibration set: before -> after):", ""]
    for r in results.values():
        for model in ("cyclic", "queue"):
            c = r.get(f"calibration_{model}")
            if c:
                vals = ", ".join(f"{k.replace('levels.', '')} {v:.3g}" for k, v in c["values"].items())
                lines.append(f"- {r['scenario']} {model}: {vals}; MAPE {c['fit_before']['mape_pct']} -> "
                             f"{c['fit_after']['mape_pct']} % ({c['wall_s']} s incl. SUMO)")
    appr = [(r, k) for r in results.values() for k in ("cyclic_default", "queue_default")
            if r.get(k, {}).get("approaches")]
    if appr:
        lines += ["", "Approaches that cost the default models their rank (`--approaches`): error share = cov(model - "
                  "SUMO at the approach, SUMO's total) / var(SUMO's total) over the plans, most negative first "
                  "(the model misses growth that SUMO shows there); SUMO's share of the spread; mean veh*h SUMO / "
                  "model; r over the plans:", ""]
        for r, k in appr:
            a = r[k]["approaches"]
            text = a if isinstance(a, str) else "; ".join(
                f"{x['approach']} {x['error_share']:+.3f} ({x['sumo_share']:.3f}; {x['sumo_mean_veh_h']} / "
                f"{x['model_mean_veh_h']}; r {x['r']})" for x in a)
            lines.append(f"- {r['scenario']} {k.split('_')[0]}: {text}")
        lines.append("")
    ceil = [r for r in results.values() if r.get("ceiling")]
    if ceil:
        lines += ["", "SUMO's own noise (the same plans with other seeds): Spearman between the mean over the judged "
                  "seeds and the mean over as many other seeds, and its square root, what a model equal to SUMO's "
                  "expected delay could reach against a mean of this many seeds:", ""]
        for r in ceil:
            c = r["ceiling"]
            lines.append(f"- {r['scenario']}: seeds {','.join(map(str, c['seeds']))} against "
                         f"{','.join(map(str, r['seeds']))}: {c['split_half_spearman']}; ceiling {c['ceiling']}")
    lines += ["", "Per signal (calibrated cyclic model, Spearman / MAPE %):", ""]
    for r in results.values():
        each = r.get("cyclic_calibrated", r.get("cyclic_default"))["per_signal_each"]
        lines.append(f"- {r['scenario']}: " + "; ".join(f"{k} {v['spearman']} / {v['mape_pct']}"
                                                         for k, v in each.items()))
    return "\n".join(lines) + "\n"


def run(smoke: bool) -> dict:
    if smoke:
        spec = scenarios_available(True)[0]
        return {Path(spec).stem: evaluate_scenario(spec, 4, [1], calibrate=False, ceiling_seeds=[2])}
    return {Path(s).stem: evaluate_scenario(s, 50, [1, 2, 3]) for s in scenarios_available(False)}


def main(argv: list[str] | None = None) -> int:
    from sim.planio import atomic_write

    ap = argparse.ArgumentParser(prog="python -m bench.bench_models_fidelity")
    ap.add_argument("--scenario", action="append", help="scenario(s) (default: grid4x4, cologne3, corridor)")
    ap.add_argument("--plans", type=int, default=50)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--splits", choices=("demand", "uniform"), default="demand",
                    help="random green splits: demand-proportional with log-normal noise (default) or uniform")
    ap.add_argument("--no-calibrate", action="store_true", help="default constants only")
    ap.add_argument("--jobs", type=int, default=2, help="SUMO runs in parallel")
    ap.add_argument("--out", help="JSON results file")
    ap.add_argument("--md", help="markdown table file (e.g. bench/results/models_fidelity.md)")
    ap.add_argument("--plan-seed", type=int, default=0,
                    help="seed of the random plans (default 0; another seed: plans the constants were not chosen on)")
    ap.add_argument("--sat-flow", type=Path, metavar="JSON",
                    help="also evaluate the models on these saturation flows (gronvag satflow; one scenario)")
    ap.add_argument("--sumo-cache", type=Path,
                    help="folder of SUMO run records to reuse (same scenario files, plans, seeds, SUMO version): "
                         "rerun after a model change without rerunning SUMO")
    ap.add_argument("--ceiling-seeds", metavar="S,S,...",
                    help="also run the plans with these other SUMO seeds (as many as --seeds) and report SUMO's "
                         "own split-half rank correlation: the ceiling any model can reach")
    ap.add_argument("--approaches", type=int, default=0, metavar="N",
                    help="list the N approaches whose model error costs the default models most rank (SUMO's "
                         "time loss per approach: needs SUMO records that have it)")
    ap.add_argument("--variant", metavar="JSON",
                    help="also evaluate the models with these constants changed (a JSON object of model parameters, "
                         'e.g. \'{"random_delay_lane_groups": true}\'); rows labelled "variant"')
    args = ap.parse_args(argv)
    ceiling = [int(s) for s in args.ceiling_seeds.split(",")] if args.ceiling_seeds else None
    specs = args.scenario or scenarios_available(False)
    seeds = [int(s) for s in args.seeds.split(",")]
    res = {Path(s).stem: evaluate_scenario(s, args.plans, seeds, args.splits, not args.no_calibrate,
                                           workers=args.jobs, sumo_cache=args.sumo_cache, sat_flow=args.sat_flow,
                                           plan_seed=args.plan_seed, ceiling_seeds=ceiling,
                                           variant=json.loads(args.variant) if args.variant else None,
                                           approaches=args.approaches)
           for s in specs}
    if args.out:
        atomic_write(Path(args.out), json.dumps(res, indent=1, default=str))
    if args.md:
        cmd = "python -m bench.bench_models_fidelity " + shlex.join(argv if argv is not None else sys.argv[1:])
        atomic_write(Path(args.md), to_markdown(res, cmd))
    if not args.out and not args.md:
        print(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
