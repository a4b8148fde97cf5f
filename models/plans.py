"""Fixed-time programs -> model inputs: effective green windows (cyclic model), per-second levels (queue model).

A *template* fixes the phase structure of every signal (state strings) and precomputes, per movement, its *runs*:
maximal cyclic sequences of phases with the same positive discharge level. Candidate timings (phase durations and
offsets, K at a time) then become windows with numpy alone, so an optimiser that varies durations and offsets never
loops over phases in Python.

Discharge level of a movement in a phase: the mean over its links (lanes) of the level of the link's state char:
``G`` 1; ``g`` 1 when the movement is never protected (its saturation flow already carries the permissive factor),
else ``permissive_level``; ``s`` (stop, then go) ``stop_go_level``; ``O`` (signal off, priority) 1; ``o`` (off,
blinking: yield) ``permissive_level``; ``r``, ``y``, ``u`` 0.

Effective green: a run that follows a phase with level 0 starts ``startup_lost_s`` late; one followed by level 0 ends
``end_gain_s`` late (vehicles keep crossing into the yellow). A movement at one positive level all cycle is green all
period. Time: SUMO's offset semantics, verified against SUMO 1.28: a program with cycle C and offset o is at program
time (t - o) mod C at simulation time t, so its phase 0 starts at t = o (mod C).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.network import Network

__all__ = ["LevelParams", "Template", "build_template", "link_level", "windows_to_levels"]


@dataclass(frozen=True)
class LevelParams:
    startup_lost_s: float = 2.0
    end_gain_s: float = 2.0
    permissive_level: float = 0.5
    stop_go_level: float = 0.3


def link_level(char: str, protected: bool, p: LevelParams) -> float:
    if char == "G" or char == "O":
        return 1.0
    if char == "g":
        return p.permissive_level if protected else 1.0
    if char == "o":
        return p.permissive_level
    if char == "s":
        return p.stop_go_level
    return 0.0


@dataclass(frozen=True, eq=False)
class Template:
    """Phase structure of all signals and the green runs of every movement.

    phase_ptr: int64 (n_signals+1,): phases of signal s are phase_ptr[s]:phase_ptr[s+1] (global phase index).
    states: the state strings of those phases.
    run_mov, run_signal, run_slot: int64 (R,): movement, its signal, index of the run within the movement.
    run_first, run_last: int64 (R,): global phase index of the run's first and last phase (last < first: wraps).
    run_level: float64 (R,). run_lost, run_gain: float64 (R,): start-up lost time / end gain applied, s.
    run_full: bool (R,): the run covers the whole cycle (green all period).
    max_runs: largest number of runs of one movement.
    """

    n_movements: int
    phase_ptr: np.ndarray
    states: tuple[str, ...]
    run_mov: np.ndarray
    run_signal: np.ndarray
    run_slot: np.ndarray
    run_first: np.ndarray
    run_last: np.ndarray
    run_level: np.ndarray
    run_lost: np.ndarray
    run_gain: np.ndarray
    run_full: np.ndarray
    max_runs: int

    @property
    def n_signals(self) -> int:
        return int(self.phase_ptr.shape[0] - 1)

    @property
    def n_phases(self) -> int:
        return int(self.phase_ptr[-1])

    def windows(
        self, durations_s: np.ndarray, offsets_s: np.ndarray, max_period_s: int = 3600
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Effective green windows of K candidate timings.

        durations_s: float (K, n_phases) phase durations (global phase order); offsets_s: float (K, n_signals).
        Returns (period_s int64 (K,), win_start_s, win_len_s, win_level float64 (K, M, W), scaled bool (K,)).
        The period is the least common multiple of the (whole-second) cycles when it is at most ``max_period_s``;
        otherwise it is the longest cycle and the shorter programs are stretched to it (``scaled`` is True).
        """
        d = np.atleast_2d(np.asarray(durations_s, np.float64))
        o = np.atleast_2d(np.asarray(offsets_s, np.float64))
        k = d.shape[0]
        if d.shape != (k, self.n_phases) or o.shape != (k, self.n_signals):
            raise ValueError(f"durations must be (K, {self.n_phases}) and offsets (K, {self.n_signals})")
        if np.any(d <= 0):
            raise ValueError("phase durations must be positive")
        ptr = self.phase_ptr
        csum = np.concatenate([np.zeros((k, 1)), np.cumsum(d, axis=1)], axis=1)
        cycle = csum[:, ptr[1:]] - csum[:, ptr[:-1]]  # (K, n_signals)
        start_in_prog = csum[:, :-1] - csum[:, ptr[:-1]][:, np.repeat(np.arange(self.n_signals), np.diff(ptr))]
        cyc_int = np.rint(cycle).astype(np.int64)
        exact = np.all(np.abs(cycle - cyc_int) < 1e-9, axis=1) & np.all(cyc_int > 0, axis=1)
        period = np.empty(k, np.int64)
        scaled = np.zeros(k, bool)
        for i in range(k):
            lcm = math.lcm(*cyc_int[i].tolist()) if exact[i] else max_period_s + 1
            if lcm <= max_period_s:
                period[i] = lcm
            else:
                period[i] = max(1, int(math.ceil(cycle[i].max() - 1e-9)))
                scaled[i] = bool(np.any(np.abs(cycle[i] - period[i]) > 1e-9))
        # stretch factor of each signal's program to fill whole repetitions of the period
        reps = np.where(scaled[:, None], 1, np.maximum(1, np.rint(period[:, None] / cycle)).astype(np.int64))
        stretch = period[:, None] / (reps * cycle)  # 1 unless scaled
        max_reps = int(reps.max()) if k else 1
        w = max(1, self.max_runs * max_reps)
        n_mov = self.n_movements
        win_start = np.zeros((k, n_mov, w))
        win_len = np.zeros((k, n_mov, w))
        win_level = np.zeros((k, n_mov, w))
        if self.run_mov.size == 0:
            return period, win_start, win_len, win_level, scaled
        sig = self.run_signal
        cyc_r = cycle[:, sig] * stretch[:, sig]  # (K, R) stretched cycle
        st = self.run_first
        la = self.run_last
        t0 = start_in_prog[:, st] * stretch[:, sig] + self.run_lost
        t1 = (start_in_prog[:, la] + d[:, la]) * stretch[:, sig] + self.run_gain
        t1 = np.where(la < st, t1 + cyc_r, t1)
        length = np.maximum(t1 - t0, 0.0)
        length = np.where(self.run_full[None, :], period[:, None].astype(np.float64), length)
        start_sim = np.mod(t0 + o[:, sig], cyc_r)
        for r in range(max_reps):
            s_r = np.mod(start_sim + r * cyc_r, period[:, None])
            valid = r < reps[:, sig]
            if r > 0:
                valid &= ~self.run_full[None, :]
            slot = self.run_slot * max_reps + r
            kk, rr = np.nonzero(valid)
            win_start[kk, self.run_mov[rr], slot[rr]] = s_r[kk, rr]
            win_len[kk, self.run_mov[rr], slot[rr]] = length[kk, rr]
            win_level[kk, self.run_mov[rr], slot[rr]] = self.run_level[rr]
        return period, win_start, win_len, win_level, scaled


