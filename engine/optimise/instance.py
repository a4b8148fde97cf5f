"""The optimisation instance: what may change, what must hold, and the data the costs come from.

Built once from the compiled network and demand (:func:`build_instance`); the CP-SAT models, the local search and
:func:`engine.optimise.solution.validate` all read the same instance and nothing else.

Per signal (:class:`SignalInstance`), in the order of the signal's active program:

* *fixed* phases keep their program duration: every transition phase (any ``y`` or ``u`` in the state: yellow and
  red-amber are never stretched or cut), every all-red phase, and green phases the program fixes (``minDur ==
  maxDur`` where the program declares ``minDur``/``maxDur`` on some of its green phases);
* *adjustable* green phases get integer durations in ``[lo_s, hi_s]``: the program's ``minDur``/``maxDur`` where it
  declares them, else 1 s up to the cycle maximum; a pin (``--pin SIGNAL:PHASE=SECONDS``) sets both bounds;
* the safety rules of :mod:`engine.safety` become linear constraints over sums of consecutive phase durations
  (:class:`SumConstraint`): every green run of a signal group lasts at least the group's minimum green (vehicle or
  pedestrian) and at most its maximum; between the last second a group is active (green or yellow) and the first
  green second of a conflicting group lie at least ``allred_s`` seconds;
* the degree-of-saturation cap: every movement with demand gets capacity-green ``coef @ d + const`` (level-weighted
  seconds of discharge per cycle: the models' effective green) of at least ``q C / (s x_max)``. It is hard where a
  signal can meet it (see :mod:`engine.optimise.model`); ``x_cap_met`` in the solution says where it holds.

Signals are grouped for coordination (:class:`Group`): signals linked by demand (a movement of one feeds a movement
of the other) within ``coord_travel_max_s`` of free-flow travel share one cycle. Each group's common cycle must lie
in every member's feasible cycle range; an impossible request raises a :class:`GronvagError` naming the signal and
the clashing constraints (:mod:`engine.optimise.explain`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.errors import GronvagError

# ------------------------------------------------------------------------------------------- stop cost default

# What a stop costs beyond its delay, from first principles (all values are editable assumptions):
#   extra fuel of one stop-and-go from 50 km/h for a 1300 kg car: kinetic energy 0.5 m v^2 = 125 kJ, at 25 % engine
#   efficiency 0.50 MJ of petrol, 32 MJ/l -> 0.016 l; CO2 2.31 kg/l -> 0.036 kg.
#   Fuel resource cost 12 SEK/l (pump price without taxes, which are transfers); CO2 7 SEK/kg (Swedish appraisal
#   value, ASEK); value of travel time 120 SEK per vehicle hour (1.2 occupants at 100 SEK/h).
STOP_FUEL_L = 0.016
STOP_CO2_KG = 0.036
FUEL_SEK_PER_L = 12.0
CO2_SEK_PER_KG = 7.0
TIME_SEK_PER_VEH_H = 120.0


def default_stop_cost_s() -> float:
    """Seconds of vehicle delay that cost what one stop's extra fuel and CO2 cost (about 13 s)."""
    sek = STOP_FUEL_L * FUEL_SEK_PER_L + STOP_CO2_KG * CO2_SEK_PER_KG
    return round(sek / (TIME_SEK_PER_VEH_H / 3600.0), 1)


DEFAULT_STOP_COST_S = default_stop_cost_s()


@dataclass(frozen=True)
class Pin:
    """A phase duration the user fixes: ``--pin SIGNAL:PHASE=SECONDS`` (PHASE: 0-based index in the program)."""

    signal_id: str
    phase: int
    seconds: int

    @classmethod
    def parse(cls, text: str) -> Pin:
        try:
            sig, rest = text.rsplit(":", 1)
            ph, sec = rest.split("=", 1)
            return cls(sig.strip(), int(ph), int(sec))
        except ValueError:
            raise GronvagError(f"bad --pin {text!r}: use SIGNAL:PHASE=SECONDS, e.g. J1:0=30") from None


