"""Phase structure variants: leave out green phases the program does not need (``--phase-skip``), or run the
program's green phases in another order (``--phase-order``: lead or lag of a turning phase).

Some programs cycle through more green phases than their signal groups need (RESCO's grid programs show each of
eight stages, including both split-phase and paired versions of the same movements). Every extra stage costs its
minimum green and its clearances in every cycle. A *cover* is a subset of the program's green phases, kept in the
program's order, in which every signal group that is ever green is still green (and every group that is ever
protected, ``G``, still protected) somewhere. For a signal whose green phases are all adjustable (no green phase
the program fixes), the smallest covers are candidates; between two kept phases the program's own transition is
used when they follow each other in the program, otherwise one is built from the signal's safety spec:

    yellow  (spec yellow, for the groups that lose green; groups green on both sides stay green)
    all-red (spec all-red, when a group that loses green conflicts with one that gains it)
    red-amber (spec red-amber, for the groups that gain green, where the spec asks for one)

A variant is accepted only if ``engine.safety.check_plan`` passes it at the minimum greens and at the current
durations. Signals without a smaller legal cover keep their program.

Phase order (:func:`order_structures`): every other cyclic order of a signal's green phases (3 to 5 of them; with
two there is only one order), with the program's transitions where two greens still follow each other and built
transitions elsewhere, under the same acceptance test. A protected left-turn phase after the through phase (lag)
becomes one before it (lead), and so on. Which order to run is the model's choice (engine.optimise.order).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from engine.plan import Phase, make_plan, phase_kind
from engine.safety import check_plan


def _green(st: str) -> set[int]:
    return {i for i, c in enumerate(st) if c in "Gg"}


def _protected(st: str) -> set[int]:
    return {i for i, c in enumerate(st) if c == "G"}


def _is_main_green(st: str) -> bool:
    return any(c in "Gg" for c in st) and not any(c in "yu" for c in st)


def build_transition(prev: str, nxt: str, spec) -> list[tuple[str, int]]:
    """Transition phases (state, duration) from green state ``prev`` to green state ``nxt`` under ``spec``."""
    n = len(prev)
    gp, gn = _green(prev), _green(nxt)
    losing = gp - gn
    gaining = gn - gp

    def base(i: int) -> str:
        if i in gp and i in gn:
            return prev[i] if prev[i] == nxt[i] else "g"
        return "s" if prev[i] == "s" and nxt[i] == "s" else "r"

    out = []
    yellow = max([int(spec.yellow_s[i]) for i in losing if spec.yellow_s[i] > 0] or [0])
    if yellow:
        st = "".join("y" if (i in losing and spec.yellow_s[i] > 0) else ("r" if i in losing else base(i))
                     for i in range(n))
        out.append((st, yellow))
    clash = any(spec.conflicts[a, b] for a in losing for b in gaining)
    if spec.allred_s > 0 and clash:
        out.append(("".join("r" if i in losing or i in gaining else base(i) for i in range(n)), int(spec.allred_s)))
    ra = max([int(spec.redamber_s[i]) for i in gaining if spec.redamber_s[i] > 0] or [0])
    if ra:
        out.append(("".join("u" if (i in gaining and spec.redamber_s[i] > 0) else ("r" if i in losing else base(i))
                            for i in range(n)), ra))
    return out


def _program_transitions(states, durs, greens):
    """Original transitions between consecutive green phases: {(g_i, g_next): [(state, dur), ...]}."""
    out = {}
    for k, g in enumerate(greens):
        nxt = greens[(k + 1) % len(greens)]
        seq = []
        p = (g + 1) % len(states)
        while p != nxt:
            seq.append((states[p], int(durs[p])))
            p = (p + 1) % len(states)
        out[(g, nxt)] = seq
    return out


def covers(states: tuple[str, ...]) -> list[tuple[int, ...]]:
    """Minimal covers (see module docstring) smaller than the program's set of green phases, smallest first."""
    greens = [p for p, st in enumerate(states) if _is_main_green(st)]
    need_g = set().union(*(_green(states[p]) for p in greens)) if greens else set()
    need_p = set().union(*(_protected(states[p]) for p in greens)) if greens else set()
    found: list[tuple[int, ...]] = []
    for size in range(2, len(greens)):
        for sub in combinations(greens, size):
            if any(set(f) <= set(sub) for f in found):
                continue  # not minimal
            g = set().union(*(_green(states[p]) for p in sub))
            pr = set().union(*(_protected(states[p]) for p in sub))
            if need_g <= g and need_p <= pr:
                found.append(sub)
        if len(found) >= 8:
            break
    return found