def build_template(net: Network, states: Sequence[Sequence[str]] | None = None, params: LevelParams = LevelParams()):
    """Template of the given per-signal phase state strings (default: the network's active programs)."""
    if states is None:
        states = [[net.phase_states[p] for p in net.phases_of(s)] for s in range(net.n_signals)]
    if len(states) != net.n_signals:
        raise ValueError(f"need the phase states of all {net.n_signals} signals")
    phase_ptr = np.zeros(net.n_signals + 1, np.int64)
    flat: list[str] = []
    runs: dict[str, list] = {k: [] for k in ("mov", "sig", "slot", "first", "last", "level", "lost", "gain", "full")}
    max_runs = 0
    for s in range(net.n_signals):
        sts = list(states[s])
        n_links = int(net.signal_link_ptr[s + 1] - net.signal_link_ptr[s])
        for st in sts:
            if len(st) != n_links:
                raise ValueError(f"signal {net.signal_ids[s]}: state {st!r} has {len(st)} links, expected {n_links}")
        if not sts:
            raise ValueError(f"signal {net.signal_ids[s]} has no phases")
        base_phase = len(flat)
        flat += sts
        phase_ptr[s + 1] = len(flat)
        base_link = int(net.signal_link_ptr[s])
        n_ph = len(sts)
        for m in net.movements_of(s):
            links = net.mov_link[net.mov_link_ptr[m]:net.mov_link_ptr[m + 1]] - base_link
            prot = bool(net.mov_protected[m])
            lev = [float(np.mean([link_level(st[li], prot, params) for li in links])) if len(links) else 0.0
                   for st in sts]
            found = _runs(lev)
            max_runs = max(max_runs, len(found))
            for slot, (i0, i1, full) in enumerate(found):
                runs["mov"].append(int(m))
                runs["sig"].append(s)
                runs["slot"].append(slot)
                runs["first"].append(base_phase + i0)
                runs["last"].append(base_phase + i1)
                runs["level"].append(lev[i0])
                runs["full"].append(full)
                runs["lost"].append(0.0 if full or lev[(i0 - 1) % n_ph] > 0 else params.startup_lost_s)
                runs["gain"].append(0.0 if full or lev[(i1 + 1) % n_ph] > 0 else params.end_gain_s)
    i64 = np.int64
    return Template(
        n_movements=net.n_movements, phase_ptr=phase_ptr, states=tuple(flat),
        run_mov=np.array(runs["mov"], i64), run_signal=np.array(runs["sig"], i64),
        run_slot=np.array(runs["slot"], i64), run_first=np.array(runs["first"], i64),
        run_last=np.array(runs["last"], i64), run_level=np.array(runs["level"], np.float64),
        run_lost=np.array(runs["lost"], np.float64), run_gain=np.array(runs["gain"], np.float64),
        run_full=np.array(runs["full"], bool), max_runs=max_runs,
    )


