"""Harness overhead: wall time of a controlled run against the plain `sumo` binary, same scenario and seed.

Goals: under 1.5x for `fixed`, under 3x for `max-pressure` on grid4x4 (../shared/scenarios; the bundled grid-4x4
when it is absent).
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(smoke: bool) -> dict:
    from sim.controllers import make_controller
    from sim.harness import RunConfig
    from sim.harness import run as run_sim
    from sim.scenario import compile_scenario
    from sim.sumo import binary

    shared = REPO.parent / "shared" / "scenarios" / "grid4x4"
    spec = str(shared) if shared.is_dir() else "grid-4x4"
    comp = compile_scenario(spec, end_s=300 if smoke else None)
    sc = comp.scenario
    out: dict = {"scenario": spec, "window_s": [sc.begin_s, sc.end_s]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cmd = [binary("sumo"), "-n", str(sc.net_file), "-r", ",".join(map(str, sc.route_files)),
               "--begin", f"{sc.begin_s:g}", "--end", f"{sc.end_s:g}", "--seed", "1", "--no-step-log", "true",
               "--tripinfo-output", str(tmp / "plain_tripinfo.xml"), "--device.emissions.probability", "1",
               "--no-warnings", "true"]
        repeats = 1 if smoke else 3
        walls: dict[str, list[float]] = {"plain": [], "fixed": [], "max-pressure": []}
        recs = {}
        for _ in range(repeats):  # interleaved, so that load on the machine hits all three alike
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            walls["plain"].append(time.perf_counter() - t0)
            for name in ("fixed", "max-pressure"):
                t0 = time.perf_counter()
                recs[name] = run_sim(sc, comp.net, make_controller(name), RunConfig(seed=1), tmp / name)
                walls[name].append(time.perf_counter() - t0)
        plain = statistics.median(walls["plain"])
        out["repeats"] = repeats
        out["plain_sumo_s"] = round(plain, 3)
        for name in ("fixed", "max-pressure"):
            wall = statistics.median(walls[name])
            out[name] = {"wall_s": round(wall, 3), "ratio_to_plain": round(wall / plain, 2),
                         "benchmark_delay_s": round(recs[name]["kpi"]["benchmark_delay_s"], 2)}
            print(f"{name}: {wall:.2f} s vs plain sumo {plain:.2f} s -> {wall / plain:.2f}x (median of {repeats})")
    return out
