"""Compile time of the network + demand compiler on bundled grids (goal: 32x32 in under 10 s)."""

from __future__ import annotations

import time


def run(smoke: bool) -> dict:
    from sim import scenarios
    from sim.scenario import compile_scenario

    sizes = [4] if smoke else [4, 16, 32]
    out = {}
    for n in sizes:
        name = f"grid-{n}x{n}"
        t0 = time.perf_counter()
        cfg = scenarios.build(name)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        comp = compile_scenario(cfg)
        t_compile = time.perf_counter() - t0
        out[name] = {"signals": comp.net.n_signals, "movements": comp.net.n_movements,
                     "vehicles": comp.demand.n_vehicles, "build_or_cache_s": round(t_build, 3),
                     "compile_s": round(t_compile, 3)}
        print(f"{name}: {comp.net.n_signals} signals, {comp.net.n_movements} movements, "
              f"compile {t_compile:.2f} s (build/cache {t_build:.2f} s)")
    return out
