"""Speed of the numba models: kernels vs their naive twins vs SUMO, compile/import time, memory vs batch size.

Figures (all printed and returned):

* ``cyclic_single_intersection``: plan evaluations per second of the cyclic model on one intersection (goal
  >= 100 000 per core), 1 and 2 numba threads, random durations and offsets; and, in the same run, 1 thread with
  giving way switched off (``ModelParams(yield_gap_s=0)``); the 1-thread figures also per process CPU second
  (``*_cpu``: what one core does while other jobs share the machine; the wall-clock figures count their turns);
* ``cyclic_network`` / ``queue_network``: movement-steps per second (movement x simulated second; for the cyclic
  model movement x period second x sweep) on a 4x4 grid, 1 and 2 threads, and one plan-hour's wall time;
* ``twins``: the same unit for the naive Python twins (tests/naive_models.py) on a small case;
* ``sumo``: wall time of a plain SUMO run of the same scenario-hour (:func:`sumo_hour_s`) and the speed-up of each
  model over it (goal >= 1000x for one grid4x4 plan-hour);
* ``compile``: import time and first-call time in a fresh process, with an empty numba cache and with a warm one;
* ``memory``: peak Python-heap allocation (tracemalloc) of a batch call vs K, minus the outputs (goal: flat).

Run: ``python -m bench --only models`` (``--smoke`` for tiny sizes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_GRID = REPO.parent / "shared" / "scenarios" / "grid4x4" / "grid4x4.sumocfg"


def _timeit(fn, min_s: float = 0.3, max_reps: int = 50) -> float:
    """Best-of wall time of fn() (after one warm-up call), seconds."""
    fn()
    best = np.inf
    t_all = time.perf_counter()
    for _ in range(max_reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - t_all > min_s:
            break
    return best


def _timeit_both(fn, min_s: float = 0.3, max_reps: int = 50) -> tuple[float, float]:
    """Best-of wall time and best-of process CPU time of fn() (after one warm-up call), seconds. The CPU time is what
    a single-threaded fn costs one core, however many other jobs share the machine (wall time then counts their
    turns too)."""
    fn()
    best = np.inf
    best_cpu = np.inf
    t_all = time.perf_counter()
    for _ in range(max_reps):
        t0 = time.perf_counter()
        c0 = time.process_time()
        fn()
        best_cpu = min(best_cpu, time.process_time() - c0)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - t_all > min_s:
            break
    return best, best_cpu


def _random_timings(tpl, net, k: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """K random timings with a common cycle (60-120 s) as the optimiser makes them: every signal keeps its
    intergreen phases and splits the rest of the cycle over its green phases (each >= 5 s); random offsets."""
    from models.network import PHASE_GREEN

    base = np.asarray(net.phase_duration_s, float)
    green = np.asarray(net.phase_kind) == PHASE_GREEN
    d = np.tile(base, (k, 1))
    cycle = rng.integers(60, 121, k)
    for s in range(net.n_signals):
        ph = np.arange(tpl.phase_ptr[s], tpl.phase_ptr[s + 1])
        g = ph[green[ph]]
        if g.size == 0:
            continue
        spare = cycle - base[ph[~green[ph]]].sum() - 5 * g.size
        share = rng.dirichlet(np.ones(g.size), k) * np.maximum(spare, 0)[:, None]
        gd = 5 + np.floor(share)
        gd[:, -1] += cycle - base[ph[~green[ph]]].sum() - gd.sum(1)
        d[:, g] = np.maximum(gd, 1)
    cyc = np.add.reduceat(d, tpl.phase_ptr[:-1], axis=1)
    o = np.floor(rng.random((k, net.n_signals)) * cyc)
    return d, o


def _with_threads(n: int, fn):
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        return fn()
    finally:
        numba.set_num_threads(old)


def bench_cyclic_single(smoke: bool) -> dict:
    """Plan evaluations per second on one intersection (the bundled grid-1x1: 12 movements, 8 phases)."""
    from models import cyclic
    from models.evaluate import prepare
    from sim.scenario import compile_scenario

    comp = compile_scenario("grid-1x1")
    ctx = prepare(comp.net, comp.demand)
    tpl = ctx.template()
    k = 2000 if smoke else 100_000
    d, o = _random_timings(tpl, comp.net, k, np.random.default_rng(0))
    per, ws, wl, wv, _ = tpl.windows(d, o)
    plans = cyclic.CyclicPlans(per, ws, wl, wv)
    out = {"movements": comp.net.n_movements, "candidates": k, "mean_period_s": float(per.mean())}
    t0 = time.perf_counter()
    tpl.windows(d, o)
    out["windows_per_s"] = round(k / (time.perf_counter() - t0))
    for n in (1, 2):
        t, t_cpu = _with_threads(n, lambda n=n: _timeit_both(
            lambda: cyclic.evaluate_batch(ctx.cyclic_net, plans, ctx.cyclic_opts, per_movement=False, n_threads=n),
            min_s=1.0 if not smoke else 0.1, max_reps=5))
        out[f"evals_per_s_{n}thr"] = round(k / t)
        if n == 1:
            out["evals_per_s_1thr_cpu"] = round(k / t_cpu)
        steps = float((per * comp.net.n_movements).sum())
        out[f"movement_steps_per_s_{n}thr"] = round(steps / t)
        cpu = f" ({k / t_cpu:,.0f} per process CPU second)" if n == 1 else ""
        print(f"cyclic, one intersection, {n} thread(s): {k / t:,.0f} plan evaluations/s{cpu}")
    one = cyclic.CyclicPlans(per[:1], ws[:1], wl[:1], wv[:1])
    evaluator = cyclic.CyclicEvaluator(ctx.cyclic_net, ctx.cyclic_opts, n_threads=1)
    out["single_plan_call_us"] = round(_timeit(lambda: evaluator(one)) * 1e6, 1)
    out["evals_per_s_per_core"] = out["evals_per_s_1thr"]
    out["goal_100k_per_core_met"] = out["evals_per_s_1thr"] >= 100_000
    # the same plans without giving way (models.yielding: the intersection's permissive left turns and the lanes
    # they share then discharge as if unopposed), side by side: what the gap-acceptance capacity costs
    from models.evaluate import ModelParams

    ctx0 = prepare(comp.net, comp.demand, ModelParams(yield_gap_s=0.0, yield_sneakers=0.0))
    t0, t0_cpu = _with_threads(1, lambda: _timeit_both(
        lambda: cyclic.evaluate_batch(ctx0.cyclic_net, plans, ctx0.cyclic_opts, per_movement=False, n_threads=1),
        min_s=1.0 if not smoke else 0.1, max_reps=5))
    out["evals_per_s_1thr_without_giving_way"] = round(k / t0)
    out["evals_per_s_1thr_without_giving_way_cpu"] = round(k / t0_cpu)
    out["giving_way_movements"] = int(np.count_nonzero(np.diff(ctx.cyclic_net.yielding.mg_ptr)))
    print(f"cyclic, one intersection, 1 thread, without giving way: {k / t0:,.0f} plan evaluations/s "
          f"({k / t0_cpu:,.0f} per process CPU second)")
    return out


def _grid(smoke: bool):
    from sim.scenario import compile_scenario

    spec = str(SHARED_GRID) if SHARED_GRID.is_file() else "grid-4x4"
    return spec, compile_scenario(spec)


def bench_network(comp, smoke: bool) -> dict:
    """Cyclic and queue kernels on a whole network: movement-steps/s and one plan-hour's wall time."""
    from models import cyclic, queue
    from models.evaluate import prepare, queue_levels, score_queue

    net = comp.net
    ctx = prepare(net, comp.demand)
    tpl = ctx.template()
    rng = np.random.default_rng(1)
    out: dict = {"signals": net.n_signals, "movements": net.n_movements,
                 "window_s": ctx.window_s}
    # cyclic
    k = 16 if smoke else 256
    d, o = _random_timings(tpl, net, k, rng)
    per, ws, wl, wv, _ = tpl.windows(d, o)
    plans = cyclic.CyclicPlans(per, ws, wl, wv)
    one = cyclic.CyclicPlans(per[:1], ws[:1], wl[:1], wv[:1])
    res = {}
    for n in (1, 2):
        tot, _ = cyclic.evaluate_batch(ctx.cyclic_net, plans, ctx.cyclic_opts, per_movement=False, n_threads=n)
        t = _with_threads(n, lambda n=n: _timeit(
            lambda: cyclic.evaluate_batch(ctx.cyclic_net, plans, ctx.cyclic_opts, per_movement=False, n_threads=n),
            max_reps=3))
        steps = float((per * net.n_movements * tot.sweeps).sum())
        res[f"movement_steps_per_s_{n}thr"] = round(steps / t)
        res[f"plan_evals_per_s_{n}thr"] = round(k / t)
    res["mean_sweeps"] = float(tot.sweeps.mean())
    evaluator = cyclic.CyclicEvaluator(ctx.cyclic_net, ctx.cyclic_opts, n_threads=1)
    res["plan_hour_s"] = _timeit(lambda: evaluator(one), max_reps=20)
    out["cyclic"] = res
    print(f"cyclic, {net.n_signals} signals: {res['plan_evals_per_s_1thr']:,} plans/s (1 thr), "
          f"{res['plan_evals_per_s_2thr']:,} (2 thr); one plan-hour {res['plan_hour_s'] * 1e3:.2f} ms")
    # queue: one plan-hour, and a batch
    kq = 2 if smoke else 16
    n_steps = 300 if smoke else int(np.ceil(ctx.window_s))
    levels = queue_levels(ctx, cyclic.CyclicPlans(per[:kq], ws[:kq], wl[:kq], wv[:kq]))
    res = {"steps": n_steps}
    for n in (1, 2):
        t = _with_threads(n, lambda n=n: _timeit(
            lambda: queue.run_batch(ctx.queue_net, ctx.queue_demand, levels, queue.initial_state(ctx.queue_net),
                                    n_steps, n_threads=n), max_reps=3))
        res[f"movement_steps_per_s_{n}thr"] = round(kq * n_steps * net.n_movements / t)
        res[f"plan_hours_per_s_{n}thr"] = round(kq / t * n_steps / 3600, 2)
    res["plan_hour_s"] = _timeit(lambda: score_queue(ctx, levels[:1], n_steps=int(np.ceil(ctx.window_s))),
                                 max_reps=5)
    out["queue"] = res
    print(f"queue, {net.n_signals} signals: {res['movement_steps_per_s_1thr']:,} movement-steps/s (1 thr), "
          f"{res['movement_steps_per_s_2thr']:,} (2 thr); one plan-hour {res['plan_hour_s'] * 1e3:.1f} ms")
    return out


