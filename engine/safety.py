"""Safety rules of signal timing, as hard checks: one place, used by the optimiser, the harness and the controllers.

A :class:`SignalSpec` describes what one intersection requires of any plan:

* minimum green per signal group (vehicles; pedestrian minimum for crossings) and an optional maximum green;
* yellow after every green of a vehicle group, red-amber before it where the practice uses one (Sweden: 1 s);
* conflicting groups never green together, and an all-red clearance between the end of one group's yellow and the
  start of a conflicting group's green.

:func:`check_plan` checks every rule on the plan as it runs second by second over one cycle (cyclically), computed on
the phases and on per-second bitsets: a few microseconds per plan, so controllers validate every plan and every
transition at run time. ``tests/test_controllers_safety.py`` holds its second-by-second numpy twin. A plan switch is
checked as one cycle of the old plan followed by one of the new (:func:`sequence_bits`); when both plans pass on their
own, :func:`switch_safe` gives the same verdict reading only the seconds around the two joins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.plan import PHASE_KINDS, STATE_CHARS, SignalPlan, check_structure

# state codes used in expanded plans
RED, YELLOW, GREEN_MINOR, GREEN_MAJOR, REDAMBER, OFF = 0, 1, 2, 3, 4, 5
_CODE = {"r": RED, "s": RED, "y": YELLOW, "g": GREEN_MINOR, "G": GREEN_MAJOR, "u": REDAMBER, "o": OFF, "O": OFF}


def encode_state(state: str) -> np.ndarray:
    """State string -> int8 codes (RED, YELLOW, GREEN_MINOR, GREEN_MAJOR, REDAMBER, OFF)."""
    return np.fromiter((_CODE[c] for c in state), dtype=np.int8, count=len(state))


@dataclass(frozen=True)
class SignalSpec:
    """What one traffic light requires of every plan. Arrays have one entry per SUMO link index (signal group).

    min_green_s, max_green_s (0 = none), yellow_s (0 = group needs no yellow, e.g. a pedestrian crossing),
    redamber_s (0 = none required): int arrays, shape (n_links,).
    allred_s: clearance between the end of a group's yellow and a conflicting group's green, s.
    conflicts: bool array (n_links, n_links), symmetric: groups that may never be green together.
    """

    signal_id: str
    min_green_s: np.ndarray
    max_green_s: np.ndarray
    yellow_s: np.ndarray
    redamber_s: np.ndarray
    allred_s: int
    conflicts: np.ndarray
    is_pedestrian: np.ndarray | None = None

    def __post_init__(self) -> None:
        # the arrays are the spec's own and read-only: check_bits keeps what it derives from a spec with the spec
        # (``_spec_rules``), which is only right if nothing can change the arrays afterwards
        for name in ("min_green_s", "max_green_s", "yellow_s", "redamber_s", "conflicts", "is_pedestrian"):
            value = getattr(self, name)
            if value is None or (isinstance(value, np.ndarray) and not value.flags.writeable and value.base is None):
                continue  # already a read-only array of its own (e.g. another spec's, through dataclasses.replace)
            arr = np.array(value)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def n_links(self) -> int:
        return int(self.min_green_s.shape[0])


def expand(plan: SignalPlan) -> np.ndarray:
    """Per-second state codes over one cycle: int8 array (cycle_s, n_links), second 0 = start of phase 0."""
    rows = [np.broadcast_to(encode_state(ph.state), (ph.duration_s, len(ph.state))) for ph in plan.phases]
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, 0), np.int8)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Cyclic runs of True in a 1-D bool array: list of (start, length). An all-True mask is one run of full length."""
    n = mask.shape[0]
    if n == 0 or not mask.any():
        return []
    if mask.all():
        return [(0, n)]
    k0 = int(np.argmin(mask))  # rotate so the array starts on a False: no run wraps around
    m = np.roll(mask, -k0).astype(np.int8)
    d = np.diff(np.concatenate(([0], m, [0])))
    starts = np.flatnonzero(d == 1)
    lengths = np.flatnonzero(d == -1) - starts
    return [(int((a + k0) % n), int(b)) for a, b in zip(starts, lengths, strict=True)]


