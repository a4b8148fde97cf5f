"""Local search that polishes cycle, splits and offsets of one group jointly against the full cyclic model.

Block moves, evaluated many at a time: the group's signals are coloured so that two signals of one colour are at
least three links apart (no shared neighbour). A candidate applies one random move to *every* signal of a colour
(offset shift, or seconds moved between two adjustable phases, with or without keeping the cycle position of the
later phases); K candidates go to ``models.cyclic.evaluate_batch`` in one call. The change of each moved signal's
neighbourhood cost (its own movements and the movements it feeds) tells which single moves helped; all helpful
moves are composed and the composition is checked on the full model (falling back to the best half, quarter, ...,
single move). Step sizes shrink when a round finds nothing; at the smallest steps the common cycle is moved by a
few seconds (splits stretched, offsets scaled). Every candidate is checked against the instance (bounds, pins,
minimum greens, clearances and the X cap where it holds) before it is evaluated, so the search never leaves the
feasible set, and a plan is only accepted when the full group objective decreases.

Deterministic for a seed when it stops on ``max_rounds`` or convergence rather than on the wall-clock deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp


@dataclass
class SearchState:
    cycle_s: int
    durations: list[np.ndarray]  # per signal, int64 (n_phases,)
    offsets: np.ndarray  # int64 (n_signals,)
    objective: float

    def flat(self) -> np.ndarray:
        return np.concatenate(self.durations)

    def copy(self) -> SearchState:
        return SearchState(self.cycle_s, [d.copy() for d in self.durations], self.offsets.copy(), self.objective)


@dataclass
class SearchStats:
    rounds: int = 0
    evaluations: int = 0
    accepted: int = 0
    cycle_moves: int = 0
    stopped_by: str = ""
    history: list[tuple[float, float]] = field(default_factory=list)  # (elapsed s, objective)


def distance2_colouring(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    """Greedy colouring of the square of the graph: same colour => distance >= 3 (no common neighbour)."""
    adj: list[set[int]] = [set() for _ in range(n)]
    for a, b in edges:
        if a != b:
            adj[a].add(b)
            adj[b].add(a)
    colour = [-1] * n
    for v in sorted(range(n), key=lambda v: (-len(adj[v]), v)):
        near = set(adj[v])
        for u in adj[v]:
            near |= adj[u]
        used = {colour[u] for u in near if colour[u] >= 0}
        c = 0
        while c in used:
            c += 1
        colour[v] = c
    classes: dict[int, list[int]] = {}
    for v in range(n):
        classes.setdefault(colour[v], []).append(v)
    return [classes[c] for c in sorted(classes)]


def stretch(sig, d: np.ndarray, new_cycle: int, cap_dos: float | None) -> np.ndarray | None:
    """Durations of signal ``sig`` for another cycle: the difference spread over the adjustable phases in proportion
    to their green (longer) or their slack above the minimum (shorter); None when no feasible stretch is found."""
    delta = int(new_cycle) - int(d.sum())
    if delta == 0:
        return d.copy()
    adj = np.flatnonzero(sig.adjustable & (sig.lo_s < sig.hi_s))
    if adj.size == 0:
        return None
    room = (sig.hi_s[adj] - d[adj]) if delta > 0 else (d[adj] - sig.lo_s[adj])
    weight = (d[adj].astype(np.float64) if delta > 0 else room.astype(np.float64)) * (room > 0)
    if weight.sum() <= 0:
        return None
    for _attempt in range(2):
        share = abs(delta) * weight / weight.sum()
        step = np.floor(share).astype(np.int64)
        rest = abs(delta) - int(step.sum())
        order = np.argsort(-(share - step), kind="stable")
        step[order[:rest]] += 1
        step = np.minimum(step, room)
        if step.sum() < abs(delta):  # some phases hit a bound: give the rest to those with room left
            left = abs(delta) - int(step.sum())
            for k in np.argsort(-(room - step), kind="stable"):
                add = min(left, int(room[k] - step[k]))
                step[k] += add
                left -= add
            if left:
                return None
        out = d.copy()
        out[adj] += np.sign(delta) * step
        if sig.feasible(out[None], cap_dos)[0]:
            return out
        weight = room.astype(np.float64) * (room > 0)  # second try: by room alone
    return None


class LocalSearch:
    """Search over one group. ``ge``: GroupEvaluator; ``cap(s, cycle)``: the X cap signal s must keep at that cycle
    (None: none)."""

    def __init__(self, ge, cap, cycle_range: tuple[int, int], seed: int = 1,
                 repeats: int = 6, tol: float = 1e-6):
        self.ge = ge
        self.sigs = ge.signals
        self.cap = cap
        self.cycle_lo, self.cycle_hi = cycle_range
        self.rng = np.random.default_rng(seed)
        self.repeats = repeats
        self.tol = tol
        n = len(self.sigs)
        links = ge.links()
        self.classes = distance2_colouring(n, [(a, b) for a, b, _, _ in links])
        rows, cols = [], []
        for s in range(n):
            own = np.flatnonzero(ge.mov_sig == s)
            rows += [s] * own.size
            cols += own.tolist()
        for a, _, _, m in links:
            rows.append(a)
            cols.append(m)
        self.nbhd = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, ge.movements.size))
        self.nbhd.data[:] = 1.0  # duplicates summed above: back to 0/1
        self.stats = SearchStats()

    # ---------------------------------------------------------------------------------------------- moves
    def _adjustable(self, s: int) -> np.ndarray:
        sig = self.sigs[s]
        return np.flatnonzero(sig.adjustable & (sig.lo_s < sig.hi_s))

    def _random_move(self, st: SearchState, s: int, kind: str, step: int):
        """A feasible random move of signal s: (durations, offset) or None."""
        sig = self.sigs[s]
        c = st.cycle_s
        if kind == "offset":
            delta = step if self.rng.random() < 0.5 else -step
            return st.durations[s], int((st.offsets[s] + delta) % c)
        adj = self._adjustable(s)
        if adj.size < 2:
            return None
        for _ in range(6):
            a, b = self.rng.choice(adj, 2, replace=False)
            d = st.durations[s].copy()
            d[a] += step
            d[b] -= step
            if not sig.feasible(d[None], self.cap(s, c))[0]:
                continue
            # half the time keep the timing of the phases after the longer one, else those before it
            off = int(st.offsets[s])
            if self.rng.random() < 0.5:
                off = int((off - step) % c) if a < b else int((off + step) % c)
            return d, off
        return None

    def _evaluate(self, cands: list[SearchState], per_movement: bool):
        D = np.stack([c.flat() for c in cands])
        O = np.stack([c.offsets for c in cands])
        self.stats.evaluations += len(cands)
        return self.ge.score(D, O, per_movement=per_movement)

    # ---------------------------------------------------------------------------------------------- rounds
    def _block_round(self, st: SearchState, base_cost: np.ndarray, kind: str, step: int):
        cands, moved = [], []
        for cls in self.classes:
            for _ in range(self.repeats):
                cand = st.copy()
                mv = {}
                for s in cls:
                    res = self._random_move(st, s, kind, step)
                    if res is None:
                        continue
                    cand.durations[s], cand.offsets[s] = res[0], res[1]
                    mv[s] = res
                if mv:
                    cands.append(cand)
                    moved.append(mv)
        if not cands:
            return None
        sc = self._evaluate(cands, per_movement=True)
        delta = np.asarray(self.nbhd @ (sc.mov_cost - base_cost[None, :]).T).T  # (K, n_signals)
        best: dict[int, tuple[float, tuple]] = {}
        for k, mv in enumerate(moved):
            for s, res in mv.items():
                v = float(delta[k, s])
                if v < -self.tol and (s not in best or v < best[s][0]):
                    best[s] = (v, res)
        # also consider whole candidates that improved the total
        k_best = int(np.argmin(sc.objective))
        whole = cands[k_best] if sc.objective[k_best] < st.objective - self.tol else None
        whole_obj = float(sc.objective[k_best])
        if not best:
            return (whole, whole_obj) if whole is not None else None
        ranked = sorted(best.items(), key=lambda kv: kv[1][0])
        combos = []
        n = len(ranked)
        while n >= 1:
            cand = st.copy()
            for s, (_, res) in ranked[:n]:
                cand.durations[s], cand.offsets[s] = res[0], res[1]
            combos.append(cand)
            n = n // 2 if n > 1 else 0
        sc2 = self._evaluate(combos, per_movement=False)
        j = int(np.argmin(sc2.objective))
        obj, cand = float(sc2.objective[j]), combos[j]
        if whole is not None and whole_obj < obj:
            obj, cand = whole_obj, whole
        if obj < st.objective - self.tol:
            return cand, obj
        return None

    def _cycle_round(self, st: SearchState, steps=(1, 2, 4, 8)):
        cands = []
        for delta in [s * sign for s in steps for sign in (1, -1)]:
            c2 = st.cycle_s + delta
            if not self.cycle_lo <= c2 <= self.cycle_hi:
                continue
            ds = []
            for s, sig in enumerate(self.sigs):
                d2 = stretch(sig, st.durations[s], c2, self.cap(s, c2))
                if d2 is None:
                    break
                ds.append(d2)
            else:
                off = np.rint(st.offsets * (c2 / st.cycle_s)).astype(np.int64) % c2
                cands.append(SearchState(c2, ds, off, np.inf))
        if not cands:
            return None
        sc = self._evaluate(cands, per_movement=False)
        j = int(np.argmin(sc.objective))
        if sc.objective[j] < st.objective - self.tol:
            return cands[j], float(sc.objective[j])
        return None

    def run(self, st: SearchState, deadline: float, max_rounds: int = 400, on_progress=None) -> SearchState:
        t0 = time.perf_counter()
        st = st.copy()
        st.objective = float(self._evaluate([st], per_movement=False).objective[0])
        self.stats.history.append((0.0, st.objective))
        c = st.cycle_s
        offset_steps = sorted({max(1, c // 8), max(1, c // 16), 3, 2, 1}, reverse=True)
        split_steps = [4, 2, 1]
        schedule = [("offset", s) for s in offset_steps] + [("split", s) for s in split_steps]
        level = 0
        failed_since_success = 0
        self.stats.stopped_by = "converged"
        while True:
            if self.stats.rounds >= max_rounds:
                self.stats.stopped_by = "rounds"
                break
            if time.perf_counter() >= deadline:
                self.stats.stopped_by = "time limit"
                break
            self.stats.rounds += 1
            if failed_since_success >= len(schedule):
                res = self._cycle_round(st)
                if res is None:
                    break
                st, st.objective = res[0], res[1]
                self.stats.cycle_moves += 1
                self.stats.accepted += 1
                failed_since_success = 0
                level = 0
            else:
                kind, step = schedule[level % len(schedule)]
                base = self._evaluate([st], per_movement=True)
                res = self._block_round(st, base.mov_cost[0], kind, step)
                if res is None:
                    failed_since_success += 1
                    level += 1
                else:
                    st, st.objective = res[0], res[1]
                    self.stats.accepted += 1
                    failed_since_success = 0
            self.stats.history.append((time.perf_counter() - t0, st.objective))
            if on_progress is not None:
                on_progress(st.objective, self.stats)
        return st
