"""Adapter: saturation flows of movements that share a lane, in proportion to their demand.

The network compiler gives every movement on a lane shared by k movements 1/k of the lane's saturation flow. When
the movements' demands differ, that under-rates the heavy one (a U-turn with 100 veh/h sharing a lane with a 65
veh/h left turn gets a third of the lane) and the optimiser chases a bottleneck that SUMO does not have. Here each
lane's demand-weighted saturation flow (the HCM shared-lane form: base / sum_m (share_m / f_m), f_m the movement's
turn factor) is divided among its movements in proportion to their demand on it; a movement's demand is spread
evenly over its lanes. Lanes without demand keep the compiler's 1/k split.

The lane layout comes from ``Network.mov_in_lanes`` (the incoming lanes of each movement's connections). Proposed
upstream: this rule in sim.netcompile, so that every model sees it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np


def shared_lane_sat_flows(net, demand, net_file=None) -> np.ndarray:
    """Saturation flow per movement, veh/s (n_movements,), with shared lanes divided by demand. (``net_file`` is
    accepted for older callers and not used: the lanes come from the Network.)"""
    n = net.n_movements
    lanes = [list(net.mov_in_lanes[m]) if m < len(net.mov_in_lanes) else [] for m in range(n)]
    users: dict[str, list[int]] = {}
    for m, ls in enumerate(lanes):
        for ln in ls:
            users.setdefault(ln, []).append(m)
    sat0 = np.asarray(net.mov_sat_flow_veh_s, np.float64) * 3600.0
    q = demand.mean_arrival_veh_h()
    base = np.zeros(n)  # compiler's per-lane shares: sum over lanes of 1/k
    for m, ls in enumerate(lanes):
        base[m] = sum(1.0 / len(users[ln]) for ln in ls)
    out = sat0.copy()
    if not users:
        return out / 3600.0
    # per-lane flow of a movement on the lane at factor 1: sat0 / (share sum) = base flow * factor
    per_lane_full = np.where(base > 0, sat0 / np.maximum(base, 1e-9), 0.0)  # veh/h of one whole lane for m
    new = np.zeros(n)
    touched = np.zeros(n, bool)
    for ms in users.values():
        ms = [m for m in ms if per_lane_full[m] > 0]
        if not ms:
            continue
        qm = np.array([q[m] / len(lanes[m]) for m in ms])
        full = np.array([per_lane_full[m] for m in ms])
        if len(ms) == 1 or qm.sum() <= 0:
            for m, f in zip(ms, full, strict=True):
                new[m] += f / len(ms)
                touched[m] = True
            continue
        share = qm / qm.sum()
        lane_sat = 1.0 / np.sum(share / full)  # harmonic: veh/h the mixed lane discharges
        for m, sh in zip(ms, share, strict=True):
            new[m] += lane_sat * sh
            touched[m] = True
    out = np.where(touched & (new > 0), new, sat0)
    return out / 3600.0


def calibrated_network(net, demand, net_file=None):
    """The network with :func:`shared_lane_sat_flows` (same signals, phases and ids; a new object). ``net_file``:
    accepted for older callers, not used."""
    sat = shared_lane_sat_flows(net, demand)
    notes = (net.sat_flow_notes + "; " if net.sat_flow_notes else "") + \
        "shared lanes divided by demand (engine.optimise.calibrate)"
    return replace(net, mov_sat_flow_veh_s=sat, sat_flow_notes=notes)
