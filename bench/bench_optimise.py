"""Scale of the optimiser: wall time and predicted quality on bundled grids of 16, 100, 400 and 1024 signals.

Goal (issue 5): 1024 signals in under 60 s on the 2-core machine. For each grid: compile time (cached scenario
build excluded), instance time (constraints, feasibility of every signal), optimisation wall time under the time
limit, and the cyclic model's objective and mean delay for the current programs and the optimised plan (the whole
network). The plan is validated (engine.safety on every signal). ``smoke``: grid-4x4 only, 3 s.
"""

from __future__ import annotations

import time

SIZES = (4, 10, 20, 32)
TIME_LIMIT_S = {4: 10.0, 10: 20.0, 20: 35.0, 32: 45.0}


def run(smoke: bool) -> dict:
    from engine.optimise import OptimiseOptions, build_instance, optimise, validate
    from sim import scenarios
    from sim.scenario import compile_scenario

    out = {}
    for n in (SIZES[:1] if smoke else SIZES):
        name = f"grid-{n}x{n}"
        scenarios.build(name)
        t0 = time.perf_counter()
        comp = compile_scenario(name)
        t_compile = time.perf_counter() - t0
        limit = 3.0 if smoke else TIME_LIMIT_S[n]
        opts = OptimiseOptions(time_limit_s=limit, seed=1, workers=2)
        t0 = time.perf_counter()
        inst = build_instance(comp.net, comp.demand, opts, scenario=name, net_file=comp.scenario.net_file)
        t_inst = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = optimise(inst)
        t_opt = time.perf_counter() - t0
        errs = validate(inst, res.solution)
        cur_obj, cur_ev = res.current
        new_obj, new_ev = res.optimised
        groups = res.solution.stats.get("groups", [])
        out[name] = {
            "signals": comp.net.n_signals, "movements": comp.net.n_movements, "time_limit_s": limit,
            "compile_s": round(t_compile, 2), "instance_s": round(t_inst, 2), "optimise_s": round(t_opt, 2),
            "total_s": round(t_inst + t_opt, 2), "valid": not errs,
            "objective_current": round(cur_obj), "objective_optimised": round(new_obj),
            "objective_change_pct": round(100.0 * (new_obj - cur_obj) / cur_obj, 1) if cur_obj else None,
            "mean_delay_current_s": round(cur_ev.mean_delay_s, 1),
            "mean_delay_optimised_s": round(new_ev.mean_delay_s, 1),
            "cycles": sorted({t.cycle_s for t in res.solution.timings}),
            "search_rounds": sum(g.get("search", {}).get("rounds", 0) for g in groups),
            "search_stopped_by": sorted({g.get("search", {}).get("stopped_by", "") for g in groups}),
        }
        r = out[name]
        print(f"{name}: {r['signals']} signals, instance {r['instance_s']} s + optimise {r['optimise_s']} s "
              f"(limit {limit:g} s); objective {r['objective_change_pct']:+.1f} %, mean delay "
              f"{r['mean_delay_current_s']} -> {r['mean_delay_optimised_s']} s; valid {r['valid']}", flush=True)
    return out
