"""``grid-NxM[:level]``: an N-row x M-column grid of signalised junctions with one hour of demand.

Every street has 2 lanes per direction (right lane: right + through, left lane: through + permissive left), 50 km/h,
200 m blocks, and a 150 m stub to an unsignalised fringe node outside every boundary junction. Each junction runs a
2-stage fixed-time program in Swedish practice (see :mod:`sim.scenarios.signals`): east-west then north-south,
70 s cycle, offsets giving an eastbound green wave along every row. Demand enters from every fringe node: a through
flow across the grid plus a right-turning and a left-turning flow that turn at a junction chosen deterministically
from the entry's index. All flows are scaled together so that the most loaded approach lane has degree of
saturation ``level`` (X = flow / (sat_flow x g / C), see :mod:`sim.scenarios.saturation`).

Nodes are ``J{r}_{c}`` (row 0 is the south edge, column 0 the west edge); fringe nodes ``W{r}``, ``E{r}``, ``S{c}``,
``N{c}``; edges are named ``{from}-{to}``; traffic lights have the id of their junction.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import saturation as sat
from ._build import sumocfg_text
from ._vtypes import TRAFFIC_MIX, vtype_lines
from ._xml import tag, write
from .signals import RED_AMBER_S, YELLOW_S, Stage, compose, tl_logic_xml

BLOCK_M = 200.0
FRINGE_M = 150.0
SPEED_M_S = 13.89
CYCLE_S = 70
ALL_RED_S = 2
MIN_GREEN_S = 6
PROGRESSION_M_S = 12.5
DURATION_S = 3600
RIGHT_SHARE, LEFT_SHARE = 0.15, 0.08  # of an entry's through flow
TRAFFIC_PCU = 1.0 * (1 - 0.06) + (12.5 / 7.5) * 0.06  # car / truck mix of _vtypes in pcu

SIDES = ("N", "E", "S", "W")  # the side an approach comes from; heading is the opposite
_STEP = {"N": (1, 0), "E": (0, 1), "S": (-1, 0), "W": (0, -1)}  # heading -> (d_row, d_col)
_OPPOSITE = {"N": "S", "S": "N", "E": "W", "W": "E"}
_RIGHT_OF = {"N": "E", "E": "S", "S": "W", "W": "N"}
_LEFT_OF = {v: k for k, v in _RIGHT_OF.items()}
MOVES = ("r", "s", "l")


def stage_green_s() -> int:
    return (CYCLE_S - 2 * (YELLOW_S + ALL_RED_S + RED_AMBER_S)) // 2


def _node(rows: int, cols: int, r: int, c: int) -> str:
    if r < 0:
        return f"S{c}"
    if r >= rows:
        return f"N{c}"
    if c < 0:
        return f"W{r}"
    if c >= cols:
        return f"E{r}"
    return f"J{r}_{c}"


def _entries(rows: int, cols: int) -> list[tuple[str, int, int, str]]:
    """(fringe id, first junction row, first junction col, heading) for every entry, in a fixed order."""
    out = []
    for r in range(rows):
        out.append((f"W{r}", r, 0, "E"))
        out.append((f"E{r}", r, cols - 1, "W"))
    for c in range(cols):
        out.append((f"S{c}", 0, c, "N"))
        out.append((f"N{c}", rows - 1, c, "S"))
    return out


def _path(rows: int, cols: int, r: int, c: int, heading: str, turn_at: int, turn: str):
    """Junctions visited as (r, c, side approached from, move) and the node sequence, turning once at the
    ``turn_at``-th junction (1-based) when ``turn`` is 'r' or 'l'."""
    visits, nodes, k = [], [], 0
    prev = (r - _STEP[heading][0], c - _STEP[heading][1])
    nodes.append(_node(rows, cols, *prev))
    while 0 <= r < rows and 0 <= c < cols:
        k += 1
        side = _OPPOSITE[heading]
        move = "s"
        if k == turn_at and turn != "s":
            heading = _RIGHT_OF[heading] if turn == "r" else _LEFT_OF[heading]
            move = turn
        visits.append((r, c, SIDES.index(side), MOVES.index(move)))
        nodes.append(_node(rows, cols, r, c))
        r, c = r + _STEP[heading][0], c + _STEP[heading][1]
    nodes.append(_node(rows, cols, r, c))
    return visits, nodes


def routes(rows: int, cols: int) -> list[tuple[str, list[str], float, list[tuple[int, int, int, int]]]]:
    """(route id, edge ids, relative flow, junction visits) for every entry's through, right and left flow."""
    out = []
    for i, (fringe, r, c, heading) in enumerate(_entries(rows, cols)):
        n = cols if heading in "EW" else rows
        for move, share, turn_at in (("s", 1.0, 0), ("r", RIGHT_SHARE, 1 + (7 * i + 3) % n),
                                     ("l", LEFT_SHARE, 1 + (5 * i + 1) % n)):
            visits, nodes = _path(rows, cols, r, c, heading, turn_at, move)
            edges = [f"{a}-{b}" for a, b in zip(nodes, nodes[1:], strict=False)]
            out.append((f"{fringe}.{move}", edges, share, visits))
    return out


