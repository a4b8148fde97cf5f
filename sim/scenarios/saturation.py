"""Degree of saturation X = flow / capacity of every signalised approach lane, from a built scenario.

Capacity of a lane = saturation flow x effective green / cycle, with 1800 pcu/h/lane for through movements and
1500 for protected turns; a permissive (yielding, SUMO 'g') left turn gets the gap-acceptance saturation flow
against the opposing through + right flow during green. Effective green = displayed green + yellow - 2 s lost
time. Flows are read from the route file's ``<flow>``s (explicit routes) at the busiest time of the demand, in
passenger-car units from each vehicle type's length + minGap (7.5 m = 1 pcu). Where several movements share lanes,
the flow is spread over the lanes it may use so as to equalise their X (drivers pick the shorter queue).

``python -m sim.scenarios.saturation NAME_OR_SUMOCFG`` prints the table per junction.
"""

from __future__ import annotations

import math
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SAT_THROUGH_PCU_H = 1800.0
SAT_TURN_PCU_H = 1500.0
LOST_S = 2.0
YELLOW_S = 3.0
CRITICAL_GAP_S = 4.5
FOLLOW_UP_S = 2.5
PCU_LENGTH_M = 7.5


@dataclass(frozen=True)
class Movement:
    """A movement on one approach: flow, per-lane saturation flow, the lanes it may use, effective green/cycle."""

    label: str
    flow_pcu_h: float
    sat_pcu_h: float
    lanes: tuple[int, ...]
    green_ratio: float


def balance_lanes(
    movements: Sequence[Movement], chunks: int = 64, lane_flow_pcu_h: dict[int, float] | None = None
) -> dict[int, float]:
    """X per lane after spreading each movement over its lanes to equalise X (greedy water-filling in ``chunks``
    steps per movement, most constrained movements first). Lanes no movement uses are absent. The flow each lane
    gets (pcu/h) is added to ``lane_flow_pcu_h`` when given."""
    x: dict[int, float] = {}
    for m in movements:
        for lane in m.lanes:
            x.setdefault(lane, 0.0)
    order = sorted(movements, key=lambda m: (len(m.lanes), m.label))
    for _ in range(chunks):
        for m in order:
            if m.flow_pcu_h <= 0:
                continue
            step = m.flow_pcu_h / chunks / (m.sat_pcu_h * max(m.green_ratio, 1e-9))
            lane = min(m.lanes, key=lambda ln: (x[ln], ln))
            x[lane] += step
            if lane_flow_pcu_h is not None:
                lane_flow_pcu_h[lane] = lane_flow_pcu_h.get(lane, 0.0) + m.flow_pcu_h / chunks
    return x


def permissive_left_sat_pcu_h(opposing_pcu_h: float, opposing_green_ratio: float) -> float:
    """Saturation flow (pcu per hour of green) of a left turn yielding to an opposing stream that flows at
    ``opposing_pcu_h`` on average, i.e. ``opposing_pcu_h / green_ratio`` during its green (Siegloch capacity)."""
    q = opposing_pcu_h / 3600.0 / max(opposing_green_ratio, 1e-9)
    if q <= 1e-9:
        return min(SAT_TURN_PCU_H, 3600.0 / FOLLOW_UP_S)
    cap = q * math.exp(-q * CRITICAL_GAP_S) / (1.0 - math.exp(-q * FOLLOW_UP_S)) * 3600.0
    return min(SAT_TURN_PCU_H, cap)


# ---------------------------------------------------------------------------------------------- reading files
def _rate_veh_s(el: ET.Element) -> float:
    if el.get("vehsPerHour") is not None:
        return float(el.get("vehsPerHour")) / 3600.0
    if el.get("perHour") is not None:
        return float(el.get("perHour")) / 3600.0
    if el.get("probability") is not None:
        return float(el.get("probability"))
    period = el.get("period")
    if period is not None:
        m = re.fullmatch(r"exp\(([^)]+)\)", period.strip())
        return float(m.group(1)) if m else 1.0 / float(period)
    if el.get("number") is not None:
        span = float(el.get("end", 3600)) - float(el.get("begin", 0))
        return float(el.get("number")) / span if span > 0 else 0.0
    return 0.0


def read_flows(route_files: Sequence[Path], at_s: float | None = None) -> tuple[dict[tuple[str, ...], float], float]:
    """(edges of a route -> pcu/h, design time). Flows active at ``at_s`` (default: the busiest flow start)."""
    pcu: dict[str, float] = {"DEFAULT_VEHTYPE": 1.0}
    routes: dict[str, tuple[str, ...]] = {}
    flows: list[tuple[float, float, float, str, tuple[str, ...]]] = []
    for path in route_files:
        for el in ET.parse(path).getroot():
            if el.tag == "vType":
                length = float(el.get("length", 5.0)) + float(el.get("minGap", 2.5))
                pcu[el.get("id")] = max(1.0, length / PCU_LENGTH_M)
            elif el.tag == "vTypeDistribution":
                members = [(c.get("id"), float(c.get("probability", 1))) for c in el if c.tag == "vType"]
                for c in el:
                    if c.tag == "vType":
                        length = float(c.get("length", 5.0)) + float(c.get("minGap", 2.5))
                        pcu[c.get("id")] = max(1.0, length / PCU_LENGTH_M)
                total = sum(p for _, p in members) or 1.0
                pcu[el.get("id")] = sum(pcu[i] * p for i, p in members) / total
            elif el.tag == "route":
                routes[el.get("id")] = tuple(el.get("edges").split())
            elif el.tag == "flow":
                inner = el.find("route")
                edges = tuple(inner.get("edges").split()) if inner is not None else routes.get(el.get("route"))
                if edges is None:
                    continue
                begin, end = float(el.get("begin", 0)), float(el.get("end", 3600))
                flows.append((begin, end, _rate_veh_s(el) * 3600.0, el.get("type", "DEFAULT_VEHTYPE"), edges))
    if at_s is None:
        starts = sorted({f[0] for f in flows}) or [0.0]
        at_s = max(starts, key=lambda t: sum(f[2] for f in flows if f[0] <= t < f[1]))
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for begin, end, veh_h, vtype, edges in flows:
        if begin <= at_s < end:
            out[edges] += veh_h * pcu.get(vtype, 1.0)
    return dict(out), at_s


