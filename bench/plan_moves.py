"""What-if moves on a scenario's own plan, measured in SUMO side by side (paired by seed).

    python -m bench.plan_moves stockholm-corridor --seeds 1001-1006 \\
        --variant 'left+2=J3+J5+J8:9>5=2' --variant 'J5 offset-4=J5:offset=-4'

A variant is ``NAME=MOVE[;MOVE...]``; a move is either ``SIGNALS:P>Q=S`` (S seconds of green from phase P to phase Q
of each listed signal, phase indices of its program), ``SIGNALS:offset=S`` (the offset shifted by S seconds) or
``SIGNALS:cycle=S`` (the cycle lengthened by S seconds, spread over the adjustable greens in proportion to their slack
above the minimum and the offset scaled with the cycle: the SUMO polish's cycle step; list every signal of the
coordination group); SIGNALS is one id, several joined by ``+``, or ``*`` for every signal. Every variant is checked
by the optimiser's independent validation (minimum and maximum greens, clearances, cycle bounds, engine.safety) before
anything runs: an unsafe move is a one-line error. Each plan runs on every seed (common random numbers); the table
gives the mean benchmark delay, the paired difference to the own plan with its standard error, and the per-seed
figures. This is how the corridor's split and offset experiments in bench/results/optimiser.md were measured.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np


def parse_variant(text: str, signal_ids) -> tuple[str, list[tuple]]:
    """'NAME=MOVE;MOVE' -> (name, [(signal ids, 'split', p, q, s) | (signal ids, 'offset' or 'cycle', s)])."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"variant {text!r}: expected NAME=MOVE[;MOVE...]")
    moves = []
    for part in rest.split(";"):
        sigs, sep, what = part.partition(":")
        ids = sorted(signal_ids) if sigs == "*" else sigs.split("+")
        unknown = [s for s in ids if s not in signal_ids]
        if not sep or unknown:
            raise ValueError(f"variant {name!r}: {part!r} " + (
                f"names no traffic light {unknown[0]!r}" if unknown
                else "needs SIGNALS:P>Q=S, SIGNALS:offset=S or SIGNALS:cycle=S"))
        key, sep, sec = what.partition("=")
        try:
            seconds = int(sec)
            if key in ("offset", "cycle"):
                moves.append((ids, key, seconds))
            else:
                p, q = (int(x) for x in key.split(">"))
                moves.append((ids, "split", p, q, seconds))
        except ValueError:
            raise ValueError(f"variant {name!r}: {part!r} needs SIGNALS:P>Q=S, SIGNALS:offset=S or "
                             "SIGNALS:cycle=S") from None
    return name, moves


def _spread_within(sig, d, delta: int):
    """d with ``delta`` seconds spread over the adjustable greens in proportion to their slack above the minimum
    (engine.optimise.simpolish's rule), a green at its maximum (or minimum) passing its share on to the others; None
    when they have no room for it."""
    from engine.optimise.simpolish import _spread

    lo, hi = np.asarray(sig.lo_s, np.int64), np.asarray(sig.hi_s, np.int64)
    d = d.copy()
    rest = delta
    while rest:
        room = sig.adjustable & (lo < hi) & ((d < hi) if rest > 0 else (d > lo))
        new = _spread(d, lo, room, rest)
        if new is None:
            return None
        new = np.clip(new, lo, hi)
        rest -= int(new.sum() - d.sum())
        if int(new.sum()) == int(d.sum()):
            return None
        d = new
    return d


def apply_moves(inst, sol, moves):
    """The solution with the moves applied (a new Solution; validity is the caller's check)."""
    from engine.optimise.simpolish import with_durations
    from engine.optimise.solution import Solution

    index = {s.signal_id: i for i, s in enumerate(inst.signals)}
    timings = list(sol.timings)
    for mv in moves:
        for sid in mv[0]:
            i = index[sid]
            t = timings[i]
            if mv[1] == "offset":
                timings[i] = replace(t, offset_s=int((t.offset_s + mv[2]) % t.cycle_s))
                continue
            if mv[1] == "cycle":
                d = _spread_within(inst.signals[i], np.array(t.durations_s, np.int64), mv[2])
                if d is None:
                    raise ValueError(f"{sid}: the cycle cannot change by {mv[2]:+d} s (no slack left)")
                timings[i] = with_durations(t, d)
                continue
            _, _, p, q, s = mv
            d = np.array(t.durations_s, np.int64)
            if not (0 <= p < d.size and 0 <= q < d.size):
                raise ValueError(f"{sid}: phases {p} and {q}: its program has {d.size} phases")
            d[p] -= s
            d[q] += s
            timings[i] = replace(t, durations_s=tuple(int(v) for v in d))
    return Solution(tuple(timings))


def main(argv: list[str] | None = None) -> int:
    from engine.optimise.instance import OptimiseOptions, build_instance
    from engine.optimise.simpolish import paired_difference
    from engine.optimise.solution import current_solution, to_planset, validate
    from sim import calibrate as cal
    from sim.evaluate import parse_seeds
    from sim.scenario import compile_scenario

    ap = argparse.ArgumentParser(prog="python -m bench.plan_moves", description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=MOVE[;MOVE...]")
    ap.add_argument("--seeds", default="1001-1006", help="SUMO seeds (default 1001-1006, apart from proof seeds)")
    ap.add_argument("--end", type=float, help="window end, s (default: the configuration's)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--sumo-cache", type=Path, help="reuse SUMO runs from this folder (sim.calibrate.measure)")
    args = ap.parse_args(argv)
    comp = compile_scenario(args.scenario, end_s=args.end)
    inst = build_instance(comp.net, comp.demand, OptimiseOptions(), scenario=comp.scenario.name)
    own = current_solution(inst)
    names, sols = ["own"], [own]
    ids = {s.signal_id for s in inst.signals}
    for text in args.variant:
        try:
            name, moves = parse_variant(text, ids)
            sol = apply_moves(inst, own, moves)
        except ValueError as exc:
            raise SystemExit(f"{comp.scenario.name}: {exc}") from None
        errs = validate(inst, sol)
        if errs:
            raise SystemExit(f"{comp.scenario.name}: variant {name!r} is not a valid plan: {errs[0]}")
        names.append(name)
        sols.append(sol)
    seeds = parse_seeds(args.seeds)
    runs = cal.measure(comp, [to_planset(inst, s) for s in sols], seeds, args.jobs, cache=args.sumo_cache)
    vals = np.array([[r["benchmark_delay_s"] for r in row] for row in runs])
    print(f"{comp.scenario.name}: benchmark delay [s/veh], SUMO seeds {args.seeds}; paired difference to 'own' "
          "(standard error of its mean)")
    for name, v in zip(names, vals, strict=True):
        mean_diff, se = paired_difference(v, vals[0])
        print(f"{name:24s} {v.mean():8.2f}  {mean_diff:+7.2f} ({se:4.2f})  per seed "
              + " ".join(f"{x:.1f}" for x in v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