def lane_x(flow_pcu_h: np.ndarray, green_s: float) -> np.ndarray:
    """X of the critical lane of every approach. ``flow_pcu_h``: float64 (rows, cols, 4 sides, 3 moves r/s/l)
    in pcu/h; returns float64 (rows, cols, 4). Same model as :mod:`sim.scenarios.saturation` for two lanes,
    lane 0 right + through, lane 1 through + permissive left."""
    g = (green_s + YELLOW_S - sat.LOST_S) / CYCLE_S
    right, through, left = flow_pcu_h[..., 0], flow_pcu_h[..., 1], flow_pcu_h[..., 2]
    opposing = np.roll(right + through, 2, axis=2)  # side k is opposed by side k+2
    q = opposing / 3600.0 / g
    with np.errstate(divide="ignore", invalid="ignore"):
        cap = np.where(q > 1e-9, q * np.exp(-q * sat.CRITICAL_GAP_S) / (1 - np.exp(-q * sat.FOLLOW_UP_S)) * 3600,
                       3600.0 / sat.FOLLOW_UP_S)
    sat_left = np.maximum(np.minimum(cap, sat.SAT_TURN_PCU_H), 2 * 3600.0 / green_s)
    w0 = right / sat.SAT_TURN_PCU_H
    w1 = left / sat_left
    y = np.maximum((w0 + w1 + through / sat.SAT_THROUGH_PCU_H) / 2, np.maximum(w0, w1))
    return y / g


def demand(rows: int, cols: int, level: float):
    """Routes and their flows in veh/h so that the critical lane has X = ``level``; also returns that X."""
    rts = routes(rows, cols)
    visits = [np.array(v, dtype=np.int64).reshape(-1, 4) for _, _, _, v in rts]
    shares = np.array([s for _, _, s, _ in rts])

    def load(scale: float) -> np.ndarray:
        acc = np.zeros((rows, cols, 4, 3))
        for v, share in zip(visits, shares, strict=True):
            np.add.at(acc, (v[:, 0], v[:, 1], v[:, 2], v[:, 3]), share * scale * TRAFFIC_PCU)
        return acc

    scale = 500.0
    for _ in range(12):  # X is not linear in demand (permissive lefts): fixed-point on the scale
        x_max = float(lane_x(load(scale), stage_green_s()).max())
        scale *= level / x_max
    x_max = float(lane_x(load(scale), stage_green_s()).max())
    return [(rid, edges, share * scale) for rid, edges, share, _ in rts], x_max


def _link_index(side: int, j: int) -> int:
    return side * 4 + j