def bench_twins(smoke: bool) -> dict:
    """Naive twins on a small random network: movement-steps per second (pure Python)."""
    sys.path.insert(0, str(REPO))
    from models.cyclic import CyclicNet, CyclicOptions, CyclicPlans, evaluate_batch
    from models.queue import QueueDemand, QueueNet, initial_state, run
    from tests.naive_models import naive_cyclic, naive_queue

    rng = np.random.default_rng(2)
    m, p = 12, 90
    cnet = CyclicNet(np.full(m, 0.5), rng.uniform(0, 0.1, m), np.arange(m + 1) * 0, np.zeros(0, np.int64),
                     np.zeros(0), np.zeros(0, np.int64), np.zeros(0), np.arange(m))
    plans = CyclicPlans(np.array([p]), rng.uniform(0, p, (1, m, 1)), rng.uniform(10, 40, (1, m, 1)),
                        np.ones((1, m, 1)))
    opts = CyclicOptions(1.0, 0.5, 10, 1e-9, 1e-6)
    t_naive = _timeit(lambda: naive_cyclic(cnet, plans, opts), min_s=0.2, max_reps=3)
    # steps the twin actually runs: warm-up periods until periodic (>= 2) + the measured one, per movement
    out = {"cyclic_twin_evals_per_s": round(1 / t_naive, 1),
           "cyclic_kernel_evals_per_s_same_case": round(1 / _timeit(lambda: evaluate_batch(cnet, plans, opts,
                                                                                          n_threads=1)))}
    out["cyclic_twin_movement_steps_per_s"] = round(m * p / t_naive)
    qnet = QueueNet(np.full(m, 0.5), np.arange(m), np.full(m, 30.0), np.r_[0, np.arange(1, m), m - 1],
                    np.arange(1, m), np.full(m - 1, 0.7), np.full(m - 1, 10))
    dem = QueueDemand(rng.uniform(0, 0.2, (1, m)), 3600)
    level = (rng.random((90, m)) < 0.5).astype(float)
    n = 100 if smoke else 600
    st = initial_state(qnet)
    t_naive = _timeit(lambda: naive_queue(qnet, dem, level, st.queue_veh, st.backlog_veh, {}, 0, n),
                      min_s=0.2, max_reps=3)
    t_kernel = _timeit(lambda: run(qnet, dem, level, initial_state(qnet), n))
    out["queue_twin_movement_steps_per_s"] = round(m * n / t_naive)
    out["queue_kernel_movement_steps_per_s_same_case"] = round(m * n / t_kernel)
    print(f"twins: cyclic {out['cyclic_twin_evals_per_s']} evals/s "
          f"(kernel {out['cyclic_kernel_evals_per_s_same_case']:,}); "
          f"queue {out['queue_twin_movement_steps_per_s']:,} movement-steps/s "
          f"(kernel {out['queue_kernel_movement_steps_per_s_same_case']:,})")
    return out


