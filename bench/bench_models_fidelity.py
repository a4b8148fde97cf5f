"""Fidelity of the models against SUMO: random valid fixed-time plans, model delay vs SUMO time loss.

For each scenario (grid4x4 and cologne3 from ../shared/scenarios when present, and the bundled corridor): N random
valid fixed-time plans (the scenario's own phase sequence, a common random cycle, random green splits above the
minimum greens, random offsets; every plan passes ``engine.safety.check_plan``), each run in SUMO with S seeds.
Compared per plan: the model's mean delay per vehicle against SUMO's mean ``timeLoss`` over tripinfo (finished and
unfinished) and against the RESCO benchmark delay (time loss + depart delay, never-departed vehicles counted until
the end; the fair target when entries back up); and per signal: the model's total delay at the signal
(veh*h) against SUMO's ``timeLoss`` summed over the signal's approach edges (edgeData). Reported: Spearman rank
correlation (goal >= 0.9), mean absolute percentage error (goal <= 15 %), and the same per signal.

Shared lanes: saturation flows of movements sharing a lane are split by demand (lane-exact through
``engine.optimise.calibrate`` when present), as SUMO's vehicles use shared lanes. The cyclic model (no entry
backlog) is best read against SUMO's time loss, the queue model (entry backlog) against the benchmark delay.

Calibration (:func:`calibrate`): a grid search over the few model constants (start-up lost time, end gain,
permissive and stop-go levels, saturation-flow scale, dispersion) that minimises MAPE on a calibration set of plans
and seeds disjoint from the evaluation set. A user calibrates to their own city the same way: run
``python -m bench.bench_models_fidelity --scenario CITY.sumocfg --calibrate`` and put the printed ``ModelParams``
in their configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
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


def random_plansets(net, n: int, rng, cycle_range=(50, 130), min_green_s: int = 5) -> list:
    """``n`` random valid plan sets: the network's phase sequences with a common random cycle."""
    from engine.plan import Phase, PlanSet, make_plan, phase_kind
    from engine.safety import check_plan
    from models.network import PHASE_GREEN

    def flexible(p: int) -> bool:  # a green phase proper: some green, no yellow or red-amber running out
        st = net.phase_states[p]
        return net.phase_kind[p] == PHASE_GREEN and not any(c in st for c in "yu")

    out = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n:
            raise RuntimeError("could not draw valid random plans")
        plans = []
        fixed_total = []
        for s in range(net.n_signals):
            ph = list(net.phases_of(s))
            green = [p for p in ph if flexible(p)]
            fixed_total.append(sum(int(round(net.phase_duration_s[p])) for p in ph if p not in green)
                               + min_green_s * len(green))
        cycle = int(rng.integers(max(cycle_range[0], max(fixed_total)), max(cycle_range[1], max(fixed_total)) + 1))
        for s in range(net.n_signals):
            ph = list(net.phases_of(s))
            green = [p for p in ph if flexible(p)]
            dur = {p: int(round(net.phase_duration_s[p])) for p in ph}
            spare = cycle - fixed_total[s]
            if green:
                split = np.floor(rng.dirichlet(np.ones(len(green))) * spare).astype(int)
                split[0] += spare - split.sum()
                for p, extra in zip(green, split, strict=True):
                    dur[p] = min_green_s + int(extra)
            else:
                dur[ph[0]] += cycle - sum(dur.values())
            phases = [Phase(net.phase_states[p], max(1, dur[p]), kind=phase_kind(net.phase_states[p])) for p in ph]
            plans.append(make_plan(net.signal_ids[s], phases, int(rng.integers(0, cycle))))
        if all(not check_plan(p, net.signal_spec(s)) for s, p in enumerate(plans)):
            out.append(PlanSet(plans=tuple(plans)))
    return out