def _runs(levels: list[float]) -> list[tuple[int, int, bool]]:
    """Cyclic runs of equal positive level: (first phase, last phase, covers the whole cycle)."""
    n = len(levels)
    if all(v > 0 for v in levels) and len(set(levels)) == 1:
        return [(0, n - 1, True)]
    out = []
    for i in range(n):
        v = levels[i]
        if v > 0 and levels[i - 1] != v:  # a run starts where the level changes to v
            j = i
            while levels[(j + 1) % n] == v:
                j = (j + 1) % n
            out.append((i, j, False))
    return out


def windows_to_levels(period_s: int, win_start_s: np.ndarray, win_len_s: np.ndarray, win_level: np.ndarray,
                      shift_s: float = 0.0) -> np.ndarray:
    """Per-second discharge levels (P, M) of one candidate's windows (M, W): row i is simulation second
    ``shift_s + i`` (mod P); each second gets the level times the part of it the window covers."""
    p = int(period_s)
    n_mov, w = win_start_s.shape
    out = np.zeros((p, n_mov))
    t = (np.arange(p) + shift_s)[:, None]  # second start in simulation time
    for j in range(w):
        a = win_start_s[:, j][None, :]
        ln = win_len_s[:, j][None, :]
        full = ln >= p
        cover = np.zeros((p, n_mov))
        for shift in (-p, 0, p):
            lo = np.maximum(np.mod(t, p), a + shift)
            hi = np.minimum(np.mod(t, p) + 1, a + ln + shift)
            cover += np.maximum(hi - lo, 0.0)
        cover = np.where(full, 1.0, np.minimum(cover, 1.0))
        out += cover * win_level[:, j][None, :]
    return out