@dataclass(frozen=True)
class OptimiseOptions:
    """Everything the CLI can set. Times in seconds."""

    time_limit_s: float = 30.0
    seed: int = 1
    workers: int = 2
    stop_cost_s: float = DEFAULT_STOP_COST_S
    cycle_min_s: int = 40
    cycle_max_s: int = 120
    max_dos: float = 0.90
    signals: tuple[str, ...] | None = None
    pins: tuple[Pin, ...] = ()
    program_id: str = "gronvag-opt"
    coord_travel_max_s: float = 120.0
    search: bool = True  # polish with the local search on the full cyclic model
    search_rounds: int = 400  # local-search rounds at most (a deterministic stop; the time limit is a cap)
    shared_lanes_by_demand: bool = True  # engine.optimise.calibrate (needs the net file)
    max_cycle_candidates: int = 41  # cycles the CP-SAT split model chooses from (fewer on large groups)
    # objective weights (engine.optimise.evaluation): a bus's delay and stops count bus_weight times (1: off);
    # pedestrian delay at signalised crossings counts ped_weight times (0: off), ped_flow_h pedestrians/h per
    # crossing (None: the scenario's walks per crossing, else evaluation.DEFAULT_PED_FLOW_H)
    bus_weight: float = 1.0
    ped_weight: float = 0.0
    ped_flow_h: float | None = None

    def check(self) -> None:
        if self.time_limit_s <= 0:
            raise GronvagError(f"--time-limit must be positive, got {self.time_limit_s:g}")
        if self.workers < 1:
            raise GronvagError(f"--workers must be at least 1, got {self.workers}")
        if self.stop_cost_s < 0:
            raise GronvagError(f"--stop-cost must not be negative, got {self.stop_cost_s:g}")
        if not 1 <= self.cycle_min_s <= self.cycle_max_s:
            raise GronvagError(f"cycle range {self.cycle_min_s}-{self.cycle_max_s} s is empty "
                               "(--cycle-min must be at least 1 and not above --cycle-max)")
        if self.cycle_max_s > 600:
            raise GronvagError(f"--cycle-max {self.cycle_max_s} s is above 600 s")
        if not 0.1 <= self.max_dos <= 2.0:
            raise GronvagError(f"--max-dos must lie in [0.1, 2], got {self.max_dos:g}")
        for flag, v in (("--bus-weight", self.bus_weight), ("--ped-weight", self.ped_weight),
                        ("--ped-flow", self.ped_flow_h)):
            if v is not None and not (np.isfinite(v) and v >= 0):
                raise GronvagError(f"{flag} must be a finite number >= 0, got {v:g}")


# ------------------------------------------------------------------------------------------------ structures


@dataclass(frozen=True)
class SumConstraint:
    """lo <= sum of the durations of ``phases`` (local indices) <= hi (hi = 0: no upper bound). ``why``: for people."""

    phases: tuple[int, ...]
    lo: int
    hi: int
    why: str