def write_sources(folder: Path, rows: int, cols: int, level: float, seed: int = 42) -> str:
    """Write the plain XML, routes and .sumocfg of the grid into ``folder``; returns the file stem."""
    stem = f"grid-{rows}x{cols}"
    nodes, edges, cons, tlls = [], [], [], []
    for r in range(-1, rows + 1):
        for c in range(-1, cols + 1):
            inside_r, inside_c = 0 <= r < rows, 0 <= c < cols
            if not (inside_r or inside_c):
                continue  # the four corners have no node
            nid = _node(rows, cols, r, c)
            x = c * BLOCK_M if inside_c else (-FRINGE_M if c < 0 else (cols - 1) * BLOCK_M + FRINGE_M)
            y = r * BLOCK_M if inside_r else (-FRINGE_M if r < 0 else (rows - 1) * BLOCK_M + FRINGE_M)
            if inside_r and inside_c:
                nodes.append(tag("node", {"id": nid, "x": x, "y": y, "type": "traffic_light", "tl": nid}))
            else:
                nodes.append(tag("node", {"id": nid, "x": x, "y": y, "type": "priority"}))
    green_s = stage_green_s()
    for r in range(rows):
        for c in range(cols):
            jid = _node(rows, cols, r, c)
            for dr, dc in _STEP.values():
                other = _node(rows, cols, r + dr, c + dc)
                for a, b in ((jid, other), (other, jid)):
                    if a == jid or other.startswith(("W", "E", "S", "N")):
                        edges.append(tag("edge", {"id": f"{a}-{b}", "from": a, "to": b, "numLanes": 2,
                                                  "speed": SPEED_M_S}))
            green: dict[str, dict[int, str]] = {"EW": {}, "NS": {}}
            for s, side in enumerate(SIDES):
                heading = _OPPOSITE[side]
                src = _node(rows, cols, r - _STEP[heading][0], c - _STEP[heading][1])
                fr = f"{src}-{jid}"
                targets = {}
                for move, h in (("r", _RIGHT_OF[heading]), ("s", heading), ("l", _LEFT_OF[heading])):
                    targets[move] = f"{jid}-{_node(rows, cols, r + _STEP[h][0], c + _STEP[h][1])}"
                links = [("r", 0, 0, "G"), ("s", 0, 0, "G"), ("s", 1, 1, "G"), ("l", 1, 1, "g")]
                stage = "EW" if side in "EW" else "NS"
                for j, (move, fl, tl_, ch) in enumerate(links):
                    attrs = {"from": fr, "to": targets[move], "fromLane": fl, "toLane": tl_}
                    cons.append(tag("connection", attrs))
                    tlls.append(tag("connection", {**attrs, "tl": jid, "linkIndex": _link_index(s, j)}))
                    green[stage][_link_index(s, j)] = ch
            stages = [Stage(name, green[name], green_s=green_s, min_green_s=MIN_GREEN_S,
                            max_green_s=CYCLE_S - 2 * 6 - MIN_GREEN_S, all_red_s=ALL_RED_S) for name in ("EW", "NS")]
            offset = round(c * BLOCK_M / PROGRESSION_M_S) % CYCLE_S
            tlls.append(tl_logic_xml(compose(jid, stages, 16, offset)))
    edges = sorted(set(edges))
    note = f"grid-{rows}x{cols} generated by sim/scenarios/grid.py"
    write(folder / f"{stem}.nod.xml", "nodes", nodes, note)
    write(folder / f"{stem}.edg.xml", "edges", edges, note)
    write(folder / f"{stem}.con.xml", "connections", cons, note)
    # tlLogics first, then the connections that assign their link indices
    write(folder / f"{stem}.tll.xml", "tlLogics", [t for t in tlls if "<tlLogic" in t]
          + [t for t in tlls if "<tlLogic" not in t], note)

    flows, x_max = demand(rows, cols, level)
    lines = vtype_lines()
    for rid, edge_ids, _ in flows:
        lines.append(tag("route", {"id": rid, "edges": " ".join(edge_ids)}))
    for rid, _, veh_h in flows:
        lines.append(tag("flow", {"id": f"f.{rid}", "type": TRAFFIC_MIX, "route": rid, "begin": 0,
                                  "end": DURATION_S, "period": f"exp({veh_h / 3600.0:.6f})",
                                  "departLane": "best", "departSpeed": "max"}))
    write(folder / f"{stem}.rou.xml", "routes", lines, f"{note}; critical X = {x_max:.3f}")
    (folder / f"{stem}.sumocfg").write_text(
        sumocfg_text(f"{stem}.net.xml", [f"{stem}.rou.xml"], [], DURATION_S, seed), encoding="utf-8")
    meta = {"name": f"grid-{rows}x{cols}:{level:g}", "rows": rows, "cols": cols, "level": level,
            "cycle_s": CYCLE_S, "design_critical_x": round(x_max, 4), "duration_s": DURATION_S}
    (folder / "scenario.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return stem