_GROUPS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}


def _state_groups(state: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Indices of the green, yellow and red-amber groups of a state string; memoised (plans repeat their states)."""
    out = _GROUPS.get(state)
    if out is None:
        out = (tuple(i for i, c in enumerate(state) if c in "Gg"), tuple(i for i, c in enumerate(state) if c == "y"),
               tuple(i for i, c in enumerate(state) if c == "u"))
        if len(_GROUPS) >= 4096:
            _GROUPS.clear()
        _GROUPS[state] = out
    return out


def _trailing_ones(x: int) -> int:
    """Number of consecutive set bits from bit 0 up."""
    return ((x + 1) & ~x).bit_length() - 1


_PAIRS: dict[tuple, tuple[list[int], list[int]]] = {}


def _conflict_pairs(conflicts: np.ndarray) -> tuple[list[int], list[int]]:
    """(i, j) with i < j of the conflicting pairs, row by row; memoised by the matrix's contents."""
    conflicts = np.asarray(conflicts)
    key = (conflicts.shape, conflicts.dtype.str, conflicts.tobytes())
    pairs = _PAIRS.get(key)
    if pairs is None:
        ii, jj = np.nonzero(np.triu(conflicts, 1))
        pairs = (ii.tolist(), jj.tolist())
        if len(_PAIRS) >= 256:
            _PAIRS.clear()
        _PAIRS[key] = pairs
    return pairs


class _SpecRules(NamedTuple):
    """What :func:`check_bits` derives from a spec: per-group limits as Python ints, the conflicting pairs, the
    all-red clearance."""

    min_g: list[int]
    max_g: list[int]
    yel: list[int]
    ra: list[int]
    ii: list[int]
    jj: list[int]
    clearance: int
    yellow_reach: int  # max(1, longest yellow): how far after a green run its check reads, s
    redamber_reach: int  # max(1, longest red-amber): how far before a green run its check reads, s
    foes: list[tuple[int, ...]]  # per group b: the groups a whose clearance before b's green is checked (ii, jj)
    clearance_steps: tuple[int, ...]  # shifts that, applied in turn to a set and OR-ed in, cover 0..clearance
    limits: list[tuple[int, int, int, int]]  # per group: (min green, max green, yellow, red-amber)


def _spec_rules(spec: SignalSpec) -> _SpecRules:
    """The rules of ``spec`` as :func:`check_bits` reads them, derived once per spec object and kept on it (a
    SignalSpec is frozen and its arrays are not changed in place; a process hosting many controllers has one spec each,
    so the memo lives with the spec rather than in a bounded table)."""
    rules = spec.__dict__.get("_check_rules")
    if rules is None:
        min_g, max_g, yel, ra = (np.asarray(x).tolist() for x in (spec.min_green_s, spec.max_green_s, spec.yellow_s,
                                                                  spec.redamber_s))
        ii, jj = _conflict_pairs(spec.conflicts)
        foes = [tuple(a for i, j in zip(ii, jj, strict=True) for a, b in ((i, j), (j, i)) if b == g)
                for g in range(len(min_g))]
        clearance = int(spec.allred_s)
        steps, span = [], 1  # span: the shifts 0 .. span - 1 are covered
        while span <= clearance:
            steps.append(min(span, clearance + 1 - span))
            span += steps[-1]
        rules = _SpecRules(min_g, max_g, yel, ra, ii, jj, clearance, max([1, *yel]), max([1, *ra]), foes,
                           tuple(steps), list(zip(min_g, max_g, yel, ra, strict=True)))
        object.__setattr__(spec, "_check_rules", rules)  # not a field: not compared, not in repr, not copied by replace
    return rules


class PlanBits(NamedTuple):
    """A plan's seconds as bitsets (bit t = second t of its cycle), one int per signal group: green (G or g), yellow
    and red-amber; ``starts``: the start second of each phase (empty for a joined sequence)."""

    cycle_s: int
    starts: tuple[int, ...]
    green: tuple[int, ...]
    yellow: tuple[int, ...]
    redamber: tuple[int, ...]


def plan_bits(plan: SignalPlan) -> PlanBits:
    """The bitsets of a structurally valid plan (:func:`engine.plan.check_structure`)."""
    n = plan.n_links
    green, yellow, redamber = [0] * n, [0] * n, [0] * n
    starts = []
    cycle = 0
    for ph in plan.phases:
        d = ph.duration_s
        starts.append(cycle)
        bits = ((1 << d) - 1) << cycle
        cycle += d
        _set_bits(green, yellow, redamber, _GROUPS.get(ph.state) or _state_groups(ph.state), bits)
    return PlanBits(cycle, tuple(starts), tuple(green), tuple(yellow), tuple(redamber))


def _set_bits(green: list[int], yellow: list[int], redamber: list[int], groups, bits: int) -> None:
    """Add a phase's seconds ``bits`` to its green, yellow and red-amber signal groups (``groups``: their indices)."""
    gs, ys, us = groups
    for i in gs:
        green[i] |= bits
    for i in ys:
        yellow[i] |= bits
    for i in us:
        redamber[i] |= bits


#: state strings made only of valid signal characters -> (length, green, yellow and red-amber groups)
_CLEAN_STATES: dict[str, tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}


def clean_plan_bits(plan: SignalPlan, n_links: int) -> PlanBits | None:
    """:func:`plan_bits` of ``plan`` if :func:`engine.plan.check_structure` finds nothing wrong with it and it has
    ``n_links`` signal groups, else None (the caller then runs those checks for their messages).

    One pass over the phases instead of the structure check's and then the bitsets' (a controller runs this on every
    plan it receives): the same conditions as ``check_structure``, each state string's characters checked once per
    process (memoised with its groups); ``tests/test_safety.py`` compares the two on valid and broken plans."""
    phases = plan.phases
    if not phases:
        return None
    green, yellow, redamber = [0] * n_links, [0] * n_links, [0] * n_links
    starts = []
    cycle = 0
    for ph in phases:
        groups = _CLEAN_STATES.get(ph.state)
        if groups is None:
            state = ph.state
            if not STATE_CHARS.issuperset(state):
                return None
            groups = (len(state), *_state_groups(state))
            if len(_CLEAN_STATES) >= 4096:
                _CLEAN_STATES.clear()
            _CLEAN_STATES[state] = groups
        n, gs, ys, us = groups
        d = ph.duration_s
        if n != n_links or d <= 0 or ph.kind not in PHASE_KINDS or (ph.max_s and ph.min_s > ph.max_s):
            return None
        starts.append(cycle)
        bits = ((1 << d) - 1) << cycle
        cycle += d
        for i in gs:  # _set_bits, inline (a call per phase)
            green[i] |= bits
        for i in ys:
            yellow[i] |= bits
        for i in us:
            redamber[i] |= bits
    if cycle != plan.cycle_s or not 0 <= plan.offset_s < max(plan.cycle_s, 1) or plan.valid_to_s <= plan.valid_from_s:
        return None
    return PlanBits(cycle, tuple(starts), tuple(green), tuple(yellow), tuple(redamber))


def sequence_bits(first: PlanBits, first_from: int, second: PlanBits, second_from: int) -> PlanBits:
    """Bitsets of one cycle of ``first`` starting at its phase ``first_from`` followed by one cycle of ``second``
    starting at its phase ``second_from``, read as one cyclic plan (what a plan switch shows around the switch). The
    result has no phase starts (``starts == ()``): it is checked, not joined again."""
    c1, c2 = first.cycle_s, second.cycle_s
    r1, r2 = first.starts[first_from], second.starts[second_from]
    m1, m2 = (1 << c1) - 1, (1 << c2) - 1

    def join(x: int, y: int) -> int:
        return ((((x >> r1) | (x << (c1 - r1))) & m1) |
                ((((y >> r2) | (y << (c2 - r2))) & m2) << c1))

    return PlanBits(c1 + c2, (), tuple(map(join, first.green, second.green)),
                    tuple(map(join, first.yellow, second.yellow)), tuple(map(join, first.redamber, second.redamber)))


def check_plan(plan: SignalPlan, spec: SignalSpec) -> list[str]:
    """Every violated safety rule of ``plan`` under ``spec`` as a readable message; an empty list means safe.

    The rules are those of the plan expanded second by second over one cycle (cyclically, see :func:`expand`); each
    group's green, yellow and red-amber seconds are held as bitsets in Python ints (bit t = second t of the cycle; a
    doubled set ``x | x << cycle`` reads runs across the cycle's end), which makes a check take microseconds:
    controllers run it on every plan and every transition."""
    return check_plan_bits(plan, spec)[0]


def check_plan_bits(plan: SignalPlan, spec: SignalSpec) -> tuple[list[str], PlanBits | None]:
    """:func:`check_plan`'s messages and the plan's bitsets (None when it is not structurally valid for ``spec``)."""
    bits = clean_plan_bits(plan, spec.n_links)
    if bits is not None:
        return check_bits(plan.signal_id, bits, spec), bits
    errs = check_structure(plan)  # something is wrong: the messages come from the checks themselves
    if errs:
        return errs, None
    if plan.n_links != spec.n_links:
        return [f"{plan.signal_id}: plan has {plan.n_links} signal groups, the intersection has {spec.n_links}"], None
    bits = plan_bits(plan)
    return check_bits(plan.signal_id, bits, spec), bits


def check_bits(signal_id: str, bits: PlanBits, spec: SignalSpec) -> list[str]:
    """The timing rules of :func:`check_plan` on a structurally valid plan's bitsets (e.g. :func:`sequence_bits`)."""
    errs: list[str] = []
    sid = signal_id
    n = spec.n_links
    cycle = bits.cycle_s
    green, yellow, redamber = bits.green, bits.yellow, bits.redamber
    full = (1 << cycle) - 1
    rules = _spec_rules(spec)
    min_g, max_g, yel, ra, ii, jj, clearance = rules[:7]
    clearance_steps, limits = rules.clearance_steps, rules.limits
    # groups that passed, by what the checks below read: a group showing the same seconds under the same limits (links
    # of one signal head, common in SUMO programs) passes too
    passed = set()
    for i in range(n):
        g = green[i]
        if not g or g == full:
            continue
        key = (g, yellow[i], redamber[i], limits[i])
        if key in passed:
            continue
        n_errs = len(errs)
        k0 = ((g + 1) & ~g).bit_length() - 1  # the first red second: runs are listed from there on, as _runs does
        rise = g & ~(((g << 1) | (g >> (cycle - 1))) & full)  # bit t: green at t, not at t - 1
        rise = ((rise >> k0) | (rise << (cycle - k0))) & full  # rotated: bit 0 is second k0
        gg = g | (g << cycle)
        while rise:
            low = rise & -rise
            rise ^= low
            start = (low.bit_length() - 1 + k0) % cycle
            x = gg >> start
            length = ((x + 1) & ~x).bit_length() - 1  # _trailing_ones, inline (hot)
            if min_g[i] and length < min_g[i]:
                errs.append(f"{sid}: group {i} green {length} s at t={start} is shorter than its minimum "
                            f"{int(min_g[i])} s")
            if max_g[i] and length > max_g[i]:
                errs.append(f"{sid}: group {i} green {length} s at t={start} exceeds its maximum {int(max_g[i])} s")
            if yel[i]:
                end = (start + length) % cycle
                x = (yellow[i] | (yellow[i] << cycle)) >> end
                y = ((x + 1) & ~x).bit_length() - 1
                if y < yel[i]:
                    errs.append(f"{sid}: group {i} yellow after green at t={end} is {y} s, needs {int(yel[i])} s")
            if ra[i]:
                top = start + cycle  # seconds start-1, start-2, ... are bits top-1, top-2, ... of the doubled set
                below = ~(redamber[i] | (redamber[i] << cycle)) & ((1 << top) - 1)
                u = top - below.bit_length()
                if u < ra[i]:
                    errs.append(f"{sid}: group {i} red-amber before green at t={start} is {u} s, needs "
                                f"{int(ra[i])} s")
        if len(errs) == n_errs:
            passed.add(key)
    if not ii:
        return errs
    # recent[a]: seconds at most `clearance` after a second where group a is green or yellow (cyclically), built by
    # doubling the covered shifts (0, 0..1, 0..3, ...) rather than one shift at a time
    recent = []
    recent_of: dict[int, int] = {}  # groups green or yellow in the same seconds share their recent set
    for g, y in zip(green, yellow, strict=True):
        a = g | y
        r = recent_of.get(a)
        if r is None:
            r = a
            for step in clearance_steps:
                k = step % cycle
                r |= ((r << k) | (r >> (cycle - k))) & full
            recent_of[a] = r
        recent.append(r)
    for i, j in zip(ii, jj, strict=True):
        gi, gj = green[i], green[j]
        both = gi & gj
        if both:
            t = (both & -both).bit_length() - 1
            errs.append(f"{sid}: conflicting groups {i} and {j} are green together at t={t}")
            continue
        bad = gj & recent[i]
        if bad:
            errs.append(f"{sid}: group {j} turns green at t={(bad & -bad).bit_length() - 1} less than {clearance} "
                        f"s of all-red after conflicting group {i}")
        bad = gi & recent[j]
        if bad:
            errs.append(f"{sid}: group {i} turns green at t={(bad & -bad).bit_length() - 1} less than {clearance} "
                        f"s of all-red after conflicting group {j}")
    return errs


def switch_safe(first: PlanBits, first_from: int, second: PlanBits, second_from: int, spec: SignalSpec) -> bool:
    """``not check_bits(sid, sequence_bits(first, first_from, second, second_from), spec)`` for two plans that each
    pass :func:`check_bits` under ``spec`` on their own (the caller's promise, not checked here), reading only what
    crosses one of the sequence's two joins (the end of ``first``'s cycle into ``second``, and back).

    Why that is the same verdict: every rule reads a contiguous stretch of seconds (a green run with the second before
    and after it, the yellow after it, the red-amber before it; a green second with the ``allred_s`` seconds before it;
    one second for green-together). A stretch that lies inside one plan's part of the sequence reads what it reads in
    that plan run cyclically on its own, which passes. So only green runs whose stretch crosses a join (the runs with a
    green second in ``[join - yellow_reach, join + redamber_reach)``) and green seconds less than ``allred_s`` after a
    join can break a rule; those are checked here with :func:`check_bits`'s own formulas. Cycles too short for that
    argument (either cycle not longer than the clearance or than the two reaches together) get the full check."""
    rules = _spec_rules(spec)
    min_g, max_g, yel, ra, ii, jj, clearance, reach_y, reach_ra, foes, clearance_steps = rules[:11]
    c1, c2 = first.cycle_s, second.cycle_s
    if min(c1, c2) <= max(clearance, reach_y + reach_ra):
        return not check_bits("", sequence_bits(first, first_from, second, second_from), spec)
    r1, r2 = first.starts[first_from], second.starts[second_from]
    m1, m2 = (1 << c1) - 1, (1 << c2) - 1
    cycle = c1 + c2
    full = (1 << cycle) - 1

    def joined(x: int, y: int) -> int:  # as sequence_bits joins one group's bitsets
        return ((((x >> r1) | (x << (c1 - r1))) & m1) |
                ((((y >> r2) | (y << (c2 - r2))) & m2) << c1))

    # a run's checks reach across a join iff it has a green second in [join - reach_y, join + reach_ra): in the
    # sequence's seconds, around c1 and around 0 (= cycle); in each plan's own seconds, around its part's start r
    # (where its part meets the other plan's, at the part's start and, one cycle on, at its end)
    w = (1 << (reach_y + reach_ra)) - 1
    window = (w << (c1 - reach_y)) | (((1 << reach_y) - 1) << (cycle - reach_y)) | ((1 << reach_ra) - 1)
    s1, s2 = (r1 - reach_y) % c1, (r2 - reach_y) % c2
    win1, win2 = ((w << s1) | (w >> (c1 - s1))) & m1, ((w << s2) | (w >> (c2 - s2))) & m2
    green1, green2 = first.green, second.green
    passed = set()  # as in check_bits: a group reading the same seconds under the same limits as one that passed
    for i, (x, y) in enumerate(zip(green1, green2, strict=True)):
        if not (x & win1 or y & win2):
            continue
        key = (x, y, first.yellow[i], second.yellow[i], first.redamber[i], second.redamber[i], rules.limits[i])
        if key in passed:
            continue
        passed.add(key)  # (a group that fails ends the check)
        g = (((x >> r1) | (x << (c1 - r1))) & m1) | ((((y >> r2) | (y << (c2 - r2))) & m2) << c1)  # joined(x, y)
        if g == full:
            continue
        gg = g | (g << cycle)
        starts = g & ~(((g << 1) | (g >> (cycle - 1))) & full) & window  # runs starting in the window
        for a in (c1 - reach_y, cycle - reach_y):  # and the runs the window begins in
            if g >> a & 1:
                top = a + cycle
                starts |= 1 << ((~gg & ((1 << top) - 1)).bit_length() % cycle)
        yy = rr = 0
        if yel[i]:
            yy = joined(first.yellow[i], second.yellow[i])
            yy |= yy << cycle
        if ra[i]:
            rr = joined(first.redamber[i], second.redamber[i])
            rr |= rr << cycle
        while starts:
            low = starts & -starts
            starts ^= low
            start = low.bit_length() - 1
            run = gg >> start
            length = ((run + 1) & ~run).bit_length() - 1  # _trailing_ones, inline (hot)
            if (min_g[i] and length < min_g[i]) or (max_g[i] and length > max_g[i]):
                return False
            if yel[i]:
                after = yy >> ((start + length) % cycle)
                if ((after + 1) & ~after).bit_length() - 1 < yel[i]:
                    return False
            if ra[i]:
                top = start + cycle
                if top - (~rr & ((1 << top) - 1)).bit_length() < ra[i]:
                    return False
    if clearance <= 0 or not ii:
        return True  # green together, and green right after a conflicting group, read one second: inside a plan
    # a green second whose clearance reaches back across a join: the first `clearance` seconds of either part
    w = (1 << clearance) - 1
    after1, after2 = ((w << r1) | (w >> (c1 - r1))) & m1, ((w << r2) | (w >> (c2 - r2))) & m2
    yellow1, yellow2 = first.yellow, second.yellow
    for b, foes_b in enumerate(foes):
        if not foes_b or not (green1[b] & after1 or green2[b] & after2):
            continue
        gb = joined(green1[b] & after1, green2[b] & after2)
        # check_bits asks whether a foe is active within `clearance` seconds before one of these green seconds (its
        # active set spread forward over 0..clearance seconds, met with gb); the same seconds are met by gb spread
        # backward over 0..clearance seconds and the foe's active set, which is spread once per b, not once per foe
        back = gb
        for step in clearance_steps:
            k = step % cycle
            back |= ((back >> k) | (back << (cycle - k))) & full
        for a in foes_b:
            if back & joined(green1[a] | yellow1[a], green2[a] | yellow2[a]):
                return False
    return True


class JoinEdges(NamedTuple):
    """What a plan switch's checks read of one part of the sequence (:func:`sequence_bits`: a plan's cycle begun at one
    of its phases), per signal group, in that part's own seconds (0 = the part's first second, ``cycle_s`` of them):

    ``lead_green`` / ``trail_green``: green seconds at its start / at its end; ``lead_yellow``: yellow seconds at its
    start; ``trail_redamber``: red-amber seconds at its end; ``yellow_tail``: the yellow seconds at its end when a green
    run ends right before them (else -1); ``redamber_head``: the red-amber seconds at its start when a green run begins
    right after them (else -1); ``idle_tail``: seconds at its end since the group was last green or yellow;
    ``first_green``: its first green second (``cycle_s`` if none). Made once per plan and phase (:func:`join_edges`):
    a controller keeps those of its running and fallback plans, so a switch check reads a few integers per group."""

    cycle_s: int
    lead_green: tuple[int, ...]
    trail_green: tuple[int, ...]
    lead_yellow: tuple[int, ...]
    trail_redamber: tuple[int, ...]
    yellow_tail: tuple[int, ...]
    redamber_head: tuple[int, ...]
    idle_tail: tuple[int, ...]
    first_green: tuple[int, ...]


def join_edges(bits: PlanBits, from_phase: int) -> JoinEdges | None:
    """The :class:`JoinEdges` of ``bits`` begun at phase ``from_phase``; None when a group is green, yellow or red-amber
    through the whole cycle (a run or a reading that would cross both joins: :func:`edges_safe` does not cover it)."""
    c = bits.cycle_s
    r = bits.starts[from_phase]
    m = (1 << c) - 1
    back = c - r
    rows = []
    seen: dict[tuple[int, int, int], tuple[int, ...]] = {}  # groups of one signal head show the same seconds
    for gyu in zip(bits.green, bits.yellow, bits.redamber, strict=True):
        row = seen.get(gyu)
        if row is not None:
            rows.append(row)
            continue
        g, y, u = gyu
        if g == m or y == m or u == m:
            return None
        g = ((g >> r) | (g << back)) & m
        y = ((y >> r) | (y << back)) & m
        u = ((u >> r) | (u << back)) & m
        lead_g = ((g + 1) & ~g).bit_length() - 1
        trail_g = c - (~g & m).bit_length()
        ty = c - (~y & m).bit_length()  # yellow seconds at the end
        hu = ((u + 1) & ~u).bit_length() - 1  # red-amber seconds at the start
        row = seen[gyu] = (lead_g, trail_g, ((y + 1) & ~y).bit_length() - 1, c - (~u & m).bit_length(),
                           ty if not trail_g and ty and g >> (c - 1 - ty) & 1 else -1,
                           hu if not lead_g and hu and g >> hu & 1 else -1,
                           c - (g | y).bit_length(), (g & -g).bit_length() - 1 if g else c)
        rows.append(row)
    return JoinEdges(c, *zip(*rows, strict=True)) if rows else None


def edges_safe(first: JoinEdges, second: JoinEdges, spec: SignalSpec) -> bool | None:
    """:func:`switch_safe` of the sequence ``first`` then ``second`` (each :func:`join_edges` of a plan that passes
    :func:`check_bits` on its own: the caller's promise) from their edges alone; None where the argument needs cycles
    longer than the clearance and than the two reaches together (:func:`switch_safe` then checks it).

    At a join X -> Y (X's end meets Y's start, and Y's end meets X's start), per group: a green run across it is as long
    as X's green tail and Y's green head together (minimum and maximum green); a run that ends at the join is followed
    by Y's yellow head, one that begins there is preceded by X's red-amber tail; a green run right before X's yellow
    tail gets Y's yellow head added to its yellow, one right after Y's red-amber head gets X's red-amber tail added to
    its red-amber; a green second of Y within the clearance of its start is that many seconds, plus one, plus the
    foe's idle tail in X after the foe's last green or yellow second. Everything else a rule reads lies inside one part
    and reads what it reads in that plan on its own, which passes (the argument of :func:`switch_safe`)."""
    rules = _spec_rules(spec)
    min_g, max_g, yel, ra, clearance, reach_y, reach_ra, foes = (rules.min_g, rules.max_g, rules.yel, rules.ra,
                                                                 rules.clearance, rules.yellow_reach,
                                                                 rules.redamber_reach, rules.foes)
    if min(first.cycle_s, second.cycle_s) <= max(clearance, reach_y + reach_ra):
        return None
    for x, y in ((first, second), (second, first)):
        x_tg, y_lg, y_ly, x_tu, x_yt, y_uh = x.trail_green, y.lead_green, y.lead_yellow, x.trail_redamber, \
            x.yellow_tail, y.redamber_head
        for i in range(len(min_g)):
            t, h = x_tg[i], y_lg[i]
            if t or h:
                length = t + h
                if (min_g[i] and length < min_g[i]) or (max_g[i] and length > max_g[i]):
                    return False
                if not h:
                    if yel[i] and y_ly[i] < yel[i]:
                        return False
                elif not t:
                    if ra[i] and x_tu[i] < ra[i]:
                        return False
            if yel[i] and x_yt[i] > 0 and x_yt[i] + y_ly[i] < yel[i]:
                return False
            if ra[i] and y_uh[i] > 0 and y_uh[i] + x_tu[i] < ra[i]:
                return False
        if clearance > 0:
            y_first, x_idle = y.first_green, x.idle_tail
            for b, foes_b in enumerate(foes):
                s = y_first[b]
                if s < clearance:
                    for a in foes_b:
                        if s + x_idle[a] + 1 <= clearance:
                            return False
    return True


def derive_spec(
    signal_id: str,
    phases: list[tuple[str, float]],
    foes: np.ndarray,
    *,
    min_green_s: int = 5,
    ped_min_green_s: int = 5,
    max_green_s: int = 0,
    is_pedestrian: np.ndarray | None = None,
) -> SignalSpec:
    """The spec a scenario's own program implies, for checking plans that replace it.

    ``phases``: (state, duration_s) of the base program; ``foes``: bool (n, n) of links whose paths conflict (from the
    net). Groups the base program shows green together are compatible whatever ``foes`` says (permissive turns).
    Yellow, red-amber and all-red are the shortest the base program uses (so it satisfies its own spec); minimum
    green is the given default, lowered to the base program's shortest green for that group.
    """
    n = len(phases[0][0])
    ped = np.zeros(n, bool) if is_pedestrian is None else np.asarray(is_pedestrian, bool)
    codes = np.stack([encode_state(s) for s, _ in phases])  # (n_phases, n)
    dur = np.array([max(1, int(round(d))) for _, d in phases])
    secs = np.repeat(codes, dur, axis=0)
    cycle = secs.shape[0]
    green = (secs == GREEN_MAJOR) | (secs == GREEN_MINOR)
    together = (green.T.astype(np.int32) @ green.astype(np.int32)) > 0
    conflicts = np.asarray(foes, bool) & ~together
    conflicts = conflicts | conflicts.T
    np.fill_diagonal(conflicts, False)

    min_g = np.zeros(n, np.int32)
    yel = np.zeros(n, np.int32)
    ra = np.zeros(n, np.int32)
    for i in range(n):
        runs = [r for r in _runs(green[:, i]) if r[1] < cycle]
        if not runs:
            continue
        default = ped_min_green_s if ped[i] else min_green_s
        min_g[i] = min(default, min(length for _, length in runs))
        ys, us = [], []
        for start, length in runs:
            end = (start + length) % cycle
            y = 0
            while y < cycle and secs[(end + y) % cycle, i] == YELLOW:
                y += 1
            ys.append(y)
            u = 0
            while u < cycle and secs[(start - 1 - u) % cycle, i] == REDAMBER:
                u += 1
            us.append(u)
        yel[i] = min(ys)
        ra[i] = min(us)
    active = green | (secs == YELLOW)
    allred = None
    ii, jj = np.nonzero(np.triu(conflicts, 1))
    for i, j in zip(ii.tolist(), jj.tolist(), strict=True):
        for a, b in ((i, j), (j, i)):
            for start, _ in _runs(green[:, b]):
                gap = 0
                while gap < cycle and not active[(start - 1 - gap) % cycle, a]:
                    gap += 1
                allred = gap if allred is None else min(allred, gap)
    return SignalSpec(
        signal_id=signal_id,
        min_green_s=min_g,
        max_green_s=np.full(n, int(max_green_s), np.int32),
        yellow_s=yel,
        redamber_s=ra,
        allred_s=int(allred or 0),
        conflicts=conflicts,
        is_pedestrian=ped,
    )