def _cfg_files(sumocfg: Path) -> tuple[Path, list[Path]]:
    root = ET.parse(sumocfg).getroot()

    def value(name: str) -> str:
        el = root.find(f".//{name}")
        if el is None:
            raise ValueError(f"{sumocfg}: no {name}")
        return el.get("value")

    base = sumocfg.parent
    net = base / value("net-file")
    routes = [base / r.strip() for r in value("route-files").split(",") if r.strip()]
    return net, routes


@dataclass(frozen=True)
class LaneX:
    tl_id: str
    approach: str
    lane: int
    x: float
    movements: str
    flow_pcu_h: float


def lane_table(sumocfg: Path, at_s: float | None = None) -> list[LaneX]:
    """X of every signalised approach lane of the scenario (see module docstring)."""
    import sumolib

    net_file, route_files = _cfg_files(Path(sumocfg))
    net = sumolib.net.readNet(str(net_file), withPrograms=True)
    route_flows, _ = read_flows(route_files, at_s)
    move_flow: dict[tuple[str, str], float] = defaultdict(float)
    for edges, q in route_flows.items():
        for a, b in zip(edges, edges[1:], strict=False):
            move_flow[(a, b)] += q

    rows: list[LaneX] = []
    for tls in net.getTrafficLights():
        program = next(iter(tls.getPrograms().values()))
        phases = program.getPhases()
        cycle = sum(p.duration for p in phases)
        green = defaultdict(float)
        permissive = set()
        for p in phases:
            for i, c in enumerate(p.state):
                if c in "Gg":
                    green[i] += p.duration
                if c == "g":
                    permissive.add(i)

        def ratio(i: int, green=green, cycle=cycle) -> float:
            return max(0.0, green[i] + YELLOW_S - LOST_S) / cycle

        # approach edge -> out edge -> (lanes, link index, direction)
        conns: dict[str, dict[str, list]] = defaultdict(dict)
        for in_lane, out_lane, idx in tls.getConnections():
            e_in, e_out = in_lane.getEdge().getID(), out_lane.getEdge().getID()
            con = next(c for c in in_lane.getOutgoing() if c.getToLane() == out_lane)
            entry = conns[e_in].setdefault(e_out, [set(), idx, con.getDirection()])
            entry[0].add(in_lane.getIndex())

        def bearing(edge_id: str) -> float:
            shape = net.getEdge(edge_id).getShape()
            (x0, y0), (x1, y1) = shape[-2], shape[-1]
            return math.degrees(math.atan2(y1 - y0, x1 - x0))

        for e_in, outs in sorted(conns.items()):
            opposite = None
            for other in conns:
                diff = abs((bearing(e_in) - bearing(other) + 180.0) % 360.0 - 180.0)
                if other != e_in and diff > 145.0:
                    opposite = other
            moves = []
            for e_out, (lanes, idx, direction) in sorted(outs.items()):
                q = move_flow.get((e_in, e_out), 0.0)
                if direction in ("s",):
                    sat = SAT_THROUGH_PCU_H
                elif direction in ("l", "L") and idx in permissive and opposite is not None:
                    opp = [(move_flow.get((opposite, o), 0.0), i) for o, (_, i, d) in conns[opposite].items()
                           if d in ("s", "r", "R")]
                    q_opp = sum(f for f, _ in opp)
                    g_opp = max((ratio(i) for _, i in opp), default=1.0)
                    sat = permissive_left_sat_pcu_h(q_opp, g_opp)
                    sat = max(sat, 2 * 3600.0 / max(green[idx], 1.0))  # at least two sneakers per cycle
                else:
                    sat = SAT_TURN_PCU_H
                moves.append(Movement(f"{direction}>{e_out}", q, sat, tuple(sorted(lanes)), ratio(idx)))
            lane_flow: dict[int, float] = {}
            for lane, x in sorted(balance_lanes(moves, lane_flow_pcu_h=lane_flow).items()):
                on_lane = [m for m in moves if lane in m.lanes and m.flow_pcu_h > 0]
                rows.append(LaneX(tls.getID(), e_in, lane, x, " ".join(m.label for m in on_lane),
                                  lane_flow.get(lane, 0.0)))
    return rows


def junction_table(sumocfg: Path, at_s: float | None = None) -> list[LaneX]:
    """The critical (highest-X) lane of every traffic light, in traffic-light id order."""
    best: dict[str, LaneX] = {}
    for row in lane_table(sumocfg, at_s):
        if row.tl_id not in best or row.x > best[row.tl_id].x:
            best[row.tl_id] = row
    return [best[k] for k in sorted(best, key=_natural)]


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m sim.scenarios.saturation NAME_OR_SUMOCFG", file=sys.stderr)
        return 2
    target = args[0]
    if target.endswith(".sumocfg"):
        cfg = Path(target)
    else:
        from sim.scenarios import build

        cfg = build(target)
    rows = junction_table(cfg)
    print(f"{'junction':<10} {'critical approach lane':<26} {'pcu/h':>7} {'X':>6}  movements")
    for r in rows:
        print(f"{r.tl_id:<10} {r.approach + '_' + str(r.lane):<26} {r.flow_pcu_h:7.0f} {r.x:6.2f}  {r.movements}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