@dataclass(frozen=True, eq=False)
class SignalInstance:
    """One optimised signal. Arrays have one entry per phase of its program (local phase index) unless noted.

    base_s, lo_s, hi_s: int64 durations now and bounds (fixed phases: lo = hi = base, or the pin).
    adjustable: bool, the phase duration is a decision. pinned: {phase: seconds}.
    movements: int64 (n_mov,) global movement indices. mov_coef: float64 (n_mov, n_phases), mov_const: float64
    (n_mov,): capacity-green of each movement = mov_coef @ d + mov_const, s (level-weighted effective green).
    mov_flow_veh_h, mov_sat_veh_h: float64 (n_mov,) demand and saturation flow.
    cycle_lo_s, cycle_hi_s: the cycles this signal can run alone within the options' range.
    """

    index: int
    signal_id: str
    states: tuple[str, ...]
    kinds: tuple[str, ...]
    base_s: np.ndarray
    lo_s: np.ndarray
    hi_s: np.ndarray
    adjustable: np.ndarray
    pinned: dict[int, int]
    sums: tuple[SumConstraint, ...]
    base_offset_s: int
    base_cycle_s: int
    movements: np.ndarray
    mov_coef: np.ndarray
    mov_const: np.ndarray
    mov_flow_veh_h: np.ndarray
    mov_sat_veh_h: np.ndarray
    cycle_lo_s: int = 0
    cycle_hi_s: int = 0
    sum_matrix: np.ndarray = field(default=None, repr=False)  # int8 (n_sums, n_phases)
    sum_lo: np.ndarray = field(default=None, repr=False)
    sum_hi: np.ndarray = field(default=None, repr=False)
    weights: object = field(default=None, repr=False)  # evaluation.SignalWeights (None: unweighted objective)

    @property
    def n_phases(self) -> int:
        return len(self.states)

    @property
    def fixed_s(self) -> int:
        """Seconds of the cycle taken by fixed phases."""
        return int(self.base_s[~self.adjustable].sum())

    def cap_need_s(self, cycle_s: float, max_dos: float) -> np.ndarray:
        """Capacity-green each movement needs for X <= max_dos at this cycle, s (0 where there is no demand)."""
        need = self.mov_flow_veh_h * cycle_s / (np.maximum(self.mov_sat_veh_h, 1e-9) * max_dos)
        return np.where(self.mov_flow_veh_h > 0, need, 0.0)

    def capacity_green_s(self, d: np.ndarray) -> np.ndarray:
        """Capacity-green of every movement for durations d (..., n_phases) -> (..., n_mov)."""
        return np.asarray(d, np.float64) @ self.mov_coef.T + self.mov_const

    def dos(self, d: np.ndarray) -> np.ndarray:
        """Closed-form degree of saturation of every movement for durations d (n_phases,) (uniform arrivals)."""
        cycle = float(np.sum(d))
        cap = self.mov_sat_veh_h * np.maximum(self.capacity_green_s(d), 1e-9) / cycle
        return np.where(self.mov_flow_veh_h > 0, self.mov_flow_veh_h / cap, 0.0)

    def violations(self, d: np.ndarray, cap_dos: float | None = None) -> list[str]:
        """Constraints of this instance that durations d break (empty: feasible). cap_dos: also the X cap."""
        d = np.asarray(d, np.int64)
        sid = self.signal_id
        out = []
        if d.shape != (self.n_phases,):
            return [f"{sid}: {d.shape[0]} phase durations, the program has {self.n_phases} phases"]
        for p in range(self.n_phases):
            if not self.lo_s[p] <= d[p] <= self.hi_s[p]:
                what = "pinned to" if p in self.pinned else ("fixed at" if not self.adjustable[p] else "bounded by")
                rng = f"{self.lo_s[p]} s" if self.lo_s[p] == self.hi_s[p] else f"[{self.lo_s[p]}, {self.hi_s[p]}] s"
                out.append(f"{sid}: phase {p} lasts {d[p]} s, {what} {rng}")
        for c in self.sums:
            s = int(d[list(c.phases)].sum())
            if s < c.lo or (c.hi and s > c.hi):
                out.append(f"{sid}: {c.why}: {s} s")
        if cap_dos is not None:
            have = self.capacity_green_s(d)
            need = self.cap_need_s(float(d.sum()), cap_dos)
            bad = np.flatnonzero(have < need - 1e-6)
            for i in bad[:3]:
                out.append(f"{sid}: movement {int(self.movements[i])} has capacity-green {have[i]:.1f} s, needs "
                           f"{need[i]:.1f} s for X <= {cap_dos:g}")
        return out

    def feasible(self, d: np.ndarray, cap_dos: float | None = None) -> np.ndarray:
        """Vectorised check of durations d (K, n_phases) -> bool (K,): bounds, sums and (optionally) the X cap."""
        d = np.atleast_2d(np.asarray(d, np.int64))
        ok = np.all((d >= self.lo_s) & (d <= self.hi_s), axis=1)
        if self.sum_matrix.shape[0]:
            s = d @ self.sum_matrix.T.astype(np.int64)
            ok &= np.all(s >= self.sum_lo, axis=1) & np.all((self.sum_hi == 0) | (s <= self.sum_hi), axis=1)
        if cap_dos is not None and self.movements.size:
            have = d @ self.mov_coef.T + self.mov_const
            need = (self.mov_flow_veh_h / (np.maximum(self.mov_sat_veh_h, 1e-9) * cap_dos))[None, :] * d.sum(1)[:, None]
            ok &= np.all((self.mov_flow_veh_h <= 0)[None, :] | (have >= need - 1e-6), axis=1)
        return ok


