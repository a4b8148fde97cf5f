"""Turn a controller's wish ("green for phase p now") into a legal signal sequence: the one place that does it.

A :class:`Sequencer` drives one signal second by second. It holds the running green phase until its minimum green
has run, then, when a different green phase is wanted, inserts yellow for the groups that lose green, an all-red
clearance and red-amber for the groups that gain green (each as long as the signal's safety spec requires), and
only then the new green. A running clearance or minimum green is never shortened: wishes that arrive during them
are remembered and served afterwards. Maximum green forces a change to the next wanted (or next cyclic) phase.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.safety import GREEN_MAJOR, GREEN_MINOR, SignalSpec


def _is_green(c: str) -> bool:
    return c in "Gg"


@dataclass
class _Step:
    state: str
    remaining_s: float
    green_phase: int  # index into the green phases, or -1 during a transition


class Sequencer:
    """One signal's legal state machine over its green phases (state strings of the signal's program)."""

    def __init__(self, spec: SignalSpec, green_states: list[str], max_green_s: float | list[float] | None = None,
                 start_phase: int = 0, min_green_floor_s: float = 0.0):
        if not green_states:
            raise ValueError(f"{spec.signal_id}: no green phases")
        self.spec = spec
        self.greens = list(green_states)
        # maximum green per green phase (0 or None: none)
        if max_green_s is None or isinstance(max_green_s, int | float):
            self.max_green_s = [float(max_green_s or 0.0)] * len(self.greens)
        else:
            self.max_green_s = [float(x or 0.0) for x in max_green_s]
        self.current = start_phase
        self.elapsed_s = 0.0  # time in the current green
        self.queue: list[_Step] = []  # pending transition steps (then the target green)
        self.target = start_phase
        self.state = self.greens[start_phase]
        self.min_green_s = [max(self._min_green(s), min_green_floor_s) for s in self.greens]
        self.switches = 0

    def _min_green(self, state: str) -> float:
        ks = [i for i, c in enumerate(state) if _is_green(c)]
        return float(max((self.spec.min_green_s[i] for i in ks), default=0))

    def transition(self, frm: str, to: str) -> list[_Step]:
        """Yellow, all-red and red-amber steps between two green states (empty if nothing has to stop)."""
        n = len(frm)
        stopping = [i for i in range(n) if _is_green(frm[i]) and not _is_green(to[i])]
        starting = [i for i in range(n) if _is_green(to[i]) and not _is_green(frm[i])]
        steps: list[_Step] = []
        kept = [i for i in range(n) if _is_green(frm[i]) and _is_green(to[i])]
        if stopping:
            y = max((int(self.spec.yellow_s[i]) for i in stopping), default=0)
            y = max(y, 3 if any(not self._ped(i) for i in stopping) else 0)
            ys = "".join(self._yellow_char(i, frm, stopping, kept) for i in range(n))
            if y > 0:
                steps.append(_Step(ys, float(y), -1))
        u = max((int(self.spec.redamber_s[i]) for i in starting), default=0)
        if stopping:
            # the clearance runs from the end of yellow to the next green; red-amber is part of it
            ar = int(self.spec.allred_s) - u
            if ar > 0 and starting:
                steps.append(_Step("".join(frm[i] if i in kept else "r" for i in range(n)), float(ar), -1))
        if starting:
            if u > 0:
                steps.append(_Step("".join("u" if i in starting else (frm[i] if i in kept else "r")
                                           for i in range(n)), float(u), -1))
        return steps

    def _yellow_char(self, i: int, frm: str, stopping: list[int], kept: list[int]) -> str:
        if i in stopping:
            return "r" if self._ped(i) else "y"
        return frm[i] if i in kept else "r"

    def _ped(self, i: int) -> bool:
        return self.spec.is_pedestrian is not None and bool(self.spec.is_pedestrian[i])

    @property
    def in_transition(self) -> bool:
        return bool(self.queue)

    def can_switch(self) -> bool:
        return not self.queue and self.elapsed_s >= self.min_green_s[self.current]

    def request(self, phase: int) -> None:
        """Wish for green phase ``phase`` (index into the green phases) as soon as it is legal."""
        if not 0 <= phase < len(self.greens):
            raise ValueError(f"{self.spec.signal_id}: no green phase {phase}")
        self.target = phase

    def step(self, dt: float = 1.0) -> str:
        """``dt`` seconds have passed showing ``self.state``; returns the state to show during the next ``dt``."""
        if self.queue:
            head = self.queue[0]
            head.remaining_s -= dt
            if head.remaining_s <= 1e-9:
                self.queue.pop(0)
                if not self.queue:
                    self.state = self.greens[self.current]
                else:
                    self.state = self.queue[0].state
            return self.state
        self.elapsed_s += dt
        want = self.target
        mx = self.max_green_s[self.current]
        if mx and self.elapsed_s >= mx and want == self.current:
            want = (self.current + 1) % len(self.greens)
        if want != self.current and self.elapsed_s >= self.min_green_s[self.current]:
            steps = self.transition(self.greens[self.current], self.greens[want])
            self.current = want
            self.target = want
            self.elapsed_s = 0.0
            self.switches += 1
            if steps:
                self.queue = steps
                self.state = steps[0].state
            else:
                self.state = self.greens[want]
        return self.state


def green_phase_states(states: list[str], durations: list[float] | None = None, min_s: float = 5.0) -> list[str]:
    """The green phases of a program: states where some group is green and none is yellow or red-amber (those are
    transitions), in program order, without duplicates.

    With ``durations``, green phases shorter than ``min_s`` (intermediate steps of a transition, such as a brief
    green for a leading turn) are left out, unless that would leave none.
    """
    out: list[str] = []
    for k, s in enumerate(states):
        if durations is not None and durations[k] < min_s:
            continue
        if any(c in "Gg" for c in s) and not any(c in "yu" for c in s) and s not in out:
            out.append(s)
    return out or (green_phase_states(states) if durations is not None else out)


def codes_green(codes: np.ndarray) -> np.ndarray:
    return (codes == GREEN_MAJOR) | (codes == GREEN_MINOR)
