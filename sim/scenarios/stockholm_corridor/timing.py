"""Signal timing of ``stockholm-corridor`` in Swedish practice (see :mod:`sim.scenarios.signals`).

Common 80 s cycle; greens split second by second to equalise the stages' degrees of saturation (Webster) above
the minimum greens and pedestrian walk + clearance; offsets chosen by dynamic programming along the corridor to
maximise the flow-weighted two-way overlap of platoons (45 km/h) with the next junction's arterial green.
"""

from __future__ import annotations

import math

from sim.scenarios import saturation as sat
from sim.scenarios._xml import tag
from sim.scenarios.signals import RED_AMBER_S, YELLOW_S, Stage, compose, ped_clearance_s, tl_logic_xml
from sim.scenarios.stockholm_corridor.design import (
    ARTERIAL,
    CYCLE_S,
    JUNCTIONS,
    LANE_M,
    LEFT_OUT,
    MIN_GREEN_S,
    OPPOSITE,
    PROGRESSION_M_S,
    RIGHT_OUT,
    SIDES,
    Junction,
    all_red_s,
    arms,
    edges,
    lane_connections,
    stage_names,
    stage_of,
)


def crossing_lengths_m(j: Junction, e: dict) -> dict[str, float]:
    inc, out = arms(j)
    return {s: (e[inc[s]][2] + e[out[s]][2]) * LANE_M for s in SIDES}


def stage_minimum_s(j: Junction, stage: str, e: dict) -> tuple[int, int]:
    """(minimum displayed green, pedestrian clearance) of a stage."""
    walk_sides = {"arterial": "NS", "cross": "EW"}.get(stage, "")
    if not walk_sides:
        return MIN_GREEN_S, 0
    lengths = crossing_lengths_m(j, e)
    clear = max(ped_clearance_s(lengths[s], YELLOW_S + all_red_s(j) + RED_AMBER_S) for s in walk_sides)
    return MIN_GREEN_S + clear, clear


def flow_ratios(j: Junction, e: dict, flows: dict, green_ratio: dict[str, float]) -> dict[str, tuple[float, str]]:
    """Critical flow ratio y (and its approach lane) of every stage, lanes balanced as in the saturation model."""
    inc, out = arms(j)
    conns = lane_connections(j, e)
    result: dict[str, tuple[float, str]] = {s: (0.0, "") for s in stage_names(j)}
    for side in SIDES:
        by_stage: dict[str, list[sat.Movement]] = {}
        for move in ("r", "s", "l"):
            lanes = tuple(fl for sd, mv, _, fl, _ in conns if sd == side and mv == move)
            exit_side = {"r": RIGHT_OUT[side], "s": OPPOSITE[side], "l": LEFT_OUT[side]}[move]
            q = flows.get((inc[side], out[exit_side]), 0.0)
            stage = stage_of(j, side, move)
            if move == "s":
                s_pcu = sat.SAT_THROUGH_PCU_H
            elif move == "l" and stage != "left":
                opp = OPPOSITE[side]
                q_opp = sum(flows.get((inc[opp], out[x]), 0.0) for x in (RIGHT_OUT[opp], OPPOSITE[opp]))
                s_pcu = sat.permissive_left_sat_pcu_h(q_opp, green_ratio[stage])
            else:
                s_pcu = sat.SAT_TURN_PCU_H
            by_stage.setdefault(stage, []).append(sat.Movement(move, q, s_pcu, lanes, 1.0))
        for stage, moves in by_stage.items():
            for lane, y in sat.balance_lanes(moves).items():
                if y > result[stage][0]:
                    result[stage] = (y, f"{inc[side]}_{lane}")
    return result


def split_greens(j: Junction, e: dict, flows: dict) -> tuple[dict[str, int], dict[str, float], dict[str, str]]:
    """Displayed green per stage, X per stage, critical lane per stage. Starting from the minimums, each spare
    second goes to the stage with the highest X (an integer-second Webster split; recomputing X each time because
    the capacity of permissive lefts depends on the opposing green)."""
    names = stage_names(j)
    total = CYCLE_S - (YELLOW_S + all_red_s(j) + RED_AMBER_S) * len(names)
    greens = {s: stage_minimum_s(j, s, e)[0] for s in names}

    def state() -> tuple[dict[str, float], dict[str, tuple[float, str]]]:
        ratio = {s: (greens[s] + YELLOW_S - sat.LOST_S) / CYCLE_S for s in names}
        ys = flow_ratios(j, e, flows, ratio)
        return {s: ys[s][0] / ratio[s] for s in names}, ys

    if sum(greens.values()) > total:
        raise ValueError(f"{j.id}: minimum greens exceed the {CYCLE_S} s cycle")
    while sum(greens.values()) < total:
        xs, _ = state()
        greens[max(names, key=lambda s: xs[s])] += 1
    xs, ys = state()
    return greens, xs, {s: ys[s][1] for s in names}


