"""Optional SUMO polish: a local search in the simulator itself (``gronvag optimise --sim-polish N``).

Where the models' picture of a network is off (measured on the shared scenarios: queues that outgrow turn pockets
and short approaches, permissive turns that find fewer gaps than the model's level, insertion at short entry
edges), the model-optimal plan is not SUMO-optimal. After the model (and, with ``--sim-check``, SUMO's choice among
model candidates), this stage moves the plan in small steps and keeps a step only when SUMO, on the *training*
seeds (default 1001-1003, disjoint from any proof seeds), shows a lower mean benchmark delay:

* split steps: ``step`` seconds from one adjustable phase to another of the same signal;
* shared split steps (``--sim-shared``): the same split step at every signal with the same phase structure (the
  same states and adjustable phases: a corridor's major junctions, a grid's identical crossings), where it keeps
  every one valid. A change at one of several like junctions moves the network's delay by less than the seed
  noise; the same change at all of them moves it by their sum, which the noise rule below can tell apart (on the
  bundled corridor, 2 s from the cross street to the protected left turns at its three major junctions: -5.4 s/veh
  on seeds 1001-1006, -1.2 on 1007-1012, where each junction's step alone is below the noise);
* the sweep (``--sim-sweep``, off by default; before the random steps): every shared split step of
  ``sweep_step_s`` (2 s) from the current plan, all of them run on the training seeds; the lowest is kept only when
  it passes the noise rule below there and *again* on the confirmation seeds (default 3001-3024), which took no part
  in choosing it; then the next sweep from the new plan (never the step back), until one keeps nothing. On the
  bundled corridor with ``--max-dos 1.0`` (the check then keeps the programs) its first sweep's best, 2 s from the
  cross street to the protected lefts at J3, J5 and J8, gained 5.4 s/veh on the training seeds 1001-1006; on six
  confirmation seeds it lost 0.9, on twenty-four it gained 2.3 and was kept, and on 30 fresh seeds (11-40) it is
  2.1 s/veh (SE 0.8) below the programs. Twenty-four seeds by default, for that reason;
* offset steps: one signal's offset by +-``2 step`` seconds (networks with more than one signal);
* cycle steps: a coordination group's cycle by +-5 s, the change spread over the adjustable phases in proportion to
  their slack above the minimum, offsets scaled with the cycle.

Every step is checked by ``engine.optimise.solution.validate`` (minimum and maximum greens, clearances, pins, the
cycle range and the X cap where it held) before any SUMO run: the search moves among safe plans only. Proposals are
evaluated in pairs (both cores busy); all candidates share the training seeds (common random numbers), so a
difference between two plans is mostly the plans'. The step size halves after a run of rejections (6 -> 3 -> 1 s);
the search ends when the budget of plan evaluations is spent or no step size helps. Deterministic for a seed.

A step is kept only when its gain is larger than the noise: the per-seed differences to the current best (paired
by seed) must average below ``-min_gain`` of the best and stay below zero by ``z`` standard errors of their mean
(default 1). Without that rule a search of 40 proposals on 3 seeds can keep whatever happened to win on those
seeds. The same effect measured on the bundled corridor, in the SUMO check's choice among 13 candidates: its
winner gained 2.5 % on the training seeds 1001-1003 and lost 0.9 % on the proof seeds. More training seeds
(``--sim-seeds``) make the rule less strict per step and the result more reliable.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

KPI = "benchmark_delay_s"


@dataclass(frozen=True)
class SimPolishOptions:
    budget: int = 40  # plan evaluations (each on every training seed)
    seeds: tuple[int, ...] = (1001, 1002, 1003)
    protocol: str = "default"
    jobs: int = 2
    seed: int = 1
    steps_s: tuple[int, ...] = (6, 3, 1)
    patience: int = 6  # rejected proposals in a row before the step size shrinks
    min_gain: float = 0.002  # a step must lower the training delay by this share
    z: float = 1.0  # ... and its paired gain over the seeds must exceed z standard errors (noise, not luck)
    shared: bool = False  # also propose shared split steps (one step at every signal of one phase structure)
    sweep: bool = False  # first the systematic sweep of shared split steps (``--sim-sweep``)
    sweep_step_s: int = 2  # ... at this step
    confirm_seeds: tuple[int, ...] = tuple(range(3001, 3025))  # where a sweep's best step must show its gain again


def _spread(d: np.ndarray, lo: np.ndarray, adj: np.ndarray, delta: int) -> np.ndarray | None:
    """d with ``delta`` seconds added (or removed) over the adjustable phases in proportion to their slack."""
    d = d.copy()
    idx = np.flatnonzero(adj)
    if idx.size == 0:
        return None
    slack = (d[idx] - lo[idx]).astype(float) + 1.0
    share = slack / slack.sum() * delta
    add = np.floor(share).astype(np.int64)
    rest = int(delta - add.sum())
    order = np.argsort(-(share - add))
    for k in range(abs(rest)):
        add[order[k % idx.size]] += 1 if rest > 0 else -1
    d[idx] += add
    return d if np.all(d[idx] >= lo[idx]) else None


def with_durations(t, d: np.ndarray):
    """Timing ``t`` with phase durations ``d``: its cycle their sum, its offset scaled with the cycle."""
    c = int(d.sum())
    return replace(t, cycle_s=c, durations_s=tuple(int(v) for v in d),
                   offset_s=int(round(t.offset_s * c / t.cycle_s)) % c)


def paired_difference(cand, ref) -> tuple[float, float]:
    """Mean of the per-seed differences ``cand - ref`` (same seeds, same order) and the standard error of that mean
    (NaN with one seed)."""
    diff = np.asarray(cand, float) - np.asarray(ref, float)
    se = float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else float("nan")
    return float(diff.mean()), se


def gain_is_real(cand, ref, min_gain: float, z: float) -> bool:
    """Whether a candidate's per-seed training figures ``cand`` beat the reference's ``ref`` (same seeds, same
    order) by more than the noise: the paired differences average below ``-min_gain`` of the reference's mean, and
    their mean plus ``z`` standard errors stays below zero (one seed: the first rule alone)."""
    mean, se = paired_difference(cand, ref)
    se = 0.0 if math.isnan(se) else se
    return mean < -min_gain * float(np.mean(np.asarray(ref, float))) and mean + z * se < 0.0


def _shared_step(sol, members, p: int, q: int, step: int) -> list:
    """The timings of ``sol`` with ``step`` seconds moved from phase ``p`` to phase ``q`` at every signal of
    ``members``."""
    timings = list(sol.timings)
    for i in members:
        d = sol.durations(i)
        d[p] -= step
        d[q] += step
        timings[i] = replace(timings[i], durations_s=tuple(int(v) for v in d))
    return timings


class _Proposer:
    def __init__(self, inst, rng: np.random.Generator, shared: bool = False):
        self.inst = inst
        self.rng = rng
        like: dict[tuple, list[int]] = {}
        for i, sig in enumerate(inst.signals):
            like.setdefault((tuple(sig.states), tuple(bool(a) for a in sig.adjustable)), []).append(i)
        #: groups of like signals (more than one, more than one adjustable phase): the shared steps' and the sweep's
        self.groups = [m for m in like.values() if len(m) > 1 and np.count_nonzero(inst.signals[m[0]].adjustable) > 1]
        self.shared = self.groups if shared else []  # the random proposals' groups

    def propose(self, sol, step: int):
        """A random valid neighbour of ``sol`` and its description, or (None, '') after many invalid tries."""
        from engine.optimise.solution import Solution, validate

        inst = self.inst
        n = len(inst.signals)
        kinds = ["split"] * 6 + (["offset"] * 3 if n > 1 else []) + ["cycle"] * 2
        kinds += ["shared"] * 3 if self.shared else []
        for _ in range(60):
            kind = kinds[int(self.rng.integers(len(kinds)))]
            timings = list(sol.timings)
            if kind == "split":
                i = int(self.rng.integers(n))
                sig = inst.signals[i]
                adj = np.flatnonzero(sig.adjustable)
                if adj.size < 2:
                    continue
                p, q = self.rng.choice(adj, 2, replace=False)
                d = sol.durations(i)
                d[p] -= step
                d[q] += step
                timings[i] = replace(timings[i], durations_s=tuple(int(v) for v in d))
                what = f"{sig.signal_id}: {step} s from phase {p} to phase {q}"
            elif kind == "shared":
                members = self.shared[int(self.rng.integers(len(self.shared)))]
                adj = np.flatnonzero(inst.signals[members[0]].adjustable)
                p, q = self.rng.choice(adj, 2, replace=False)
                timings = _shared_step(sol, members, p, q, step)
                ids = "+".join(inst.signals[i].signal_id for i in members)
                what = f"{ids}: shared {step} s from phase {p} to phase {q}"
            elif kind == "offset":
                i = int(self.rng.integers(n))
                t = timings[i]
                delta = int(2 * step * (1 if self.rng.random() < 0.5 else -1))
                timings[i] = replace(t, offset_s=int((t.offset_s + delta) % t.cycle_s))
                what = f"{t.signal_id}: offset {delta:+d} s"
            else:
                g = inst.groups[int(self.rng.integers(len(inst.groups)))]
                delta = 5 if self.rng.random() < 0.5 else -5
                ok = True
                for i in g.members:
                    sig, t = inst.signals[i], timings[i]
                    d = _spread(sol.durations(i), sig.lo_s, sig.adjustable & (sig.lo_s < sig.hi_s), delta)
                    if d is None:
                        ok = False
                        break
                    timings[i] = with_durations(t, d)
                if not ok:
                    continue
                what = f"group of {inst.signals[g.members[0]].signal_id}: cycle {delta:+d} s"
            cand = Solution(tuple(timings))
            if not validate(inst, cand):
                return cand, what
        return None, ""


def shared_moves(inst, proposer: _Proposer, sol, step: int):
    """Every shared split step of ``step`` seconds from ``sol`` (each group of like signals, each ordered pair of
    its adjustable phases) that keeps the plan valid: [(solution, description, (group, from phase, to phase))], in a
    fixed order."""
    from engine.optimise.solution import Solution, validate

    out = []
    for g, members in enumerate(proposer.groups):
        adj = np.flatnonzero(inst.signals[members[0]].adjustable)
        ids = "+".join(inst.signals[i].signal_id for i in members)
        for p in adj:
            for q in adj:
                if p == q:
                    continue
                cand = Solution(tuple(_shared_step(sol, members, p, q, step)))
                if not validate(inst, cand):
                    out.append((cand, f"{ids}: shared {step} s from phase {p} to phase {q}", (g, int(p), int(q))))
    return out


def _sweep(inst, proposer, best, best_vec, opts: SimPolishOptions, measure, reporter, accepted: list, sweeps: list):
    """The systematic sweep (``sweep``): all shared split steps of ``opts.sweep_step_s`` from the best plan run on
    the training seeds; the lowest is kept when its gain passes the noise rule there *and* again on the
    confirmation seeds, which did not take part in choosing it (the lowest of a dozen moves on the same seeds
    owes part of its gain to the choice: on the bundled corridor the best of 16 moves gained 5.4 s/veh on six
    training seeds and 1.2 on six others). Repeats from the new plan; returns (best, its training figures, plan
    evaluations spent)."""
    evals, best_conf, last = 0, None, None
    while evals < opts.budget:
        moves = [m for m in shared_moves(inst, proposer, best, opts.sweep_step_s) if m[2] != last]
        moves = moves[:max(0, opts.budget - evals - 2)]
        if not moves:
            break
        reporter.stage(f"SUMO polish: sweep of {len(moves)} shared steps of {opts.sweep_step_s} s")
        vecs = measure([m[0] for m in moves])
        evals += len(moves)
        k = int(np.argmin([v.mean() for v in vecs]))
        rec = {"moves": len(moves), "best": moves[k][1], "delay_s": round(float(vecs[k].mean()), 3),
               "from_s": round(float(best_vec.mean()), 3), "kept": False}
        sweeps.append(rec)
        if not gain_is_real(vecs[k], best_vec, opts.min_gain, opts.z):
            break
        if best_conf is None:
            best_conf = measure([best], opts.confirm_seeds)[0]
            evals += 1
        conf = measure([moves[k][0]], opts.confirm_seeds)[0]
        evals += 1
        rec["confirm_delay_s"] = round(float(conf.mean()), 3)
        rec["confirm_from_s"] = round(float(best_conf.mean()), 3)
        if not gain_is_real(conf, best_conf, 0.0, opts.z):
            break
        rec["kept"] = True
        best, best_vec, best_conf = moves[k][0], vecs[k], conf
        g, p, q = moves[k][2]
        last = (g, q, p)  # the step back is no candidate next time
        accepted.append({"step": moves[k][1] + " (sweep, confirmed)", "delay_s": round(float(vecs[k].mean()), 3),
                         "evaluation": evals})
    return best, best_vec, evals


def sim_polish(inst, result, comp, opts: SimPolishOptions, workdir: Path, reporter):
    """Returns (polished OptimiseResult, a record for the summary). ``comp``: the compiled scenario (SUMO runs)."""
    from engine.optimise.run import result_of
    from engine.optimise.simcheck import sumo_score
    from engine.optimise.solution import to_planset
    from sim.calibrate import measure_one

    t0 = time.perf_counter()
    rng = np.random.default_rng(opts.seed)
    workdir.mkdir(parents=True, exist_ok=True)
    counter = [0]

    def measure(sols, seeds=opts.seeds) -> list[np.ndarray]:
        jobs = []
        for sol in sols:
            counter[0] += 1
            ps = to_planset(inst, sol)
            jobs += [(counter[0], ps, s) for s in seeds]
        with ThreadPoolExecutor(max(1, opts.jobs)) as pool:
            futs = [pool.submit(measure_one, comp, ps, s, workdir / f"e{k:03d}_s{s}", opts.protocol)
                    for k, ps, s in jobs]
            vals = [sumo_score(r[KPI], r, inst.options) for r in (f.result() for f in futs)]
        m = len(seeds)
        return [np.asarray(vals[k * m:(k + 1) * m], float) for k in range(len(sols))]

    best = result.solution
    best_vec = measure([best])[0]
    best_val = float(best_vec.mean())
    start_val = best_val
    evals, accepted, history = 0, [], [round(best_val, 3)]
    proposer = _Proposer(inst, rng, opts.shared)
    sweeps = []
    if opts.sweep and proposer.groups and opts.sweep_step_s > 0:
        best, best_vec, evals = _sweep(inst, proposer, best, best_vec, opts, measure, reporter, accepted, sweeps)
        best_val = float(best_vec.mean())
        history.append(round(best_val, 3))
    for step in opts.steps_s:
        fails = 0
        while fails < opts.patience and evals < opts.budget:
            props = [proposer.propose(best, step) for _ in range(max(1, opts.jobs))]
            props = [(s, w) for s, w in props if s is not None]
            if not props:
                break
            reporter.stage(f"SUMO polish {evals + 1}/{opts.budget}: step {step} s, delay {best_val:.2f} s")
            vecs = measure([s for s, _ in props])
            evals += len(props)
            k = int(np.argmin([v.mean() for v in vecs]))
            if gain_is_real(vecs[k], best_vec, opts.min_gain, opts.z):
                best, best_vec = props[k][0], vecs[k]
                best_val = float(best_vec.mean())
                accepted.append({"step": props[k][1], "delay_s": round(best_val, 3), "evaluation": evals})
                fails = 0
            else:
                fails += len(props)
            history.append(round(best_val, 3))
        if evals >= opts.budget:
            break
    out = result if best is result.solution else result_of(inst, best, "SUMO polish")
    info = {"seeds": list(opts.seeds), "protocol": opts.protocol, "budget": opts.budget, "evaluations": evals,
            "z": opts.z, "shared": opts.shared, "sweep": opts.sweep, "sweeps": sweeps,
            "start_delay_s": round(start_val, 3), "end_delay_s": round(best_val, 3), "accepted": accepted,
            "wall_s": round(time.perf_counter() - t0, 1)}
    return out, info