def sumo_run(comp, planset, seed: int, workdir: Path) -> dict:
    """One SUMO run of ``planset``: mean time loss per vehicle and time loss per signal (approach edges)."""
    from sim.harness import RunConfig, sumo_command
    from sim.kpi import benchmark_delay, parse_tripinfo, scheduled_departures
    from sim.planio import planset_to_additional

    workdir.mkdir(parents=True, exist_ok=True)
    sc = comp.scenario
    plan_file = workdir / "plan.add.xml"
    plan_file.write_text(planset_to_additional(planset))
    meas = workdir / "edgedata.add.xml"
    meas.write_text(f'<additional><edgeData id="gv" file="{workdir / "edgedata.xml"}" begin="{sc.begin_s:g}" '
                    f'end="{sc.end_s:g}" excludeEmpty="true"/></additional>\n')
    cmd = sumo_command(sc, RunConfig(seed=seed), workdir, [plan_file, meas])
    cmd += ["--no-warnings", "true"]
    subprocess.run(cmd, check=True, capture_output=True)
    ti = parse_tripinfo(workdir / "tripinfo.xml")
    loss = ti["timeLoss"]
    dd = np.nan_to_num(ti["departDelay"])
    order, depart = scheduled_departures(sc.route_files, sc.begin_s, sc.end_s)
    seen = set(ti["id"])
    never = [v for v in order if v not in seen]
    _, bench_delay, _, n_never = benchmark_delay(ti, order, depart, sc.end_s, never)
    edge_loss = {}
    for _, el in ET.iterparse(str(workdir / "edgedata.xml"), events=("end",)):
        if el.tag == "edge":
            edge_loss[el.get("id")] = float(el.get("timeLoss", 0.0))
    net = comp.net
    sig = np.zeros(net.n_signals)
    for a in range(net.n_approaches):
        sig[net.appr_signal[a]] += edge_loss.get(net.appr_edge[a], 0.0)
    return {"mean_time_loss_s": float(np.nanmean(loss)) if loss.size else 0.0,
            "mean_loss_depart_s": float(np.nanmean(loss + dd)) if loss.size else 0.0,
            "benchmark_delay_s": float(bench_delay), "never_departed": int(n_never),
            "n": int(loss.size), "total_time_loss_h": float(np.nansum(loss) / 3600),
            "edge_time_loss_h": float(sum(edge_loss.values()) / 3600), "signal_time_loss_h": (sig / 3600).tolist()}


def sumo_runs(comp, plansets, seeds, workers: int = 2) -> list[list[dict]]:
    """results[i][j]: plan set i, seed j (SUMO runs in parallel subprocesses)."""
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(workers) as pool:
        futs = {(i, j): pool.submit(sumo_run, comp, ps, seed, Path(tmp) / f"p{i}_s{seed}")
                for i, ps in enumerate(plansets) for j, seed in enumerate(seeds)}
        return [[futs[(i, j)].result() for j in range(len(seeds))] for i in range(len(plansets))]


def model_delays(comp, plansets, params=None, model: str = "cyclic") -> tuple[np.ndarray, np.ndarray]:
    """Mean delay per vehicle (K,) and total delay per signal in veh*h (K, S) of each plan set."""
    from models.evaluate import MODELS

    mean, per_sig = [], []
    for ps in plansets:
        ev = MODELS[model](comp.net, comp.demand, ps, params)
        mean.append(ev.mean_delay_s)
        per_sig.append(ev.signal_delay_s * ev.signal_flow_veh_h * ev.extra["window_h"] / 3600)
    return np.array(mean), np.array(per_sig)