def _overlap_s(a0: float, a_len: float, b0: float, b_len: float) -> float:
    """Overlap of the windows [a0, a0 + a_len) and [b0, b0 + b_len) on the cycle circle (lengths <= cycle)."""
    a0, b0 = a0 % CYCLE_S, b0 % CYCLE_S
    return sum(max(0.0, min(a0 + k + a_len, b0 + b_len) - max(a0 + k, b0)) for k in (-CYCLE_S, 0, CYCLE_S))


def coordinate_offsets(arterial_green_s: list[int], flows: dict) -> list[int]:
    """Offsets (start of the arterial green, s) that maximise the flow-weighted overlap of each platoon leaving
    one junction's arterial green with the next junction's arterial green, both directions, by dynamic
    programming along the corridor. A platoon should arrive after the queue of vehicles that turned in upstream
    during the cross-street stage has left (2 s per queued vehicle and lane)."""
    n = len(JUNCTIONS)
    per_cycle = CYCLE_S / 3600.0
    lead_eb, lead_wb, w_eb, w_wb, travel = [], [], [], [], []
    for k in range(n - 1):
        a, b = JUNCTIONS[k], JUNCTIONS[k + 1]
        inc_a, out_a = arms(a)
        inc_b, out_b = arms(b)
        turned_in_eb = sum(flows.get((inc_a[s], out_a["E"]), 0.0) for s in "NS") * per_cycle
        turned_in_wb = sum(flows.get((inc_b[s], out_b["W"]), 0.0) for s in "NS") * per_cycle
        lead_eb.append(2.0 * turned_in_eb / 2)
        lead_wb.append(2.0 * turned_in_wb / 2)
        w_eb.append(sum(v for (fr, _), v in flows.items() if fr == inc_b["W"]))
        w_wb.append(sum(v for (fr, _), v in flows.items() if fr == inc_a["E"]))
        travel.append((b.x_m - a.x_m) / PROGRESSION_M_S)
    g = arterial_green_s
    best = [0.0 if o == 0 else -math.inf for o in range(CYCLE_S)]  # the first junction fixes the time origin
    back: list[list[int]] = []
    for k in range(n - 1):
        nxt, arg = [], []
        for ob in range(CYCLE_S):
            scores = [
                best[oa]
                + w_eb[k] * _overlap_s(oa + travel[k], g[k], ob + lead_eb[k], g[k + 1] - lead_eb[k])
                + w_wb[k] * _overlap_s(ob + travel[k], g[k + 1], oa + lead_wb[k], g[k] - lead_wb[k])
                for oa in range(CYCLE_S)
            ]
            i = max(range(CYCLE_S), key=lambda o: scores[o])
            nxt.append(scores[i])
            arg.append(i)
        best, back = nxt, [*back, arg]
    offsets = [max(range(CYCLE_S), key=lambda o: best[o])]
    for arg in reversed(back):
        offsets.append(arg[offsets[-1]])
    return offsets[::-1]


def programs(flows: dict) -> tuple[list[str], list[str], list[tuple]]:
    """(.tll.xml lines, .con.xml lines, design table rows)."""
    e = edges()
    tll_programs, tll_links, con_lines, table = [], [], [], []
    splits = [split_greens(j, e, flows) for j in JUNCTIONS]
    offsets = coordinate_offsets([greens["arterial"] for greens, _, _ in splits], flows)
    for j, (greens, xs, crit), offset in zip(JUNCTIONS, splits, offsets, strict=True):
        inc, out = arms(j)
        conns = lane_connections(j, e)
        green_by_stage: dict[str, dict[int, str]] = {s: {} for s in stage_names(j)}
        for idx, (side, move, exit_side, fl, tl_) in enumerate(conns):
            attrs = {"from": inc[side], "to": out[exit_side], "fromLane": fl, "toLane": tl_}
            con_lines.append(tag("connection", attrs))
            tll_links.append(tag("connection", {**attrs, "tl": j.id, "linkIndex": idx}))
            stage = stage_of(j, side, move)
            green_by_stage[stage][idx] = "G" if move == "s" or stage == "left" else "g"
        crossing_index = {}
        for side in SIDES:
            crossing_index[side] = len(conns) + len(crossing_index)
            con_lines.append(tag("crossing", {"node": j.id, "edges": f"{inc[side]} {out[side]}", "priority": 1,
                                              "linkIndex": crossing_index[side]}))
        walks = {"arterial": (crossing_index["N"], crossing_index["S"]),
                 "cross": (crossing_index["E"], crossing_index["W"])}
        stages = []
        for name in stage_names(j):
            label = {"arterial": ARTERIAL, "left": f"{ARTERIAL} left", "cross": j.street}[name]
            stages.append(Stage(label, green_by_stage[name], walks.get(name, ()), greens[name],
                                stage_minimum_s(j, name, e)[1], MIN_GREEN_S,
                                {"arterial": 60, "left": 20, "cross": 40}[name], all_red_s(j)))
        prog = compose(j.id, stages, len(conns) + 4, offset)
        assert prog.cycle_s == CYCLE_S, (j.id, prog.cycle_s)
        tll_programs.append(tl_logic_xml(prog))
        for name in stage_names(j):
            table.append((j.id, j.street, name, greens[name], xs[name], crit[name]))
    return tll_programs + tll_links, con_lines, table
