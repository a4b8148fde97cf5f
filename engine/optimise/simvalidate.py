"""Optional hold-out check of the SUMO-chosen plan (``gronvag optimise --sim-validate SEEDS``).

The SUMO check and the SUMO polish pick, among many plans, the one with the lowest delay on the training seeds. On a
noisy network that choice partly picks seed luck: on the bundled corridor a plan 2.7 s/veh better than the start
on six training seeds (1001-1006) was 2.4 s/veh *worse* than the programs on 30 fresh seeds (11-40; see
bench/results/optimiser.md, "Session 7"). This stage runs the chosen plan and the scenario's own programs on
*validation* seeds that neither stage saw and keeps the chosen plan only when it beats the programs there by more
than the noise (:func:`engine.optimise.simpolish.gain_is_real`: the paired per-seed differences average below zero
by ``z`` standard errors). Otherwise the output is the programs themselves (when they satisfy every hard constraint
of the request; else the chosen plan stays, and the summary says so): Grönvåg does not hand out a plan that SUMO,
on seeds it did not tune on, does not show to be better than the one already running.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

KPI = "benchmark_delay_s"


@dataclass(frozen=True)
class SimValidateOptions:
    seeds: tuple[int, ...]
    protocol: str = "default"
    jobs: int = 2
    z: float = 1.0
    min_gain: float = 0.0


def sim_validate(inst, result, base_inst, comp, opts: SimValidateOptions, reporter):
    """Returns (OptimiseResult, its Instance, a record for the summary)."""
    from engine.optimise.run import result_of
    from engine.optimise.simcheck import sumo_score
    from engine.optimise.simpolish import gain_is_real, paired_difference
    from engine.optimise.solution import current_solution, to_planset, validate
    from sim.calibrate import measure

    t0 = time.perf_counter()
    cur = current_solution(base_inst)
    cur_errors = validate(base_inst, cur)
    same = [(t.signal_id, t.cycle_s, t.offset_s, t.durations_s) for t in result.solution.timings] == \
        [(t.signal_id, t.cycle_s, t.offset_s, t.durations_s) for t in cur.timings]
    if same:  # the SUMO stages kept the programs: nothing to tell apart
        return result, inst, {"seeds": list(opts.seeds), "protocol": opts.protocol, "z": opts.z,
                              "kept": "programs", "note": "the chosen plan is the programs themselves: not run",
                              "wall_s": 0.0}
    reporter.stage(f"SUMO validation on seeds {list(opts.seeds)}")
    runs = measure(comp, [to_planset(inst, result.solution), to_planset(base_inst, cur)], list(opts.seeds),
                   opts.jobs, protocol=opts.protocol)
    chosen, programs = (np.array([sumo_score(r[KPI], r, inst.options) for r in row]) for row in runs)
    mean_diff, se = paired_difference(chosen, programs)
    better = gain_is_real(chosen, programs, opts.min_gain, opts.z)
    info = {"seeds": list(opts.seeds), "protocol": opts.protocol, "z": opts.z,
            "chosen_delay_s": round(float(chosen.mean()), 3), "programs_delay_s": round(float(programs.mean()), 3),
            "paired_difference_s": round(mean_diff, 3), "standard_error_s": round(se, 3),
            "chosen_values": [round(float(v), 2) for v in chosen],
            "programs_values": [round(float(v), 2) for v in programs]}
    if better:
        info["kept"] = "optimised"
        out, out_inst = result, inst
    elif cur_errors:
        info["kept"] = "optimised"
        info["note"] = ("not better than the programs on the validation seeds, but the programs break the request "
                        f"({cur_errors[0]}): the optimised plan stays")
        out, out_inst = result, inst
    else:
        info["kept"] = "programs"
        out, out_inst = result_of(base_inst, cur, "the scenario's programs (SUMO validation)"), base_inst
    info["wall_s"] = round(time.perf_counter() - t0, 1)
    return out, out_inst, info
