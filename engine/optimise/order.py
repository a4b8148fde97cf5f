"""Phase order (``gronvag optimise --phase-order``): lead or lag of turning phases, chosen by the model.

For every optimised signal that runs its program's structure and has other legal orders of its green phases
(:func:`engine.optimise.structure.order_structures`), each order is scored with the optimised timing carried over:
every green keeps its duration and the program's bounds, the transitions between greens that now follow each
other are the program's or built from the safety spec, the cycle is kept by spreading the change in clearance time
over the greens, the offset (start of the first green) is kept. The whole network is scored by the cyclic model
(delay + k stops), signals one after the other, each keeping its best order so far (greedy). The optimiser then
runs again on the chosen structures, and its result is kept only if the model scores it better than the result in
the programs' own orders. Every candidate is checked by ``validate`` (safety, bounds, X cap) before it is scored.
"""

from __future__ import annotations

import numpy as np


def _carry(sig_prog, t, variant, order, spec):
    """Durations of ``variant`` (states, durations, adjustable) with the greens of timing ``t`` (program
    structure) and the cycle of ``t``; (durations, lo, hi) or None when the cycle cannot be kept. A green phase
    lasts at least the minimum green of every group it shows a protected green ('G'), so that a reordered turning
    phase never shrinks to a stub."""
    from engine.optimise.simpolish import _spread

    states, durs, adj = variant[:3]
    d = np.asarray(durs, np.int64).copy()
    lo = d.copy()
    hi = d.copy()
    greens = iter(order)
    for k in range(len(states)):
        if adj[k]:
            g = next(greens)
            d[k] = t.durations_s[g]
            need = max([int(spec.min_green_s[j]) for j, c in enumerate(states[k]) if c == "G"] or [1])
            lo[k], hi[k] = max(int(sig_prog.lo_s[g]), need), sig_prog.hi_s[g]
    adj_b = np.asarray(adj, bool) & (lo < hi)
    delta = int(t.cycle_s - d.sum())
    if delta:
        d2 = _spread(d, lo, adj_b, delta)
        if d2 is None:
            return None
        d = d2
    if np.any(d < lo) or np.any(d > hi) or int(d.sum()) != t.cycle_s:
        return None
    return d, lo, hi


def choose_orders(build, inst, result, reporter=None, min_gain: float = 0.002):
    """(structures {signal index: variant}, records) chosen greedily by the model (see the module docstring).
    ``build(structures)`` returns an Instance with those structures (same options, demand and context)."""
    from engine.optimise.run import network_objective
    from engine.optimise.solution import SignalTiming, Solution, to_planset, validate
    from engine.optimise.structure import order_structures

    skipped = set(inst.skipped)
    pos = {sig.index: i for i, sig in enumerate(inst.signals)}
    todo = [sig.index for sig in inst.signals if not sig.pinned and sig.signal_id not in skipped]
    cands = order_structures(inst.net, todo)
    best_obj = float(result.optimised[0])
    timings = list(result.solution.timings)
    chosen: dict[int, tuple] = {}
    records = []
    for s, alts in cands.items():
        i = pos[s]
        sig_prog, t = inst.signals[i], result.solution.timings[i]
        pick = None
        for states, durs, adj, order in alts:
            carried = _carry(sig_prog, t, (states, durs, adj), order, inst.net.signal_spec(s))
            if carried is None:
                continue
            d, lo, hi = carried
            variant = (states, d, np.asarray(adj, bool), lo, hi)
            trial = build({**chosen, s: variant})
            tt = list(timings)
            tt[i] = SignalTiming(t.signal_id, t.cycle_s, t.offset_s, tuple(int(v) for v in d), t.cap_enforced)
            sol = Solution(tuple(tt))
            if validate(trial, sol):
                continue
            obj = network_objective(trial, to_planset(trial, sol), sol)[0]
            if reporter is not None:
                reporter.stage(f"phase order {t.signal_id} {order}: objective {obj:,.0f}")
            if obj < best_obj * (1.0 - min_gain) and (pick is None or obj < pick[0]):
                pick = (obj, variant, order, tt)
        if pick is not None:
            best_obj, variant, order, timings = pick
            chosen[s] = variant
            records.append({"signal_id": inst.signals[i].signal_id, "green_order": [int(g) for g in order],
                            "objective": round(best_obj, 1)})
    return chosen, records