@dataclass(frozen=True)
class Group:
    """Signals (indices into Instance.signals) sharing one cycle, and the cycles all of them can run."""

    members: tuple[int, ...]
    cycle_lo_s: int
    cycle_hi_s: int
    base_cycle_s: int | None  # the members' common cycle now (None: they differ)


@dataclass(frozen=True, eq=False)
class Instance:
    net: object  # models.network.Network
    demand: object  # models.demand.Demand
    ctx: object  # models.evaluate.Context
    options: OptimiseOptions
    signals: tuple[SignalInstance, ...]
    groups: tuple[Group, ...]
    scenario: str = ""
    states: tuple[tuple[str, ...], ...] | None = None  # phase states of every network signal (None: the programs)
    skipped: tuple[str, ...] = ()  # signals whose structure leaves out green phases (engine.optimise.structure)

    @property
    def by_id(self) -> dict[str, int]:
        return {s.signal_id: i for i, s in enumerate(self.signals)}

    @property
    def template(self):
        """The models' template of the phase structure the instance optimises."""
        return self.ctx.template(self.states)


# -------------------------------------------------------------------------------------------------- building


def _runs(mask: list[bool]) -> list[list[int]]:
    """Cyclic runs of True over phases: lists of consecutive phase indices (empty when always True or never)."""
    n = len(mask)
    if all(mask) or not any(mask):
        return []
    out = []
    for p in range(n):
        if mask[p] and not mask[p - 1]:
            run = [p]
            q = (p + 1) % n
            while mask[q]:
                run.append(q)
                q = (q + 1) % n
            out.append(run)
    return out


def safety_sums(states: tuple[str, ...], spec) -> list[SumConstraint]:
    """The safety rules of ``spec`` over this phase structure as sums of consecutive phase durations."""
    n_links = spec.n_links
    green = [[st[i] in "Gg" for st in states] for i in range(n_links)]
    active = [[st[i] in "Ggy" for st in states] for i in range(n_links)]
    ped = spec.is_pedestrian if spec.is_pedestrian is not None else np.zeros(n_links, bool)
    found: dict[tuple[int, ...], list] = {}

    def add(phases: tuple[int, ...], lo: int, hi: int, why: str) -> None:
        cur = found.get(phases)
        if cur is None:
            found[phases] = [lo, hi, why]
            return
        if lo > cur[0]:
            cur[0], cur[2] = lo, why
        if hi and (not cur[1] or hi < cur[1]):
            cur[1] = hi

    for i in range(n_links):
        kind = "pedestrian" if ped[i] else "vehicle"
        for run in _runs(green[i]):
            lo = int(spec.min_green_s[i])
            hi = int(spec.max_green_s[i])
            if lo > 0 or hi > 0:
                rng = f"minimum green {lo} s" + (f", maximum {hi} s" if hi else "")
                add(tuple(sorted(run)), lo, hi, f"signal group {i} ({kind}) {rng} over phases {sorted(run)}")
    clearance = int(spec.allred_s)
    if clearance > 0:
        n = len(states)
        ii, jj = np.nonzero(spec.conflicts)
        for a, b in zip(ii.tolist(), jj.tolist(), strict=True):
            for run in _runs(green[b]):
                gap = []
                q = (run[0] - 1) % n
                while not active[a][q] and len(gap) < n:
                    gap.append(q)
                    q = (q - 1) % n
                if len(gap) >= n:
                    continue  # a is never active
                add(tuple(sorted(gap)), clearance, 0,
                    f"all-red {clearance} s between group {a} and conflicting group {b} over phases {sorted(gap)}")
    return [SumConstraint(k, v[0], v[1], v[2]) for k, v in found.items()]


