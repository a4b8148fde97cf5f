"""Compiled demand: time-sliced arrival rates per movement, turning ratios and the flow links between movements.

Built by ``sim.demandcompile.compile_demand`` from SUMO routes / trips / flows and the sumocfg window. Flows are in
passenger-car units per hour (pcu/h); a vehicle's pcu weight comes from its vehicle class (see
``sim.demandcompile.PCU_BY_VCLASS``). The bus part of the arrivals (vClass bus/coach or a vType id containing
"bus", ``sim.demandcompile.is_bus_vtype``) is kept separately for the optimiser's bus weight.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True, eq=False)
class Demand:
    """Arrays over time bins (n_bins,) and the network's movements (n_movements,).

    mov_arrival_veh_h: float64 (n_bins, n_movements): arrival rate at the movement's stop line, pcu/h, binned by the
        free-flow arrival time at that stop line (departure time + free-flow travel time from the vehicle's origin).
    mov_entry_veh_h: float64 (n_bins, n_movements): the part of ``mov_arrival_veh_h`` that does not come through an
        upstream signalised movement (it enters the signal network at this approach).
    mov_turn_ratio: float64 (n_movements,): share of its approach's flow that takes this movement (whole window).
    feed_ptr/feed_mov/feed_share: CSR movement m -> downstream movements m2, with the share of m's flow that goes on
        to m2 (from the routes; shares of one m sum to <= 1, the rest leaves the signal network).
    feed_travel_s: float64: free-flow travel time from m's stop line to m2's stop line.
    mov_bus_veh_h: float64 (n_bins, n_movements) or None: the part of ``mov_arrival_veh_h`` that buses bring, pcu/h
        (a bus of vClass bus counts 2.0 pcu); None when the demand was built without it (read as zero).
    n_buses: buses departing within [begin, end) (expected number for flows).
    crossing_ped_h: float64 (n_crossings,) or None: pedestrians per hour (window mean) over each signalised crossing
        of the network, from the scenario's walks routed on the pedestrian graph; None when not compiled.
    n_walks_unrouted: walks (expected number) that could not be attributed to crossings.
    """

    begin_s: float
    end_s: float
    bin_s: float
    mov_arrival_veh_h: np.ndarray
    mov_entry_veh_h: np.ndarray
    mov_turn_ratio: np.ndarray
    feed_ptr: np.ndarray
    feed_mov: np.ndarray
    feed_share: np.ndarray
    feed_travel_s: np.ndarray
    n_vehicles: int  # vehicles departing within [begin, end)
    n_pcu: float
    n_persons: int = 0
    n_routed_trips: int = 0  # trips / from-to flows routed by the compiler (shortest free-flow paths)
    sources: tuple[str, ...] = ()
    mov_bus_veh_h: np.ndarray | None = None
    n_buses: int = 0
    crossing_ped_h: np.ndarray | None = None
    n_walks_unrouted: int = 0

    def __post_init__(self) -> None:
        for value in self.__dict__.values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    @property
    def n_bins(self) -> int:
        return int(self.mov_arrival_veh_h.shape[0])

    @property
    def bin_edges_s(self) -> np.ndarray:
        return self.begin_s + self.bin_s * np.arange(self.n_bins + 1)

    def bins(self, lo: int, hi: int) -> Demand:
        """The demand of bins lo:hi alone: its window their span (clipped to ``end_s``), its per-bin arrays cut to
        them, ``n_vehicles`` and ``n_buses`` in proportion to the entering flow. Routing (feeds, turn ratios) and the
        pedestrian flows stay the window's."""
        if not 0 <= lo < hi <= self.n_bins:
            raise ValueError(f"bins {lo}:{hi} outside the demand's {self.n_bins} bins")
        edges = np.minimum(self.bin_edges_s, self.end_s)
        widths = np.diff(edges)
        entry = (self.mov_entry_veh_h.sum(1) * widths)
        share = float(entry[lo:hi].sum() / entry.sum()) if entry.sum() > 0 else (hi - lo) / self.n_bins
        return replace(
            self, begin_s=float(edges[lo]), end_s=float(edges[hi]),
            mov_arrival_veh_h=self.mov_arrival_veh_h[lo:hi], mov_entry_veh_h=self.mov_entry_veh_h[lo:hi],
            mov_bus_veh_h=None if self.mov_bus_veh_h is None else self.mov_bus_veh_h[lo:hi],
            n_vehicles=int(round(self.n_vehicles * share)), n_buses=int(round(self.n_buses * share)),
        )

    def mean_arrival_veh_h(self) -> np.ndarray:
        """Window-average arrival rate per movement, pcu/h (n_movements,)."""
        widths = np.diff(np.minimum(self.bin_edges_s, self.end_s))
        return (self.mov_arrival_veh_h * widths[:, None]).sum(0) / max(self.end_s - self.begin_s, 1e-9)

    def mean_bus_veh_h(self) -> np.ndarray:
        """Window-average bus arrival rate per movement, pcu/h (n_movements,); zeros without bus data."""
        if self.mov_bus_veh_h is None:
            return np.zeros(self.mov_arrival_veh_h.shape[1])
        widths = np.diff(np.minimum(self.bin_edges_s, self.end_s))
        return (self.mov_bus_veh_h * widths[:, None]).sum(0) / max(self.end_s - self.begin_s, 1e-9)

    def bus_share(self) -> np.ndarray:
        """Share of each movement's window flow (pcu) that buses bring, float64 (n_movements,) in [0, 1]."""
        total = self.mean_arrival_veh_h()
        bus = self.mean_bus_veh_h()
        return np.clip(np.divide(bus, total, out=np.zeros_like(total), where=total > 0), 0.0, 1.0)
