"""Fixed-time signal programs in Swedish practice, and a checker for them.

A program is a cyclic list of *stages* (sets of signal groups that are green together). Between two stages the
groups that end show 3 s yellow, then every signal shows red for 1-2 s (all-red), then the groups that start show
1 s red-amber (SUMO state ``u``) before their green. Green phases carry ``minDur`` (the minimum green, 5-8 s) and
``maxDur``. Pedestrian crossings walk with the stage whose vehicles they do not cross head-on; their walk (green)
ends ``ped_clear_s`` before the vehicles' green so that a pedestrian who stepped out at the last moment has left
the crossing before conflicting traffic gets red-amber. Crossings get the red-amber step too (SUMO pedestrians treat
``u`` as red), so that "every green is preceded by 1 s ``u``" holds for every link index.

Phase 0 of every program is the green of the first stage, so a program's ``offset`` is the time (mod cycle) at which
that stage's green starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ._xml import tag

YELLOW_S = 3
RED_AMBER_S = 1
ALL_RED_RANGE_S = (1, 2)
MIN_GREEN_RANGE_S = (5, 8)
MIN_WALK_RANGE_S = (5, 7)
CYCLE_RANGE_S = (60, 90)
WALK_SPEED_M_S = 1.2  # design walking speed for pedestrian clearance
GREEN = "Gg"


@dataclass(frozen=True)
class Stage:
    """One stage. ``green`` maps vehicle link index -> 'G' (priority) or 'g' (must yield); ``walk`` lists the
    crossing link indices that walk. ``green_s`` is the displayed vehicle green including the pedestrian
    clearance tail ``ped_clear_s``; ``all_red_s`` is the all-red after this stage."""

    name: str
    green: Mapping[int, str]
    walk: tuple[int, ...] = ()
    green_s: int = 20
    ped_clear_s: int = 0
    min_green_s: int = 6
    max_green_s: int = 60
    all_red_s: int = 1


@dataclass(frozen=True)
class Phase:
    duration_s: int
    state: str
    name: str = ""
    min_s: int | None = None
    max_s: int | None = None


@dataclass(frozen=True)
class Program:
    tl_id: str
    offset_s: int
    phases: tuple[Phase, ...] = field(default_factory=tuple)

    @property
    def cycle_s(self) -> int:
        return sum(p.duration_s for p in self.phases)


def ped_clearance_s(crossing_length_m: float, intergreen_s: int) -> int:
    """Seconds the walk must end before the vehicle green ends: crossing time at the design walking speed, less the
    time (yellow + all-red + red-amber) that conflicting traffic still waits after the vehicles' green."""
    need = crossing_length_m / WALK_SPEED_M_S - intergreen_s
    return max(0, int(-(-need // 1)))


def _state(n_links: int, chars: Mapping[int, str]) -> str:
    s = ["r"] * n_links
    for i, c in chars.items():
        s[i] = c
    return "".join(s)


def compose(tl_id: str, stages: Sequence[Stage], n_links: int, offset_s: int) -> Program:
    """The phase list for ``stages`` in cycle order (see module docstring). Raises ValueError on an unsafe or
    non-conforming stage (a link green in two consecutive stages, greens or walks below the minimum)."""
    phases: list[Phase] = []
    for k, st in enumerate(stages):
        nxt = stages[(k + 1) % len(stages)]
        if not MIN_GREEN_RANGE_S[0] <= st.min_green_s <= MIN_GREEN_RANGE_S[1]:
            raise ValueError(f"{tl_id} {st.name}: min green {st.min_green_s} s outside {MIN_GREEN_RANGE_S}")
        if not ALL_RED_RANGE_S[0] <= st.all_red_s <= ALL_RED_RANGE_S[1]:
            raise ValueError(f"{tl_id} {st.name}: all-red {st.all_red_s} s outside {ALL_RED_RANGE_S}")
        overlap = (set(st.green) | set(st.walk)) & (set(nxt.green) | set(nxt.walk))
        if overlap and len(stages) > 1:
            raise ValueError(f"{tl_id}: links {sorted(overlap)} green in {st.name} and {nxt.name}")
        clear = st.ped_clear_s if st.walk else 0
        main_s = st.green_s - clear
        if main_s < st.min_green_s or (st.walk and main_s < MIN_WALK_RANGE_S[0]):
            raise ValueError(f"{tl_id} {st.name}: green {st.green_s} s too short for min green / walk + clearance")
        walk = dict.fromkeys(st.walk, "G")
        phases.append(
            Phase(main_s, _state(n_links, {**st.green, **walk}), f"{st.name} green", st.min_green_s,
                  max(main_s, st.max_green_s - clear))
        )
        if clear:
            phases.append(Phase(clear, _state(n_links, st.green), f"{st.name} pedestrian clearance"))
        phases.append(Phase(YELLOW_S, _state(n_links, dict.fromkeys(st.green, "y")), f"{st.name} yellow"))
        phases.append(Phase(st.all_red_s, "r" * n_links, "all red"))
        starting = dict.fromkeys([*nxt.green, *nxt.walk], "u")
        phases.append(Phase(RED_AMBER_S, _state(n_links, starting), f"{nxt.name} red-amber"))
    return Program(tl_id, offset_s, tuple(phases))


def tl_logic_xml(program: Program) -> str:
    """``<tlLogic type="static">`` element for a .tll.xml file."""
    kids = [
        tag("phase", {"duration": p.duration_s, "state": p.state, "minDur": p.min_s, "maxDur": p.max_s,
                      "name": p.name or None}, indent=2)
        for p in program.phases
    ]
    attrs = {"id": program.tl_id, "type": "static", "programID": "0", "offset": program.offset_s}
    return tag("tlLogic", attrs, kids)


def check_program(
    phases: Sequence[tuple[float, str, float | None, float | None]], crossing_links: Iterable[int] = ()
) -> list[str]:
    """Problems of one program against Swedish practice; empty when it conforms.

    ``phases``: (duration_s, state, minDur_s or None, maxDur_s or None) in cycle order, as read from a net.
    ``crossing_links``: link indices of pedestrian crossings (they go green -> red without yellow).
    """
    problems: list[str] = []
    n = len(phases)
    crossings = set(crossing_links)
    cycle = sum(p[0] for p in phases)
    if not CYCLE_RANGE_S[0] <= cycle <= CYCLE_RANGE_S[1]:
        problems.append(f"cycle {cycle:g} s outside {CYCLE_RANGE_S}")
    n_links = len(phases[0][1])
    for k, (dur, state, min_s, max_s) in enumerate(phases):
        prev_dur, prev, _, _ = phases[k - 1]
        _, nxt, _, _ = phases[(k + 1) % n]
        if "y" in state:
            if dur != YELLOW_S:
                problems.append(f"phase {k}: yellow lasts {dur:g} s, not {YELLOW_S}")
            if set(nxt) != {"r"}:
                problems.append(f"phase {k}: yellow not followed by all-red")
        if set(state) == {"r"} and not ALL_RED_RANGE_S[0] <= dur <= ALL_RED_RANGE_S[1]:
            problems.append(f"phase {k}: all-red lasts {dur:g} s, outside {ALL_RED_RANGE_S}")
        starts = [i for i in range(n_links) if state[i] in GREEN and prev[i] not in GREEN]
        for i in starts:
            if prev[i] != "u" or prev_dur != RED_AMBER_S:
                problems.append(f"phase {k}: link {i} turns green without {RED_AMBER_S} s red-amber")
        vehicle_starts = [i for i in starts if i not in crossings]
        if vehicle_starts:
            if min_s is None or not MIN_GREEN_RANGE_S[0] <= min_s <= MIN_GREEN_RANGE_S[1]:
                problems.append(f"phase {k}: min green {min_s} outside {MIN_GREEN_RANGE_S}")
            elif dur < min_s or (max_s is not None and dur > max_s):
                problems.append(f"phase {k}: duration {dur:g} s outside [minDur, maxDur]")
        if any(i in crossings for i in starts):
            if min_s is None or not MIN_WALK_RANGE_S[0] <= min_s <= MIN_WALK_RANGE_S[1]:
                problems.append(f"phase {k}: pedestrian min walk {min_s} outside {MIN_WALK_RANGE_S}")
        for i in range(n_links):
            if state[i] in GREEN and nxt[i] not in GREEN:
                want = "r" if i in crossings else "y"
                if nxt[i] != want:
                    problems.append(f"phase {k}: link {i} leaves green to {nxt[i]!r}, not {want!r}")
            if i in crossings and state[i] == "y":
                problems.append(f"phase {k}: crossing link {i} shows yellow")
    # every crossing walks at least the minimum, counted over its contiguous green
    for i in crossings:
        run = 0.0
        for k in range(2 * n):
            dur, state, _, _ = phases[k % n]
            if state[i] in GREEN:
                run += dur
            else:
                if 0 < run < MIN_WALK_RANGE_S[0]:
                    problems.append(f"crossing link {i} walks only {run:g} s")
                run = 0.0
    return problems