def _structure(net, s: int, opts: OptimiseOptions, pins: dict[int, int], variant=None):
    from models.network import PHASE_GREEN

    if variant is not None:  # a structure variant: adjustable greens, fixed transitions (bounds given or free)
        states, base, adjustable = variant[:3]
        lo = np.where(adjustable, 1, base).astype(np.int64)
        hi = np.where(adjustable, opts.cycle_max_s, base).astype(np.int64)
        if len(variant) >= 5 and variant[3] is not None:
            lo, hi = np.asarray(variant[3], np.int64), np.asarray(variant[4], np.int64)
        from engine.plan import phase_kind

        kinds = tuple("green" if a else phase_kind(st) for st, a in zip(states, adjustable, strict=True))
        return list(range(len(states))), tuple(states), np.asarray(base, np.int64), np.asarray(adjustable, bool), \
            lo, hi, kinds
    phases = list(net.phases_of(s))
    states = tuple(net.phase_states[p] for p in phases)
    base = np.array([max(1, int(round(net.phase_duration_s[p]))) for p in phases], np.int64)
    is_green = [net.phase_kind[p] == PHASE_GREEN and not any(c in "yu" for c in states[k])
                for k, p in enumerate(phases)]
    pmin = np.array([net.phase_min_s[p] for p in phases])
    pmax = np.array([net.phase_max_s[p] for p in phases])
    declared = any(is_green[k] and pmax[k] > pmin[k] for k in range(len(phases)))
    adjustable = np.zeros(len(phases), bool)
    lo = base.copy()
    hi = base.copy()
    for k in range(len(phases)):
        if not is_green[k]:
            continue
        if declared:
            if pmax[k] > pmin[k]:
                adjustable[k] = True
                lo[k] = max(1, int(np.ceil(pmin[k] - 1e-9)))
                hi[k] = max(lo[k], int(np.floor(pmax[k] + 1e-9)))
        else:
            adjustable[k] = True
            lo[k] = 1
            hi[k] = opts.cycle_max_s
    kinds = tuple(("green" if is_green[k] else
                   {1: "yellow", 2: "allred", 3: "redamber"}.get(int(net.phase_kind[p]), "transition"))
                  for k, p in enumerate(phases))
    return phases, states, base, adjustable, lo, hi, kinds


def _movement_capacity(net, tpl, s: int, phases: list[int], movements: np.ndarray):
    """mov_coef (n_mov, n_phases), mov_const (n_mov,) from the models' template runs of signal s."""
    n_ph = len(phases)
    p0 = int(tpl.phase_ptr[s])
    local = {int(m): i for i, m in enumerate(movements)}
    coef = np.zeros((len(movements), n_ph))
    const = np.zeros(len(movements))
    for r in np.flatnonzero(tpl.run_signal == s):
        i = local[int(tpl.run_mov[r])]
        lev = float(tpl.run_level[r])
        if tpl.run_full[r]:
            coef[i, :] += lev  # green all cycle: capacity-green = level * cycle
            continue
        a = int(tpl.run_first[r]) - p0
        b = int(tpl.run_last[r]) - p0
        k = a
        while True:
            coef[i, k] += lev
            if k == b:
                break
            k = (k + 1) % n_ph
        const[i] += lev * (float(tpl.run_gain[r]) - float(tpl.run_lost[r]))
    return coef, const


