"""Design data of ``stockholm-corridor``: geometry, lanes, movements and demand (no file writing).

The scenario: Storgatan, a fictional 2.4 km east-west inner-city arterial (2 lanes per direction, 50 km/h) with 9
signalised junctions 160-330 m apart. Three major junctions (Ekgatan, Almgatan, Rönngatan) have 60 m left-turn
pockets on the arterial with protected lefts and 2-lane cross streets; the others have 1-lane cross streets and
permissive lefts. Every cross street runs ~200 m to an unsignalised fringe node. All streets have sidewalks and
every signalised junction has four signalised crossings. Bus line 4 runs both ways every 6 min with four kerbside
stops per direction. Demand is a morning peak towards the city (eastbound), 15 min at 80 % then 45 min at full
rate, as explicit routes; pedestrians cross at every junction and walk along the arterial.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sim.scenarios._vtypes import TRAFFIC_MIX, TRUCK_SHARE

HERE = Path(__file__).resolve().parent
NAME = "stockholm-corridor"
ARTERIAL = "Storgatan"
SPEED_M_S = 13.89  # 50 km/h
LANE_M = 3.2
SIDEWALK_M = 2.5
POCKET_M = 60.0
CYCLE_S = 80
MIN_GREEN_S = 6  # also the pedestrian minimum walk
PROGRESSION_M_S = 12.5  # platoon speed for the offsets (45 km/h)
DURATION_S = 3600
RAMP_END_S, RAMP_FACTOR = 900, 0.8
SEED = 20240
TRAFFIC_PCU = (1 - TRUCK_SHARE) * 1.0 + TRUCK_SHARE * 12.5 / 7.5
W_X, E_X = 0.0, 2360.0


@dataclass(frozen=True)
class Junction:
    id: str
    x_m: float
    street: str
    major: bool
    north_m: float  # cross street length to its fringe node
    south_m: float
    skew_m: float  # x shift of the fringe nodes (streets are rarely square)
    q_north: float  # veh/h entering from the north fringe at peak
    q_south: float


JUNCTIONS = (
    Junction("J1", 250, "Tallgatan", False, 210, 190, 6, 260, 240),
    Junction("J2", 440, "Björkgatan", False, 200, 220, -8, 210, 260),
    Junction("J3", 710, "Ekgatan", True, 230, 200, 0, 500, 470),
    Junction("J4", 870, "Lindgatan", False, 190, 200, 10, 220, 190),
    Junction("J5", 1200, "Almgatan", True, 220, 210, -5, 480, 430),
    Junction("J6", 1430, "Askgatan", False, 200, 190, 0, 200, 170),
    Junction("J7", 1610, "Lönngatan", False, 180, 200, 7, 150, 190),
    Junction("J8", 1900, "Rönngatan", True, 210, 230, -6, 440, 410),
    Junction("J9", 2110, "Aspgatan", False, 200, 200, 4, 180, 200),
)
EB_ENTRY_VEH_H, WB_ENTRY_VEH_H = 1020.0, 580.0
# share of arterial traffic turning off at a junction, and the left share of that
EB_OFF = {False: (0.10, 0.4), True: (0.22, 0.5)}
WB_OFF = {False: (0.10, 0.4), True: (0.20, 0.45)}
# cross-street entries from the north / south fringe: share turning east (towards the city), west, straight on;
# permissive lefts (north: east, south: west) kept smaller than rights, which only yield to pedestrians
CROSS_SPLIT = {"N": (0.25, 0.25, 0.50), "S": (0.45, 0.15, 0.40)}
MIN_FLOW_VEH_H = 2.0
PED_CROSS_PER_H = {False: 40.0, True: 80.0}  # per direction, north <-> south across the arterial
PED_ALONG_PER_H = 30.0
BUS_PERIOD_S = 360
BUS_DWELL_S = 20
BUS_SCHEDULE_M_S = 12.0

SIDES = ("N", "E", "S", "W")
OPPOSITE = {"N": "S", "S": "N", "E": "W", "W": "E"}
RIGHT_OUT = {"W": "S", "N": "W", "E": "N", "S": "E"}  # approach side -> side the right turn leaves by
LEFT_OUT = {k: OPPOSITE[v] for k, v in RIGHT_OUT.items()}


# -------------------------------------------------------------------------------------------------- geometry
def arterial_nodes() -> list[tuple[str, float]]:
    """West-to-east node chain of the arterial, pocket nodes included."""
    out = [("W", W_X)]
    for j in JUNCTIONS:
        if j.major:
            out.append((f"P{j.id[1:]}w", j.x_m - POCKET_M))
        out.append((j.id, j.x_m))
        if j.major:
            out.append((f"P{j.id[1:]}e", j.x_m + POCKET_M))
    out.append(("E", E_X))
    return out


def _is_pocket(into: str, frm: str) -> bool:
    """The edge frm -> into is a left-turn pocket approach of a major junction."""
    return into.startswith("J") and frm.startswith("P") and any(j.id == into and j.major for j in JUNCTIONS)


def edges() -> dict[str, tuple[str, str, int, str]]:
    """edge id -> (from, to, vehicle lanes, street name); lane 0 of every edge is a sidewalk."""
    out: dict[str, tuple[str, str, int, str]] = {}
    chain = [n for n, _ in arterial_nodes()]
    for a, b in zip(chain, chain[1:], strict=False):
        out[f"{a}-{b}"] = (a, b, 3 if _is_pocket(b, a) else 2, ARTERIAL)
        out[f"{b}-{a}"] = (b, a, 3 if _is_pocket(a, b) else 2, ARTERIAL)
    for j in JUNCTIONS:
        k = j.id[1:]
        lanes = 2 if j.major else 1
        for fringe in (f"N{k}", f"S{k}"):
            out[f"{fringe}-{j.id}"] = (fringe, j.id, lanes, j.street)
            out[f"{j.id}-{fringe}"] = (j.id, fringe, lanes, j.street)
    return out


def arms(j: Junction) -> tuple[dict[str, str], dict[str, str]]:
    """(approach edge by side, exit edge by side) of a signalised junction."""
    chain = [n for n, _ in arterial_nodes()]
    i = chain.index(j.id)
    west, east, k = chain[i - 1], chain[i + 1], j.id[1:]
    inc = {"N": f"N{k}-{j.id}", "E": f"{east}-{j.id}", "S": f"S{k}-{j.id}", "W": f"{west}-{j.id}"}
    out = {"N": f"{j.id}-N{k}", "E": f"{j.id}-{east}", "S": f"{j.id}-S{k}", "W": f"{j.id}-{west}"}
    return inc, out


def lane_connections(j: Junction, e: dict) -> list[tuple[str, str, str, int, int]]:
    """(approach side, move r/s/l, exit side, from lane, to lane) in link-index order: approaches N, E, S, W;
    right, through, left; lanes right to left."""
    inc, out = arms(j)
    rows = []
    for side in SIDES:
        n_in = e[inc[side]][2]
        n_out = {s: e[out[s]][2] for s in SIDES}
        rows.append((side, "r", RIGHT_OUT[side], 1, 1))
        through = OPPOSITE[side]
        for lane in range(1, min(n_in, 2, n_out[through]) + 1):
            rows.append((side, "s", through, lane, lane))
        if n_out[through] == 1 and n_in >= 2:  # never: through exits have as many lanes as through approaches
            raise ValueError(f"{j.id}: lane drop on {side}")
        rows.append((side, "l", LEFT_OUT[side], n_in, n_out[LEFT_OUT[side]]))
    return rows


def stage_of(j: Junction, side: str, move: str) -> str:
    if side in "NS":
        return "cross"
    if j.major and move == "l":
        return "left"
    return "arterial"


def stage_names(j: Junction) -> tuple[str, ...]:
    return ("arterial", "left", "cross") if j.major else ("arterial", "cross")


def all_red_s(j: Junction) -> int:
    return 2 if j.major else 1


# ---------------------------------------------------------------------------------------------------- demand
def _eb_path(frm: str, to: str) -> list[str]:
    chain = [n for n, _ in arterial_nodes()]
    a, b = chain.index(frm), chain.index(to)
    nodes = chain[a : b + 1] if b >= a else chain[b : a + 1][::-1]
    return [f"{x}-{y}" for x, y in zip(nodes, nodes[1:], strict=False)]


def routes() -> list[tuple[str, list[str], float, str]]:
    """(route id, edges, peak veh/h, vehicle type) for general traffic and the bus line."""
    out: list[tuple[str, list[str], float, str]] = []
    for direction, entry_q, off, order in (("EB", EB_ENTRY_VEH_H, EB_OFF, JUNCTIONS),
                                           ("WB", WB_ENTRY_VEH_H, WB_OFF, JUNCTIONS[::-1])):
        start, end = ("W", "E") if direction == "EB" else ("E", "W")
        # (origin node, first junction index it may turn off at, veh/h, leading edge)
        entries = [(start, 0, entry_q, None)]
        for i, j in enumerate(order):
            k = j.id[1:]
            pick = 0 if direction == "EB" else 1
            entries.append((f"N{k}", i + 1, j.q_north * CROSS_SPLIT["N"][pick], f"N{k}-{j.id}"))
            entries.append((f"S{k}", i + 1, j.q_south * CROSS_SPLIT["S"][pick], f"S{k}-{j.id}"))
        for origin, first, q, lead in entries:
            remaining = q
            head = [lead] if lead else []
            join = order[first - 1].id if lead else start  # where the route reaches the arterial
            for j in order[first:]:
                p, left = off[j.major]
                k = j.id[1:]
                north = left if direction == "EB" else 1 - left  # EB turns left to the north, WB to the south
                for fringe, share in ((f"N{k}", north), (f"S{k}", 1 - north)):
                    qd = remaining * p * share
                    if qd >= MIN_FLOW_VEH_H:
                        path = head + _eb_path(join, j.id) + [f"{j.id}-{fringe}"]
                        out.append((f"{origin}.{fringe}", path, qd, TRAFFIC_MIX))
                remaining *= 1 - p
            out.append((f"{origin}.{end}", head + _eb_path(join, end), remaining, TRAFFIC_MIX))
    for j in JUNCTIONS:
        k = j.id[1:]
        out.append((f"N{k}.S{k}", [f"N{k}-{j.id}", f"{j.id}-S{k}"], j.q_north * CROSS_SPLIT["N"][2], TRAFFIC_MIX))
        out.append((f"S{k}.N{k}", [f"S{k}-{j.id}", f"{j.id}-N{k}"], j.q_south * CROSS_SPLIT["S"][2], TRAFFIC_MIX))
    period_veh_h = 3600.0 / BUS_PERIOD_S
    out.append(("bus4.EB", _eb_path("W", "E"), period_veh_h, "bus"))
    out.append(("bus4.WB", _eb_path("E", "W"), period_veh_h, "bus"))
    return out


def bus_stops() -> list[tuple[str, str, str, float, float]]:
    """(stop id, stop name, edge, start m, end m): kerbside stops on the right vehicle lane, far side."""
    return [
        ("EB1", "Tallgatan", "J1-J2", 35, 60), ("EB2", "Lindgatan", "J4-P5w", 40, 65),
        ("EB3", "Askgatan", "J6-J7", 35, 60), ("EB4", "Rönngatan", "P8e-J9", 30, 55),
        ("WB1", "Aspgatan", "J9-P8e", 30, 55), ("WB2", "Lönngatan", "J7-J6", 35, 60),
        ("WB3", "Almgatan", "P5w-J4", 40, 65), ("WB4", "Björkgatan", "J2-J1", 35, 60),
    ]


def bus_timetable(path: list[str], stops) -> list[tuple[str, int]]:
    """(stop id, scheduled departure s after the bus starts) for the stops on ``path``: free-flow running at
    ``BUS_SCHEDULE_M_S`` plus dwell, so buses are rarely early and never held; the times let SUMO route persons
    by bus."""
    x = dict(arterial_nodes())
    e = edges()
    out, dwell = [], 0
    for sid, _, edge, _, end_m in stops:
        if edge not in path:
            continue
        start = x[e[edge][0]]
        along = abs(start - x[e[path[0]][0]]) + end_m
        dwell += BUS_DWELL_S
        out.append((sid, int(along / BUS_SCHEDULE_M_S) + dwell))
    return sorted(out, key=lambda s: s[1])


def movement_flows(rts) -> dict[tuple[str, str], float]:
    """(approach edge, exit edge) -> pcu/h at peak."""
    flows: dict[tuple[str, str], float] = {}
    for _, path, q, vtype in rts:
        pcu = TRAFFIC_PCU if vtype == TRAFFIC_MIX else (12.0 + 2.5) / 7.5
        for a, b in zip(path, path[1:], strict=False):
            flows[(a, b)] = flows.get((a, b), 0.0) + q * pcu
    return flows