def sumo_hour_s(sumocfg: str | Path, end_s: float | None = None) -> float | None:
    """Wall time of ``sumo -c SUMOCFG --no-step-log`` (None when SUMO or the file is missing)."""
    try:
        from sim.sumo import binary

        exe = binary("sumo")
    except Exception:
        return None
    if not Path(sumocfg).is_file():
        return None
    cmd = [exe, "-c", str(sumocfg), "--no-step-log", "true", "--no-warnings", "true", "--seed", "1"]
    if end_s is not None:
        cmd += ["--end", f"{end_s:g}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


_COMPILE_SNIPPET = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
from models import cyclic, queue
t_import = time.perf_counter() - t0
net = cyclic.CyclicNet(np.full(2, .5), np.array([.1, 0.]), np.array([0, 0, 1]), np.array([0]), np.array([1.]),
                       np.array([5]), np.array([.2]), np.array([0, 1]))
plans = cyclic.CyclicPlans(np.array([60]), np.zeros((1, 2, 1)), np.full((1, 2, 1), 30.), np.ones((1, 2, 1)))
t0 = time.perf_counter()
cyclic.evaluate_batch(net, plans, cyclic.CyclicOptions(1., .5, 10, 1e-9, 1e-6))
t_cyc = time.perf_counter() - t0
qn = queue.QueueNet(np.full(2, .5), np.array([0, 1]), np.full(2, 20.), np.array([0, 1, 1]), np.array([1]),
                    np.array([1.]), np.array([5]))
t0 = time.perf_counter()
queue.run(qn, queue.QueueDemand(np.full((1, 2), .1), 60), np.ones((1, 2)), queue.initial_state(qn), 10)
queue.run_batch(qn, queue.QueueDemand(np.full((1, 2), .1), 60), np.ones((1, 1, 2)), queue.initial_state(qn), 10)
t_q = time.perf_counter() - t0
print(json.dumps({"import_s": t_import, "cyclic_first_call_s": t_cyc, "queue_first_call_s": t_q}))
"""


def bench_compile() -> dict:
    """Import and first-call times in fresh processes: empty numba cache (compile), then warm cache (load)."""
    import os

    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(REPO))
        for label in ("cold_cache", "warm_cache"):
            r = subprocess.run([sys.executable, "-c", _COMPILE_SNIPPET], env=env, capture_output=True, text=True,
                               check=True, cwd=REPO)
            out[label] = {k: round(v, 3) for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}
    print(f"compile: cold {out['cold_cache']}, warm {out['warm_cache']}")
    return out


def bench_memory(smoke: bool) -> dict:
    """Peak traced allocation of batch calls minus their outputs, vs K (cyclic: totals only; queue: (K, M) KPIs)."""
    from models import cyclic, queue
    from models.evaluate import prepare, queue_levels
    from sim.scenario import compile_scenario

    comp = compile_scenario("grid-1x1")
    ctx = prepare(comp.net, comp.demand)
    tpl = ctx.template()
    rng = np.random.default_rng(3)
    ks = [1, 10, 100, 1000] if smoke else [1, 10, 100, 1000, 10_000, 100_000]
    out: dict = {"cyclic": {}, "queue": {}}
    for k in ks:
        d, o = _random_timings(tpl, comp.net, k, rng)
        per, ws, wl, wv, _ = tpl.windows(d, o)
        plans = cyclic.CyclicPlans(per, ws, wl, wv)
        cyclic.evaluate_batch(ctx.cyclic_net, plans, ctx.cyclic_opts, per_movement=False)
        tracemalloc.start()
        tot, _ = cyclic.evaluate_batch(ctx.cyclic_net, plans, ctx.cyclic_opts, per_movement=False)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        outputs = sum(a.nbytes for a in tot)
        inputs_copied = 0  # inputs are already contiguous float64/int64: no copies
        out["cyclic"][k] = {"peak_kib": round(peak / 1024, 1), "outputs_kib": round(outputs / 1024, 1),
                            "beyond_outputs_kib": round((peak - outputs - inputs_copied) / 1024, 1)}
    for k in ks[:4]:
        d, o = _random_timings(tpl, comp.net, k, rng)
        per, ws, wl, wv, _ = tpl.windows(d, o)
        levels = queue_levels(ctx, cyclic.CyclicPlans(per, ws, wl, wv))
        st = queue.initial_state(ctx.queue_net)
        queue.run_batch(ctx.queue_net, ctx.queue_demand, levels, st, 60)
        tracemalloc.start()
        kpi = queue.run_batch(ctx.queue_net, ctx.queue_demand, levels, st, 60)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        outputs = sum(a.nbytes for a in kpi)
        out["queue"][k] = {"peak_kib": round(peak / 1024, 1), "outputs_kib": round(outputs / 1024, 1),
                           "beyond_outputs_kib": round((peak - outputs) / 1024, 1)}
    print("memory beyond outputs (KiB) cyclic:", {k: v["beyond_outputs_kib"] for k, v in out["cyclic"].items()},
          "queue:", {k: v["beyond_outputs_kib"] for k, v in out["queue"].items()})
    return out


def run(smoke: bool) -> dict:
    out: dict = {}
    out["compile"] = bench_compile()
    out["cyclic_single_intersection"] = bench_cyclic_single(smoke)
    spec, comp = _grid(smoke)
    out["scenario"] = spec
    out["network"] = bench_network(comp, smoke)
    out["twins"] = bench_twins(smoke)
    out["memory"] = bench_memory(smoke)
    cfg = comp.scenario.sumocfg
    sumo_s = None if cfg is None else sumo_hour_s(cfg, end_s=(comp.scenario.begin_s + 300) if smoke else None)
    if sumo_s is None:
        out["sumo"] = {"skipped": "sumo binary or scenario configuration not available"}
    else:
        window = 300.0 if smoke else comp.scenario.end_s - comp.scenario.begin_s
        cyc_s = out["network"]["cyclic"]["plan_hour_s"]
        q_s = out["network"]["queue"]["plan_hour_s"] * (window / out["network"]["window_s"])
        out["sumo"] = {"sumo_wall_s": round(sumo_s, 3), "window_s": window,
                       "movement_steps_per_s": round(comp.net.n_movements * window / sumo_s),
                       "speedup_cyclic_plan_hour": round(sumo_s / cyc_s, 1),
                       "speedup_queue_plan_hour": round(sumo_s / q_s, 1),
                       "goal_1000x_met_cyclic": sumo_s / cyc_s >= 1000}
        print(f"SUMO {window:g} s of {spec}: {sumo_s:.2f} s wall -> cyclic {sumo_s / cyc_s:,.0f}x, "
              f"queue {sumo_s / q_s:,.0f}x faster")
    return out