def _coordination_groups(net, demand, chosen: list[int], opts: OptimiseOptions) -> list[list[int]]:
    """Connected components of the chosen signals linked by demand within coord_travel_max_s (indices into chosen)."""
    pos = {s: i for i, s in enumerate(chosen)}
    parent = list(range(len(chosen)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    mov_signal = np.asarray(net.mov_signal)
    ptr = np.asarray(demand.feed_ptr)
    for m in range(net.n_movements):
        a = pos.get(int(mov_signal[m]))
        if a is None:
            continue
        for f in range(int(ptr[m]), int(ptr[m + 1])):
            b = pos.get(int(mov_signal[int(demand.feed_mov[f])]))
            if b is None or b == a or demand.feed_share[f] <= 0:
                continue
            if demand.feed_travel_s[f] <= opts.coord_travel_max_s:
                parent[find(a)] = find(b)
    comps: dict[int, list[int]] = {}
    for i in range(len(chosen)):
        comps.setdefault(find(i), []).append(i)
    return sorted(comps.values(), key=lambda c: c[0])


def optimiser_model_params():
    """The model constants the optimiser uses unless given others (--params / --calibration): the models' defaults
    (models.evaluate.ModelParams: HCM's analysis periods, the giving-way constants chosen on calibration plans)."""
    from models.evaluate import ModelParams

    return ModelParams()


def build_instance(net, demand, options: OptimiseOptions, scenario: str = "", ctx=None,
                   net_file=None, phase_skip: bool = False, model_params=None, structures=None) -> Instance:
    """The instance of (net, demand, options); raises GronvagError when the request cannot be met.

    ``net_file``: the SUMO net the network was compiled from: given (a real scenario) and with
    ``shared_lanes_by_demand``, movements sharing a lane get saturation flows in proportion to their demand
    (:mod:`engine.optimise.calibrate`, from the lanes the Network carries).
    ``phase_skip``: signals whose programs hold green phases they do not need get a reduced structure
    (:mod:`engine.optimise.structure`; never at signals with pins).
    ``model_params``: the models' constants (``models.evaluate.ModelParams``, e.g. from ``gronvag calibrate``);
    default the models' defaults. Ignored when ``ctx`` is given.
    ``structures``: {network signal index: (states, durations, adjustable)} phase structures to use instead of the
    program's (e.g. another phase order, :func:`engine.optimise.structure.order_structures`); they take precedence
    over ``phase_skip``'s.
    """
    from dataclasses import replace

    from engine.optimise.evaluation import signal_weights
    from engine.optimise.explain import group_cycle_range, signal_cycle_range
    from models.evaluate import prepare

    options.check()
    if net_file is not None and options.shared_lanes_by_demand and ctx is None:
        from engine.optimise.calibrate import calibrated_network

        net = calibrated_network(net, demand)
        if model_params is not None:  # the lanes are split already: the models keep these saturation flows
            model_params = replace(model_params, lane_split="compiled")
    model_params = model_params or optimiser_model_params()
    ctx = ctx or prepare(net, demand, model_params)
    if options.signals:
        unknown = [s for s in options.signals if s not in net.signal_index]
        if unknown:
            raise GronvagError(f"--signals: no traffic light {unknown[0]!r} in the scenario")
        chosen = sorted({net.signal_index[s] for s in options.signals})
    else:
        chosen = list(range(net.n_signals))
    if not chosen:
        raise GronvagError("the scenario has no traffic lights to optimise")
    pins: dict[int, dict[int, int]] = {}
    for pin in options.pins:
        s = net.signal_index.get(pin.signal_id)
        if s is None:
            raise GronvagError(f"--pin {pin.signal_id}:{pin.phase}={pin.seconds}: no such traffic light")
        if s not in chosen:
            raise GronvagError(f"--pin {pin.signal_id}:{pin.phase}={pin.seconds}: the signal is not among --signals")
        n_ph = len(net.phases_of(s))
        if not 0 <= pin.phase < n_ph:
            raise GronvagError(f"--pin {pin.signal_id}:{pin.phase}={pin.seconds}: the program has phases 0-{n_ph - 1}")
        if pin.seconds < 1:
            raise GronvagError(f"--pin {pin.signal_id}:{pin.phase}={pin.seconds}: a phase lasts at least 1 s")
        if pins.setdefault(s, {}).get(pin.phase, pin.seconds) != pin.seconds:
            raise GronvagError(f"--pin {pin.signal_id}:{pin.phase}: pinned twice to different durations")
        pins[s][pin.phase] = pin.seconds
    variants = {}
    if phase_skip:
        from engine.optimise.structure import skip_structures

        variants = skip_structures(net, [s for s in chosen if s not in pins])
    variants = {**variants, **{s: v for s, v in (structures or {}).items() if s in chosen and s not in pins}}
    all_states = None
    if variants:
        all_states = tuple(variants[s][0] if s in variants else tuple(net.phase_states[p] for p in net.phases_of(s))
                           for s in range(net.n_signals))
    tpl = ctx.template(all_states)
    flow = demand.mean_arrival_veh_h()
    sat = np.asarray(net.mov_sat_flow_veh_s) * 3600.0
    signals = []
    for s in chosen:
        phases, states, base, adjustable, lo, hi, kinds = _structure(net, s, options, pins.get(s, {}),
                                                                     variants.get(s))
        spec = net.signal_spec(s)
        sums = safety_sums(states, spec)
        movements = np.asarray(net.movements_of(s), np.int64)
        coef, const = _movement_capacity(net, tpl, s, phases, movements)
        mat = np.zeros((len(sums), len(states)), np.int8)
        for k, c in enumerate(sums):
            mat[k, list(c.phases)] = 1
        sig = SignalInstance(
            index=s, signal_id=net.signal_ids[s], states=states, kinds=kinds, base_s=base, lo_s=lo, hi_s=hi,
            adjustable=adjustable, pinned=dict(pins.get(s, {})), sums=tuple(sums),
            base_offset_s=int(round(float(net.signal_offset_s[s]))) % max(int(base.sum()), 1),
            base_cycle_s=int(base.sum()), movements=movements, mov_coef=coef, mov_const=const,
            mov_flow_veh_h=np.asarray(flow[movements], np.float64), mov_sat_veh_h=np.asarray(sat[movements]),
            sum_matrix=mat, sum_lo=np.array([c.lo for c in sums], np.int64),
            sum_hi=np.array([c.hi for c in sums], np.int64),
            weights=signal_weights(net, demand, s, states, movements, options),
        )
        signals.append(sig)
    ranges = signal_cycle_range(signals, options)
    signals = [_with_range(sig, r) for sig, r in zip(signals, ranges, strict=True)]
    groups = []
    for comp in _coordination_groups(net, demand, chosen, options):
        lo_c, hi_c = group_cycle_range([signals[i] for i in comp], options)
        cycles = {signals[i].base_cycle_s for i in comp}
        groups.append(Group(tuple(comp), lo_c, hi_c, cycles.pop() if len(cycles) == 1 else None))
    return Instance(net, demand, ctx, options, tuple(signals), tuple(groups), scenario, all_states,
                    tuple(net.signal_ids[s] for s in sorted(variants)))


def _with_range(sig: SignalInstance, rng: tuple[int, int]) -> SignalInstance:
    from dataclasses import replace

    lo_s = sig.lo_s.copy()
    hi_s = sig.hi_s.copy()
    for p, v in sig.pinned.items():
        lo_s[p] = hi_s[p] = v
    return replace(sig, lo_s=lo_s, hi_s=hi_s, cycle_lo_s=rng[0], cycle_hi_s=rng[1])