def fit_stats(model: np.ndarray, sumo: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    model = np.asarray(model, float).ravel()
    sumo = np.asarray(sumo, float).ravel()
    ok = np.isfinite(model) & np.isfinite(sumo) & (sumo > 0)
    rho = float(spearmanr(model[ok], sumo[ok]).statistic) if ok.sum() > 2 else float("nan")
    mape = float(np.mean(np.abs(model[ok] - sumo[ok]) / sumo[ok]) * 100) if ok.any() else float("nan")
    return {"spearman": round(rho, 3), "mape_pct": round(mape, 1), "n": int(ok.sum())}


def shared_lanes_by_demand(comp, params=None):
    """(compiled scenario, params) with saturation flows of shared lanes split by demand: lane-exact through
    engine.optimise.calibrate when it is there, else the models' approach-level approximation."""
    from models.evaluate import ModelParams

    params = params or ModelParams()
    try:
        from engine.optimise.calibrate import calibrated_network
    except ImportError:
        return comp, replace(params, lane_split="demand")
    net = calibrated_network(comp.net, comp.demand, comp.scenario.net_file)
    return replace(comp, net=net), replace(params, lane_split="compiled")


def evaluate_scenario(spec: str, n_plans: int, seeds: list[int], params=None, seed: int = 0) -> dict:
    from sim.scenario import compile_scenario

    comp, params = shared_lanes_by_demand(compile_scenario(spec), params)
    rng = np.random.default_rng(seed)
    plansets = random_plansets(comp.net, n_plans, rng)
    t0 = time.perf_counter()
    runs = sumo_runs(comp, plansets, seeds)
    t_sumo = time.perf_counter() - t0
    sumo_loss = np.array([[r["mean_time_loss_s"] for r in row] for row in runs]).mean(1)
    sumo_bench = np.array([[r["benchmark_delay_s"] for r in row] for row in runs]).mean(1)
    sumo_sig = np.array([[r["signal_time_loss_h"] for r in row] for row in runs]).mean(1)
    out = {"scenario": spec, "plans": n_plans, "seeds": seeds, "sumo_wall_s": round(t_sumo, 1),
           "sumo_mean_time_loss_s": [round(v, 2) for v in sumo_loss],
           "sumo_benchmark_delay_s": [round(v, 2) for v in sumo_bench],
           "never_departed": [int(np.mean([r["never_departed"] for r in row])) for row in runs]}
    for model in ("cyclic", "queue"):
        mean, per_sig = model_delays(comp, plansets, params, model)
        out[model] = {"network": fit_stats(mean, sumo_loss), "network_vs_benchmark_delay": fit_stats(mean, sumo_bench),
                      "per_signal": fit_stats(per_sig, sumo_sig),
                      "model_mean_delay_s": [round(v, 2) for v in mean],
                      "per_signal_each": [fit_stats(per_sig[:, s], sumo_sig[:, s]) for s in range(per_sig.shape[1])]}
        print(f"{Path(spec).stem} {model}: network vs time loss {out[model]['network']}, vs benchmark delay "
              f"{out[model]['network_vs_benchmark_delay']}, per signal {out[model]['per_signal']}", flush=True)
    return out


def calibrate(spec: str, n_plans: int = 12, seeds=(101,), grid: dict | None = None, seed: int = 1000) -> dict:
    """Grid search of ModelParams on a calibration set (plans drawn with ``seed``, SUMO seeds ``seeds``)."""
    import itertools

    from models.evaluate import ModelParams
    from models.plans import LevelParams
    from sim.scenario import compile_scenario

    comp, base = shared_lanes_by_demand(compile_scenario(spec))
    plansets = random_plansets(comp.net, n_plans, np.random.default_rng(seed))
    runs = sumo_runs(comp, plansets, list(seeds))
    target = np.array([[r["mean_time_loss_s"] for r in row] for row in runs]).mean(1)
    grid = grid or {"startup_lost_s": [1.0, 2.0, 3.0], "end_gain_s": [1.0, 2.0, 3.0],
                    "permissive_level": [0.3, 0.5, 0.7], "stop_go_level": [0.1, 0.3, 0.5]}
    best = None
    rows = []
    for values in itertools.product(*grid.values()):
        kw = dict(zip(grid.keys(), values, strict=True))
        lv = LevelParams(**{k: v for k, v in kw.items() if k in LevelParams.__dataclass_fields__})
        params = replace(base, levels=lv, **{k: v for k, v in kw.items() if k in ModelParams.__dataclass_fields__})
        mean, _ = model_delays(comp, plansets, params)
        st = fit_stats(mean, target)
        rows.append((kw, st))
        if best is None or st["mape_pct"] < best[1]["mape_pct"]:
            best = (kw, st)
    print(f"best on {Path(spec).stem}: {best}")
    return {"best": best[0], "fit": best[1], "tried": len(rows)}


def run(smoke: bool) -> dict:
    n_plans, seeds = (4, [1]) if smoke else (50, [1, 2, 3])
    out = {}
    for spec in scenarios_available(smoke):
        out[Path(spec).stem] = evaluate_scenario(spec, n_plans, seeds)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_models_fidelity")
    ap.add_argument("--scenario", action="append", help="scenario(s) (default: grid4x4, cologne3, corridor)")
    ap.add_argument("--plans", type=int, default=50)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    specs = args.scenario or scenarios_available(False)
    seeds = [int(s) for s in args.seeds.split(",")]
    res = {}
    for spec in specs:
        res[Path(spec).stem] = calibrate(spec, seeds=seeds) if args.calibrate else evaluate_scenario(
            spec, args.plans, seeds)
    text = json.dumps(res, indent=1, default=str)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(REPO))
    sys.exit(main())