def variant_program(states, durs, keep: tuple[int, ...], spec):
    """(states, durations, adjustable flags) of the program with only the green phases ``keep``."""
    greens = [p for p, st in enumerate(states) if _is_main_green(st)]
    orig = _program_transitions(states, durs, greens)
    out_s, out_d, adj = [], [], []
    for k, g in enumerate(keep):
        nxt = keep[(k + 1) % len(keep)]
        out_s.append(states[g])
        out_d.append(int(durs[g]))
        adj.append(True)
        seq = orig.get((g, nxt))
        if seq is None:
            seq = build_transition(states[g], states[nxt], spec)
        for st, d in seq:
            out_s.append(st)
            out_d.append(int(d))
            adj.append(False)
    return tuple(out_s), np.array(out_d, np.int64), np.array(adj, bool)


def _safe(signal_id, states, durs, spec) -> bool:
    phases = [Phase(st, int(max(1, d)), kind=phase_kind(st)) for st, d in zip(states, durs, strict=True)]
    return not check_plan(make_plan(signal_id, phases), spec)


def skip_structures(net, signals: list[int], min_green_s: int = 5) -> dict[int, tuple]:
    """For each signal (network index) with a smaller legal cover: (states, durations, adjustable) of the variant
    with the fewest green phases. Only signals whose green phases are all adjustable (none fixed by the program)."""
    out = {}
    for s in signals:
        ph = list(net.phases_of(s))
        states = tuple(net.phase_states[p] for p in ph)
        durs = np.array([max(1, int(round(net.phase_duration_s[p]))) for p in ph])
        if any(_is_main_green(st) and net.phase_max_s[p] > net.phase_min_s[p] for st, p in zip(states, ph,
                                                                                             strict=True)):
            continue  # the program declares min/max durations: an engineered design, left as it is
        spec = net.signal_spec(s)
        for keep in covers(states):
            v_states, v_durs, v_adj = variant_program(states, durs, keep, spec)
            low = v_durs.copy()
            low[v_adj] = max(min_green_s, int(spec.min_green_s.max()))
            if _safe(net.signal_ids[s], v_states, v_durs, spec) and _safe(net.signal_ids[s], v_states, low, spec):
                out[s] = (v_states, v_durs, v_adj)
                break
    return out


def green_orders(states: tuple[str, ...]) -> list[tuple[int, ...]]:
    """Other cyclic orders of the program's green phases, each made by swapping two greens that follow each other
    (a lagging phase leads, or the other way round); rotations count as the same order. None with fewer than 3
    greens (two greens have one cyclic order)."""
    greens = [p for p, st in enumerate(states) if _is_main_green(st)]
    n = len(greens)
    if n < 3:
        return []

    def norm(seq):
        k = seq.index(greens[0])
        return tuple(seq[k:] + seq[:k])

    out = []
    for i in range(n):
        seq = list(greens)
        j = (i + 1) % n
        seq[i], seq[j] = seq[j], seq[i]
        o = norm(seq)
        if o != tuple(greens) and o not in out:
            out.append(o)
    return out


def order_structures(net, signals: list[int], min_green_s: int = 5) -> dict[int, list[tuple]]:
    """For each signal (network index) with legal other orders of its green phases: [(states, durations,
    adjustable, order), ...] (see the module docstring)."""
    out = {}
    for s in signals:
        ph = list(net.phases_of(s))
        states = tuple(net.phase_states[p] for p in ph)
        durs = np.array([max(1, int(round(net.phase_duration_s[p]))) for p in ph])
        spec = net.signal_spec(s)
        found = []
        for order in green_orders(states):
            v_states, v_durs, v_adj = variant_program(states, durs, order, spec)
            low = v_durs.copy()
            low[v_adj] = max(min_green_s, int(spec.min_green_s.max()))
            if _safe(net.signal_ids[s], v_states, v_durs, spec) and _safe(net.signal_ids[s], v_states, low, spec):
                found.append((v_states, v_durs, v_adj, tuple(order)))
        if found:
            out[s] = found
    return out
