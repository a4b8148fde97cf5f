"""Calibrate the models' constants to SUMO: ``gronvag calibrate SCENARIO --out PARAMS.json``.

The models carry a few constants that a simulator (or a city's traffic) decides: the saturation-flow scale (SUMO's
default drivers discharge faster than the compiler's 1800 veh/h/lane base), start-up lost time and end gain, the
level of permissive ('g') greens, Robertson's dispersion, and a base time loss per vehicle that no signal causes
(accelerating after insertion, slowing for turns). Calibration measures them the way the models will be used:

1. draw N random valid fixed-time plan sets (:func:`random_plansets`: the scenario's own phase sequences, a common
   random cycle, demand-proportional green splits with log-normal noise, uniform offsets; each passes
   ``engine.safety.check_plan``);
2. run every plan set in SUMO with S seeds (:func:`measure`) and take the mean time loss per vehicle (tripinfo,
   unfinished trips included);
3. fit the constants (bounded least squares on the relative error, :func:`fit`) of the model's delay per vehicle
   inside the network (``Evaluation.network_delay_s``: vehicles held outside a full entry approach count from when
   they enter, as SUMO's time loss counts them; their wait outside is SUMO's departure delay) against SUMO's mean
   time loss.

The result is a JSON file (schema ``gronvag.model-params/1``: the constants, the fit before and after, and what it
was calibrated on) that ``gronvag predict --params`` and ``gronvag optimise --params`` read. Calibrate on plans
and seeds disjoint from those you judge the model on (``bench/bench_models_fidelity.py`` does: plans drawn with
seed 1000 and SUMO seeds 101-103 to calibrate, plans drawn with seed 0 and SUMO seeds 1-3 to judge).

Shared lanes: the saturation flow of a lane that several movements share is divided by their demand, lane by lane
(``engine.optimise.calibrate``), as the optimiser does; the fitted constants apply on top of that.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

SCHEMA = "gronvag.model-params/1"

# constant -> (lower, upper bound); "levels." names a models.plans.LevelParams field. The default fit takes the two
# constants with a plain physical reading (how fast queues discharge, what time loss no signal causes): fitting all
# of them to a few dozen SUMO runs overfits (measured: out-of-sample MAPE 46 % on cologne3 after 15 % in-sample).
BOUNDS: dict[str, tuple[float, float]] = {
    "sat_flow_scale": (0.7, 1.6),
    "base_loss_s": (0.0, 60.0),
    "levels.startup_lost_s": (0.0, 5.0),
    "levels.end_gain_s": (0.0, 5.0),
    "levels.permissive_level": (0.1, 1.0),
    "dispersion_alpha": (0.05, 0.8),
}
FITTED: tuple[str, ...] = ("sat_flow_scale", "base_loss_s")


def phase_flow_ratios(net, demand) -> np.ndarray:
    """Critical flow ratio y of every phase (n_phases,): the largest demand / saturation flow of the movements it
    lets go ('G' or 'g'); 0 for phases that let no vehicle movement go."""
    flow = demand.mean_arrival_veh_h() / 3600.0
    y_mov = np.where(net.mov_sat_flow_veh_s > 0, flow / np.maximum(net.mov_sat_flow_veh_s, 1e-9), 0.0)
    y = np.zeros(net.n_phases)
    for p in range(net.n_phases):
        base = net.signal_link_ptr[net.phase_signal[p]]
        for i, ch in enumerate(net.phase_states[p]):
            m = net.link_movement[base + i]
            if ch in "Gg" and m >= 0:
                y[p] = max(y[p], y_mov[m])
    return y


def random_plansets(net, n: int, rng, cycle_range=(50, 130), min_green_s: int = 5, flow_ratio=None,
                    split_sigma: float = 0.4) -> list:
    """``n`` random valid plan sets: the network's phase sequences with a common random cycle.

    Splits of the green phases: given ``flow_ratio`` (per phase, :func:`phase_flow_ratios`), in proportion to the
    critical flow ratios times independent log-normal factors (sigma ``split_sigma``): plans of the kind an engineer
    or an optimiser would weigh, from well to badly timed; without it uniformly random (Dirichlet(1): many plans
    starve a movement and gridlock the network). Offsets are uniform over the cycle either way. Clearance phases
    keep their durations; every plan set passes ``engine.safety.check_plan``.
    """
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
                if flow_ratio is None:
                    w = rng.dirichlet(np.ones(len(green)))
                else:
                    y = np.array([max(flow_ratio[p], 0.02) for p in green])
                    w = y * np.exp(rng.normal(0.0, split_sigma, len(green)))
                    w = w / w.sum()
                split = np.floor(w * spare).astype(int)
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


def shared_lanes_by_demand(comp, params=None):
    """(compiled scenario, params) with the saturation flows of shared lanes split by demand, lane by lane."""
    from engine.optimise.calibrate import calibrated_network
    from models.evaluate import ModelParams

    params = params or ModelParams()
    return replace(comp, net=calibrated_network(comp.net, comp.demand)), replace(params, lane_split="compiled")


_STRETCHES: dict[tuple[str, int], dict[str, int]] = {}


def approach_stretches(comp) -> dict[str, int]:
    """Edge id -> approach index: every approach edge, and every edge that leads into exactly one approach edge
    without a signal in between (a turn pocket's upstream section, a link broken by a bus stop or a priority
    junction). A queue that outgrows its approach edge backs up onto these; a signal's time loss counted on its
    approach edges alone would miss it. Edges that lead to several approaches (a fork) are left out."""
    import sumolib

    key = (str(comp.scenario.net_file), id(comp.net))
    if key in _STRETCHES:
        return _STRETCHES[key]
    net = comp.net
    sn = sumolib.net.readNet(str(comp.scenario.net_file), withInternal=False)
    tls_nodes = {n.getID() for n in sn.getNodes() if n.getType() == "traffic_light"}
    out = {e: a for a, e in enumerate(net.appr_edge)}
    for a, e in enumerate(net.appr_edge):
        if not sn.hasEdge(e):
            continue
        frontier = [sn.getEdge(e)]
        seen = {e}
        while frontier:
            cur = frontier.pop()
            node = cur.getFromNode()
            if node.getID() in tls_nodes:
                continue
            for up in cur.getIncoming():
                succ = {x.getID() for x in up.getOutgoing() if x.getToNode() != up.getFromNode()}
                if up.getID() in seen or up.getID() in out or succ != {cur.getID()}:
                    continue
                seen.add(up.getID())
                out[up.getID()] = a
                frontier.append(up)
    _STRETCHES[key] = out
    return out


def measure_one(comp, planset, seed: int, workdir: Path, protocol: str = "default") -> dict:
    """One SUMO run of ``planset`` (SUMO's binary in a subprocess; ``protocol`` as in sim.harness.RunConfig):
    mean time loss of the vehicles that departed, the benchmark delay with the exact never-departed set (SUMO
    writes them with their wait until the end), and time loss per approach and per signal (approach stretches)."""
    from sim.harness import RunConfig, sumo_command
    from sim.kpi import bus_mask, parse_tripinfo, weight_sums
    from sim.planio import planset_to_additional

    workdir.mkdir(parents=True, exist_ok=True)
    sc = comp.scenario
    plan_file = workdir / "plan.add.xml"
    plan_file.write_text(planset_to_additional(planset))
    meas = workdir / "edgedata.add.xml"
    meas.write_text(f'<additional><edgeData id="gv" file="{workdir / "edgedata.xml"}" begin="{sc.begin_s:g}" '
                    f'end="{sc.end_s:g}" excludeEmpty="true"/></additional>\n')
    cmd = sumo_command(sc, RunConfig(seed=seed, protocol=protocol), workdir, [plan_file, meas])
    cmd += ["--no-warnings", "true", "--tripinfo-output.write-undeparted", "true"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"SUMO failed on {sc.name} seed {seed}: {tail[0]}")
    ti = parse_tripinfo(workdir / "tripinfo.xml")
    departed = ti["depart"] >= 0  # vehicles SUMO never inserted are written with depart -1 and their wait
    loss = ti["timeLoss"][departed]
    # the benchmark delay with the exact never-departed set: time loss + depart delay of every loaded vehicle
    bench_delay = float(np.nanmean(ti["timeLoss"] + ti["departDelay"])) if ti["timeLoss"].size else 0.0
    n_never = int((~departed).sum())
    edge_loss = {}
    for _, el in ET.iterparse(str(workdir / "edgedata.xml"), events=("end",)):
        if el.tag == "edge":
            edge_loss[el.get("id")] = float(el.get("timeLoss", 0.0))
    net = comp.net
    appr = np.zeros(net.n_approaches)
    for edge, a in approach_stretches(comp).items():
        appr[a] += edge_loss.get(edge, 0.0)
    sig = np.bincount(net.appr_signal, appr, net.n_signals)
    return {"mean_time_loss_s": float(np.nanmean(loss)) if loss.size else 0.0,
            "benchmark_delay_s": float(bench_delay), "never_departed": int(n_never), "n": int(loss.size),
            "signal_time_loss_h": (sig / 3600).tolist(), "approach_time_loss_h": (appr / 3600).tolist(),
            "n_tripinfo": len(ti["id"]),
            **weight_sums(ti, bus_mask(ti, sc))}


# what a cached run record depends on besides its inputs: bump when measure_one's figures change
RUN_RECORD = "gronvag.sumo-run/1"


def _scenario_digest(comp) -> str:
    """sha256 over what a SUMO run of ``comp`` reads: its files' contents, window and options, SUMO's version."""
    from importlib.metadata import PackageNotFoundError, version

    sc = comp.scenario
    h = hashlib.sha256(RUN_RECORD.encode())
    for f in (sc.net_file, *sc.route_files, *sc.additional_files):
        h.update(Path(f).name.encode() + b"\0" + hashlib.sha256(Path(f).read_bytes()).digest())
    try:
        sumo = version("eclipse-sumo")
    except PackageNotFoundError:
        sumo = "unknown"
    h.update(json.dumps([sc.begin_s, sc.end_s, list(map(list, sc.sumo_options)), sumo]).encode())
    return h.hexdigest()


def measure(comp, plansets, seeds, workers: int = 2, protocol: str = "default",
            cache: Path | None = None) -> list[list[dict]]:
    """results[i][j]: plan set i, seed j (SUMO runs in parallel subprocesses, outputs in a temporary folder).

    ``cache``: a folder of run records keyed by the scenario's files, window, options and SUMO version, the plan set,
    the seed and the protocol; a run found there is not repeated (for rerunning a benchmark after a model change).
    """
    from sim.planio import atomic_write, planset_to_additional

    keys = {}
    if cache is not None:
        base = _scenario_digest(comp)
        for i, ps in enumerate(plansets):
            plan = planset_to_additional(ps)
            for seed in seeds:
                keys[(i, seed)] = Path(cache) / (hashlib.sha256(
                    json.dumps([base, plan, int(seed), protocol]).encode()).hexdigest() + ".json")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max(1, workers)) as pool:
        def one(i, ps, seed):
            key = keys.get((i, seed))
            if key is not None and key.is_file():
                return json.loads(key.read_text())
            rec = measure_one(comp, ps, seed, Path(tmp) / f"p{i}_s{seed}", protocol)
            if key is not None:
                atomic_write(key, json.dumps(rec))
            return rec

        futs = {(i, j): pool.submit(one, i, ps, seed) for i, ps in enumerate(plansets) for j, seed in enumerate(seeds)}
        return [[futs[(i, j)].result() for j in range(len(seeds))] for i in range(len(plansets))]


def fit_stats(model, sumo) -> dict:
    """Spearman rank correlation and mean absolute percentage error of ``model`` against ``sumo``."""
    from scipy.stats import spearmanr

    model = np.asarray(model, float).ravel()
    sumo = np.asarray(sumo, float).ravel()
    ok = np.isfinite(model) & np.isfinite(sumo) & (sumo > 0)
    rho = float(spearmanr(model[ok], sumo[ok]).statistic) if ok.sum() > 2 else float("nan")
    mape = float(np.mean(np.abs(model[ok] - sumo[ok]) / sumo[ok]) * 100) if ok.any() else float("nan")
    return {"spearman": round(rho, 3), "mape_pct": round(mape, 1), "n": int(ok.sum())}


def with_values(params, values: dict):
    """``params`` with the named constants ("levels.x" for LevelParams fields) set."""
    top = {k: v for k, v in values.items() if not k.startswith("levels.")}
    lv = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("levels.")}
    out = replace(params, **top)
    return replace(out, levels=replace(out.levels, **lv)) if lv else out


def predict(comp, plansets, params, model: str = "cyclic") -> np.ndarray:
    """The model's delay per vehicle inside the network (K,) of each plan set: the figure SUMO's time loss measures
    (``Evaluation.network_delay_s``)."""
    from models.evaluate import MODELS

    return np.array([MODELS[model](comp.net, comp.demand, ps, params).network_delay_s for ps in plansets])


def fit(comp, plansets, target_s, base, model: str = "cyclic", names=FITTED, max_evals: int = 200):
    """Constants minimising the relative error of the model's mean delay against ``target_s`` (K,), within
    :data:`BOUNDS` (bounded least squares on (model - SUMO) / SUMO): (params, fit statistics). Never worse on the
    calibration set than the starting constants."""
    from scipy.optimize import least_squares

    target_s = np.asarray(target_s, float)
    lo = np.array([BOUNDS[k][0] for k in names])
    hi = np.array([BOUNDS[k][1] for k in names])

    def current(k):
        return getattr(base.levels, k.split(".", 1)[1]) if k.startswith("levels.") else getattr(base, k)

    def params_at(x):
        return with_values(base, dict(zip(names, np.clip(x, lo, hi).tolist(), strict=True)))

    def residuals(x):
        pred = predict(comp, plansets, params_at(x), model)
        return np.where(np.isfinite(pred), (pred - target_s) / target_s, 10.0)

    x0 = np.clip(np.array([current(k) for k in names], float), lo + 1e-9, hi - 1e-9)
    res = least_squares(residuals, x0, bounds=(lo, hi), x_scale=hi - lo, diff_step=1e-3, max_nfev=max_evals)
    x = res.x if np.mean(np.abs(residuals(res.x))) <= np.mean(np.abs(residuals(x0))) else x0
    best = params_at(x)
    return best, fit_stats(predict(comp, plansets, best, model), target_s)


def params_to_obj(params) -> dict:
    return asdict(params)


def calibration_set(comp, n_plans: int = 24, seeds=(101, 102, 103), seed: int = 1000, workers: int = 2,
                    protocol: str = "default", cache: Path | None = None):
    """(plan sets, SUMO mean time loss per plan set (K,), SUMO wall s): the random plans of a calibration, measured.
    ``comp`` must already have its shared lanes split (:func:`shared_lanes_by_demand`); ``cache`` as in
    :func:`measure`."""
    plansets = random_plansets(comp.net, n_plans, np.random.default_rng(seed),
                               flow_ratio=phase_flow_ratios(comp.net, comp.demand))
    t0 = time.perf_counter()
    runs = measure(comp, plansets, list(seeds), workers, protocol, cache)
    target = np.array([[r["mean_time_loss_s"] for r in row] for row in runs]).mean(1)
    return plansets, target, time.perf_counter() - t0


def calibrate(spec, n_plans: int = 24, seeds=(101, 102, 103), model: str = "cyclic", seed: int = 1000,
              workers: int = 2, max_evals: int = 200, base=None, log=print, data=None) -> dict:
    """Draw plans, measure them in SUMO, fit the constants; the calibration record (see the module docstring).
    ``data``: a :func:`calibration_set` already measured (for fitting several models to the same runs)."""
    from models.evaluate import ModelParams
    from sim.scenario import compile_scenario

    comp0 = compile_scenario(spec) if isinstance(spec, str | Path) else spec
    comp, base = shared_lanes_by_demand(comp0, base or ModelParams())
    plansets, target, t_sumo = data if data is not None else calibration_set(comp, n_plans, seeds, seed, workers)
    before = fit_stats(predict(comp, plansets, base, model), target)
    log(f"{comp.scenario.name}: {len(plansets)} plans x {len(seeds)} seeds in SUMO ({t_sumo:.0f} s); "
        f"{model} model before: Spearman {before['spearman']}, MAPE {before['mape_pct']} %")
    t0 = time.perf_counter()
    params, after = fit(comp, plansets, target, base, model, max_evals=max_evals)
    log(f"after fitting ({time.perf_counter() - t0:.0f} s): Spearman {after['spearman']}, MAPE {after['mape_pct']} %")
    return {"schema": SCHEMA, "model": model, "params": params_to_obj(params),
            "fitted": list(FITTED), "fit_before": before, "fit_after": after,
            "calibrated_on": {"scenario": comp.scenario.name, "plans": len(plansets), "plan_seed": seed,
                              "sumo_seeds": list(seeds), "sumo_mean_time_loss_s": np.round(target, 2).tolist()}}


def main(argv: list[str]) -> int:
    """`gronvag calibrate SCENARIO --out FILE [--plans N] [--seeds A,B] [--model cyclic|queue] [--jobs J]`."""
    from engine.cli import _compile, _scenario_args
    from engine.errors import GronvagError
    from sim.planio import atomic_write

    ap = argparse.ArgumentParser(prog="gronvag calibrate",
                                 description="fit the models' constants to SUMO runs of random plans")
    _scenario_args(ap)
    ap.add_argument("--out", required=True, help="the calibration file to write (JSON, gronvag.model-params/1)")
    ap.add_argument("--plans", type=int, default=24, help="random plan sets (default 24)")
    ap.add_argument("--seeds", default="101,102,103", help="SUMO seeds, comma-separated (default 101,102,103)")
    ap.add_argument("--model", choices=("cyclic", "queue"), default="cyclic", help="model to fit (default cyclic)")
    ap.add_argument("--plan-seed", type=int, default=1000, help="seed of the random plans (default 1000)")
    ap.add_argument("--jobs", type=int, default=2, help="SUMO runs in parallel (default 2)")
    ap.add_argument("--max-evals", type=int, default=200, help="model evaluations of the fit at most (default 200)")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise GronvagError(f"--seeds must be comma-separated integers, not {args.seeds!r}") from None
    if args.plans < 3 or not seeds:
        raise GronvagError("calibration needs at least 3 plans and one seed")
    comp = _compile(args)
    rec = calibrate(comp, args.plans, seeds, args.model, args.plan_seed, args.jobs, args.max_evals)
    atomic_write(Path(args.out), json.dumps(rec, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0
