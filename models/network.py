"""The compiled network: an immutable struct of contiguous numpy arrays (and, on the Python side, id <-> index maps).

Built by ``sim.netcompile.compile_network`` from a SUMO net (+ additional files); consumed by the numba models, the
optimiser and the controllers. Nothing here knows SUMO's file formats.

Index spaces (all int32 indices, 0-based):

* signal ``s``   — a SUMO traffic light (tlLogic id), ``n_signals``
* phase ``p``    — a phase of a signal's active program; phases of signal s are ``signal_phase_ptr[s]:[s+1]``
* link ``l``     — a signal group = one SUMO link index of one signal; links of s are ``signal_link_ptr[s]:[s+1]``,
  and ``l - signal_link_ptr[s]`` is SUMO's linkIndex
* movement ``m`` — (signal, incoming edge, outgoing edge): the unit of demand, saturation flow and delay
* approach ``a`` — (signal, incoming edge): where queues form
* crossing ``c`` — a signalised pedestrian crossing

CSR arrays ``X_ptr`` (length n+1) and ``X_<target>`` hold one-to-many relations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# phase kinds (phase_kind)
PHASE_GREEN, PHASE_YELLOW, PHASE_ALLRED, PHASE_REDAMBER = 0, 1, 2, 3
PHASE_KIND_NAMES = ("green", "yellow", "allred", "redamber")
# turn directions (mov_turn), from SUMO's connection 'dir'
TURN_STRAIGHT, TURN_LEFT, TURN_RIGHT, TURN_UTURN = 0, 1, 2, 3
TURN_NAMES = ("straight", "left", "right", "uturn")


def csr(rows, dtype=np.int32) -> tuple[np.ndarray, np.ndarray]:
    """CSR of a list of index lists: (ptr of length len(rows)+1, flat values), both of ``dtype``."""
    ptr = np.zeros(len(rows) + 1, dtype)
    ptr[1:] = np.cumsum([len(r) for r in rows])
    flat = np.fromiter((v for r in rows for v in r), dtype, count=int(ptr[-1]))
    return ptr, flat


@dataclass(frozen=True, eq=False)
class Network:
    """Struct-of-arrays network. Arrays are read-only; see the module docstring for the index spaces."""

    source: str  # the net file it was compiled from

    # --- signals (n_signals,)
    signal_ids: tuple[str, ...]
    signal_program_ids: tuple[str, ...]  # active program id
    signal_junctions: tuple[tuple[str, ...], ...]  # junction ids controlled by each signal
    signal_offset_s: np.ndarray  # float64: program offset (SUMO semantics)
    signal_cycle_s: np.ndarray  # float64: sum of phase durations of the active program
    signal_phase_ptr: np.ndarray  # int32 (n_signals+1,)
    signal_link_ptr: np.ndarray  # int32 (n_signals+1,)
    signal_allred_s: np.ndarray  # int32: all-red clearance the active program uses between conflicting groups
    signal_is_actuated: np.ndarray  # bool: program type was not 'static'

    # --- phases (n_phases,)
    phase_signal: np.ndarray  # int32
    phase_duration_s: np.ndarray  # float64
    phase_min_s: np.ndarray  # float64 (minDur, = duration when not declared)
    phase_max_s: np.ndarray  # float64 (maxDur, = duration when not declared)
    phase_kind: np.ndarray  # int8: PHASE_GREEN / YELLOW / ALLRED / REDAMBER
    phase_code_ptr: np.ndarray  # int32 (n_phases+1,): state codes of phase p are phase_code[ptr[p]:ptr[p+1]]
    phase_code: np.ndarray  # int8: engine.safety state codes, one per link of the phase's signal
    phase_states: tuple[str, ...]  # the SUMO state strings

    # --- links = signal groups (n_links,)
    link_signal: np.ndarray  # int32
    link_movement: np.ndarray  # int32: movement served (-1: pedestrian crossing or unused index)
    link_crossing: np.ndarray  # int32: crossing served (-1: vehicle link)
    link_min_green_s: np.ndarray  # int32: minimum green (vehicle or pedestrian), from the safety spec
    link_yellow_s: np.ndarray  # int32: yellow required after green (0: none, pedestrians)
    link_redamber_s: np.ndarray  # int32: red-amber required before green (0: none)
    link_foe_ptr: np.ndarray  # int32 (n_links+1,): CSR of conflicting links (same signal), from the net's foes
    link_foe: np.ndarray  # int32

    # --- movements (n_movements,)
    mov_signal: np.ndarray  # int32
    mov_approach: np.ndarray  # int32
    mov_from_edge: tuple[str, ...]
    mov_to_edge: tuple[str, ...]
    mov_turn: np.ndarray  # int8 TURN_*
    mov_n_lanes: np.ndarray  # int16: incoming lanes that serve this movement
    mov_sat_flow_veh_s: np.ndarray  # float64: saturation flow of the movement (all its lanes)
    mov_speed_m_s: np.ndarray  # float64: free-flow speed of the approach
    mov_protected: np.ndarray  # bool: 'G' in some phase of the active program (else permissive 'g' only)
    mov_link_ptr: np.ndarray  # int32 (n_movements+1,)
    mov_link: np.ndarray  # int32: the signal groups of the movement

    # --- approaches (n_approaches,)
    appr_signal: np.ndarray  # int32
    appr_edge: tuple[str, ...]
    appr_length_m: np.ndarray  # float64: length of the approach edge
    appr_n_lanes: np.ndarray  # int16
    appr_storage_veh: np.ndarray  # float64: queue storage of the approach edge, lanes * length / jam spacing

    # --- graph: movement -> downstream approaches (through unsignalised junctions too)
    down_ptr: np.ndarray  # int32 (n_movements+1,)
    down_approach: np.ndarray  # int32
    down_travel_s: np.ndarray  # float64: free-flow travel time stop line -> downstream stop line
    down_dist_m: np.ndarray  # float64
    down_share: np.ndarray  # float64: geometric prior of the split (sums to <= 1 per movement)

    # --- pedestrian crossings (n_crossings,)
    crossing_ids: tuple[str, ...]
    crossing_signal: np.ndarray  # int32
    crossing_length_m: np.ndarray  # float64

    # --- Python-side maps
    signal_index: dict[str, int] = field(repr=False, default_factory=dict)
    movement_index: dict[tuple[str, str, str], int] = field(repr=False, default_factory=dict)
    approach_index: dict[tuple[str, str], int] = field(repr=False, default_factory=dict)
    edge_length_m: dict[str, float] = field(repr=False, default_factory=dict)
    edge_speed_m_s: dict[str, float] = field(repr=False, default_factory=dict)
    sat_flow_notes: str = ""
    # lanes (Python side): the incoming and outgoing lanes of each movement's connections, and every lane's length
    mov_in_lanes: tuple[tuple[str, ...], ...] = ()
    mov_out_lanes: tuple[tuple[str, ...], ...] = ()
    lane_length_m: dict[str, float] = field(repr=False, default_factory=dict)
    # links whose paths cross or merge (the junction's foe matrix), pairs the program shows green together included
    # (link_foe leaves those out): a 'g' link gives way to its path foes; CSR like link_foe, empty when unknown
    link_path_foe_ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int32))
    link_path_foe: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    def __post_init__(self) -> None:
        for value in self.__dict__.values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    @property
    def n_signals(self) -> int:
        return len(self.signal_ids)

    @property
    def n_phases(self) -> int:
        return int(self.phase_signal.shape[0])

    @property
    def n_links(self) -> int:
        return int(self.link_signal.shape[0])

    @property
    def n_movements(self) -> int:
        return int(self.mov_signal.shape[0])

    @property
    def n_approaches(self) -> int:
        return int(self.appr_signal.shape[0])

    @property
    def n_crossings(self) -> int:
        return len(self.crossing_ids)

    def phases_of(self, s: int) -> range:
        return range(int(self.signal_phase_ptr[s]), int(self.signal_phase_ptr[s + 1]))

    def links_of(self, s: int) -> range:
        return range(int(self.signal_link_ptr[s]), int(self.signal_link_ptr[s + 1]))

    def movements_of(self, s: int) -> np.ndarray:
        return np.flatnonzero(self.mov_signal == s)

    def mov_green(self) -> np.ndarray:
        """bool (n_phases, n_movements): movement m has green (G or g on any of its links) in phase p.

        Dense, for small networks and tests; kernels use the CSR arrays.
        """
        from engine.safety import GREEN_MAJOR, GREEN_MINOR

        out = np.zeros((self.n_phases, self.n_movements), bool)
        for p in range(self.n_phases):
            s = self.phase_signal[p]
            base = self.signal_link_ptr[s]
            codes = self.phase_code[self.phase_code_ptr[p] : self.phase_code_ptr[p + 1]]
            for m in self.movements_of(s):
                links = self.mov_link[self.mov_link_ptr[m] : self.mov_link_ptr[m + 1]] - base
                out[p, m] = bool(np.isin(codes[links], (GREEN_MAJOR, GREEN_MINOR)).any())
        return out

    def signal_spec(self, s: int):
        """The engine.safety.SignalSpec of signal s (minimum greens, clearances, conflicts)."""
        from engine.safety import SignalSpec

        links = self.links_of(s)
        n = len(links)
        base = links.start
        conflicts = np.zeros((n, n), bool)
        for li in links:
            for f in self.link_foe[self.link_foe_ptr[li] : self.link_foe_ptr[li + 1]]:
                conflicts[li - base, f - base] = True
        return SignalSpec(
            signal_id=self.signal_ids[s],
            min_green_s=np.asarray(self.link_min_green_s[base : base + n]),
            max_green_s=np.zeros(n, np.int32),
            yellow_s=np.asarray(self.link_yellow_s[base : base + n]),
            redamber_s=np.asarray(self.link_redamber_s[base : base + n]),
            allred_s=int(self.signal_allred_s[s]),
            conflicts=conflicts,
            is_pedestrian=np.asarray(self.link_crossing[base : base + n] >= 0),
        )
