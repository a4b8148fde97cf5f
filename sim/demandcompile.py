"""Compile SUMO demand (vehicles with routes, trips, flows) and the scenario window into ``models.demand.Demand``.

* ``<vehicle>`` with a ``route`` attribute or an embedded ``<route>`` / ``<routeDistribution>`` (the last route, as
  duarouter's alternatives mark it, else the most probable);
* ``<trip>`` and ``<flow from= to= [via=]>`` are routed here on free-flow travel times (Dijkstra over the edge
  graph of the net's connections), as SUMO's own routing would at an empty network;
* ``<flow>`` with ``vehsPerHour``, ``period`` (also ``exp(rate)``), ``probability`` or ``number``: expected rates,
  spread over the flow's active time.

Only vehicles departing within [begin, end) count (SUMO never loads earlier ones). Each is weighted by the
passenger-car units of its vehicle class. Arrivals are binned by the free-flow time at which they reach each stop
line; arrivals after ``end`` fall outside the window and are dropped.

Buses: a vehicle whose vType has vClass ``bus`` or ``coach``, or whose vType id contains "bus" (any case; also an
undeclared type id), is a bus. Its arrivals are also counted in ``Demand.mov_bus_veh_h`` (the bus part of
``mov_arrival_veh_h``, same unit); a vTypeDistribution counts with the probability-weighted share of its bus
members. The optimiser's ``--bus-weight`` reads it.

Pedestrians: every ``<walk>`` of a ``<person>`` / ``<personFlow>`` departing in the window (``from``/``to`` edges or
an ``edges`` list) is routed on the net's pedestrian graph (sidewalks, walking areas and crossings as the net's
connections join them, walked in either direction, shortest walking distance: what SUMO's pedestrian router does
on an empty network) and the crossings on its path get its rate: ``Demand.crossing_ped_h`` (pedestrians/h, window
mean, per crossing of the Network). Walks that cannot be routed so (no ``to`` edge, a stop as target,
``personTrip``) are counted in ``Demand.n_walks_unrouted``. The optimiser's ``--ped-weight`` reads it.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from engine.errors import ScenarioError
from models.demand import Demand
from models.network import Network
from sim.netcompile import parse_xml

# passenger-car units by SUMO vehicle class (HCM-style heavy-vehicle equivalents)
PCU_BY_VCLASS = {
    "passenger": 1.0, "private": 1.0, "taxi": 1.0, "evehicle": 1.0, "emergency": 1.0, "authority": 1.0,
    "delivery": 1.5, "truck": 2.0, "bus": 2.0, "coach": 2.0, "trailer": 2.5, "tram": 2.5,
    "motorcycle": 0.5, "moped": 0.5, "bicycle": 0.2, "pedestrian": 0.0,
}
DEFAULT_VTYPE_CLASS = {"DEFAULT_VEHTYPE": "passenger", "DEFAULT_BIKETYPE": "bicycle", "DEFAULT_PEDTYPE": "pedestrian"}
BUS_VCLASSES = ("bus", "coach")


def is_bus_vtype(type_id: str, vclass: str | None) -> bool:
    """A bus for the optimiser's bus weight: vClass bus or coach, or a vType id containing "bus"."""
    return (vclass in BUS_VCLASSES) or "bus" in (type_id or "").lower()


class _Router:
    """Free-flow shortest paths between edges, on the edge-to-edge graph of the net's connections."""

    def __init__(self, net_path: Path, net: Network):
        root = parse_xml(net_path)
        edges = [e.get("id") for e in root.iter("edge") if e.get("function", "normal") == "normal"]
        self.index = {e: i for i, e in enumerate(edges)}
        self.edges = edges
        cost = np.array([net.edge_length_m.get(e, 1.0) / max(net.edge_speed_m_s.get(e, 13.89), 1e-3) for e in edges])
        rows, cols = set(), []
        for c in root.iter("connection"):
            a, b = c.get("from"), c.get("to")
            if a in self.index and b in self.index and (a, b) not in rows:
                rows.add((a, b))
                cols.append((self.index[a], self.index[b]))
        r = np.array([x for x, _ in cols], dtype=np.int64)
        k = np.array([y for _, y in cols], dtype=np.int64)
        self.graph = csr_matrix((cost[k] + 1e-6, (r, k)), shape=(len(edges), len(edges)))
        self._cache: dict[int, np.ndarray] = {}

    def route(self, frm: str, to: str, via: list[str] | None = None) -> list[str] | None:
        stops = [frm, *(via or []), to]
        out = [frm]
        for a, b in zip(stops[:-1], stops[1:], strict=True):
            ia, ib = self.index[a], self.index[b]
            if ia == ib:
                continue
            if ia not in self._cache:
                _, pred = dijkstra(self.graph, indices=ia, return_predecessors=True)
                self._cache[ia] = pred
            pred = self._cache[ia]
            if pred[ib] < 0:
                return None
            path = []
            j = ib
            while j != ia:
                path.append(j)
                j = pred[j]
            out.extend(self.edges[j] for j in reversed(path))
        return out


class _PedRouter:
    """Shortest walking paths on the net's pedestrian graph: nodes are the edges that the net's connections join to
    walking areas and crossings (sidewalked edges, walking areas, crossings), undirected (pedestrians walk both
    ways); a path costs the lengths of the nodes it passes (halves at its two ends)."""

    def __init__(self, net_path: Path):
        root = parse_xml(net_path)
        length: dict[str, float] = {}
        self.crossings: set[str] = set()
        for e in root.iter("edge"):
            lane = e.find("lane")
            if lane is None:
                continue
            length[e.get("id")] = float(lane.get("length", "0"))
            if e.get("function") == "crossing":
                self.crossings.add(e.get("id"))
        special = {e.get("id") for e in root.iter("edge") if e.get("function") in ("walkingarea", "crossing")}
        pairs = set()
        for c in root.iter("connection"):
            a, b = c.get("from"), c.get("to")
            if (a in special or b in special) and a in length and b in length and a != b:
                pairs.add((min(a, b), max(a, b)))
        nodes = sorted({x for ab in pairs for x in ab})
        self.index = {n: i for i, n in enumerate(nodes)}
        self.nodes = nodes
        r = np.array([self.index[a] for a, b in pairs] + [self.index[b] for a, b in pairs], np.int64)
        k = np.array([self.index[b] for a, b in pairs] + [self.index[a] for a, b in pairs], np.int64)
        w = np.array([0.5 * (length[self.nodes[i]] + length[self.nodes[j]]) + 1e-6 for i, j in zip(r, k, strict=True)])
        self.graph = csr_matrix((w, (r, k)), shape=(len(nodes), len(nodes)))
        self._pred: dict[int, np.ndarray] = {}
        self._cache: dict[tuple[str, str], tuple[str, ...] | None] = {}

    def crossings_between(self, a: str, b: str) -> tuple[str, ...] | None:
        """Crossings on the shortest walk from edge a to edge b (None: no walk joins them)."""
        key = (a, b)
        if key in self._cache:
            return self._cache[key]
        out: tuple[str, ...] | None = ()
        if a != b:
            ia, ib = self.index.get(a), self.index.get(b)
            if ia is None or ib is None:
                out = None
            else:
                if ia not in self._pred:
                    _, self._pred[ia] = dijkstra(self.graph, directed=False, indices=ia, return_predecessors=True)
                pred = self._pred[ia]
                if pred[ib] < 0:
                    out = None
                else:
                    path, j = [], ib
                    while j != ia:
                        path.append(self.nodes[j])
                        j = int(pred[j])
                    out = tuple(n for n in reversed(path) if n in self.crossings)
        self._cache[key] = out
        return out


def _flow_rate_veh_s(el: ET.Element, begin: float, end: float, path: Path) -> float:
    if el.get("vehsPerHour") is not None:
        return float(el.get("vehsPerHour")) / 3600.0
    if el.get("perHour") is not None:
        return float(el.get("perHour")) / 3600.0
    if el.get("period") is not None:
        p = el.get("period").strip()
        if p.startswith("exp(") and p.endswith(")"):
            return float(p[4:-1])
        return 1.0 / float(p)
    if el.get("probability") is not None:
        return float(el.get("probability"))
    if el.get("number") is not None:
        return float(el.get("number")) / max(end - begin, 1e-9)
    raise ScenarioError(f"flow {el.get('id')!r} has no vehsPerHour, period, probability or number", path)


def compile_demand(
    net: Network,
    net_path: str | Path,
    route_files: list[str | Path] | tuple,
    begin_s: float,
    end_s: float,
    bin_s: float = 900.0,
    additional_files: list[str | Path] | tuple = (),
) -> Demand:
    """Demand arrays of ``route_files`` over the window [begin_s, end_s) (see the module docstring)."""
    net_path = Path(net_path)
    if end_s <= begin_s:
        raise ScenarioError(f"empty demand window: begin {begin_s:g} s, end {end_s:g} s", net_path)
    n_bins = max(1, math.ceil((end_s - begin_s) / bin_s - 1e-9))
    M = net.n_movements
    counts = np.zeros((n_bins, M))
    bus_counts = np.zeros((n_bins, M))
    entry = np.zeros((n_bins, M))
    mov_total = np.zeros(M)
    feed_w: dict[tuple[int, int], float] = defaultdict(float)
    feed_t: dict[tuple[int, int], float] = defaultdict(float)

    edge_signal = {net.appr_edge[a]: int(net.appr_signal[a]) for a in range(net.n_approaches)}
    tt_edge = {e: net.edge_length_m[e] / max(net.edge_speed_m_s[e], 1e-3) for e in net.edge_length_m}
    router: _Router | None = None
    n_vehicles = 0
    n_pcu = 0.0
    n_buses = 0.0
    n_persons = 0
    n_routed = 0
    crossing_pos = {c: i for i, c in enumerate(net.crossing_ids)}
    crossing_walks = np.zeros(len(net.crossing_ids))  # pedestrians (expected number) over the window
    n_unrouted = 0.0
    ped_router: _PedRouter | None = None

    def add_walks(el: ET.Element, n: float) -> None:
        """Attribute ``n`` pedestrians doing the walks of person / personFlow ``el`` to the crossings they use."""
        nonlocal ped_router, n_unrouted
        for stage in el:
            if stage.tag == "personTrip":
                n_unrouted += n
                continue
            if stage.tag != "walk":
                continue
            if stage.get("edges"):
                edges = stage.get("edges").split()
            elif stage.get("from") and stage.get("to"):
                edges = [stage.get("from"), stage.get("to")]
            else:
                n_unrouted += n
                continue
            if not crossing_pos:
                continue
            if ped_router is None:
                ped_router = _PedRouter(net_path)
            used: list[str] = []
            for a, b in zip(edges[:-1], edges[1:], strict=True):
                cr = ped_router.crossings_between(a, b)
                if cr is None:
                    used = []
                    n_unrouted += n
                    break
                used += cr
            for c in used:
                if c in crossing_pos:
                    crossing_walks[crossing_pos[c]] += n
    route_cache: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def movements_on(edges: tuple[str, ...], path: Path, what: str) -> tuple[list[int], list[float]]:
        """Signalised movements along a route and the free-flow time from departure to each stop line."""
        hit = route_cache.get(edges)
        if hit is not None:
            return hit
        movs, times = [], []
        t = 0.0
        for k, e in enumerate(edges):
            if e not in tt_edge:
                raise ScenarioError(f"{what} uses edge {e!r}, which is not in the network", path)
            t += tt_edge[e]
            if k + 1 < len(edges) and e in edge_signal:
                m = net.movement_index.get((net.signal_ids[edge_signal[e]], e, edges[k + 1]))
                if m is not None:
                    movs.append(m)
                    times.append(t)
        route_cache[edges] = (movs, times)
        return movs, times

    def add_route(edges: tuple[str, ...], t0: float, t1: float | None, weight: float, path: Path, what: str,
                  bus_share: float = 0.0) -> None:
        """A vehicle departing at t0 (t1 None) or a flow of ``weight`` pcu/s over [t0, t1); ``bus_share``: the
        part of ``weight`` that buses bring (0..1)."""
        movs, times = movements_on(edges, path, what)
        if not movs:
            return
        for j, (m, dt) in enumerate(zip(movs, times, strict=True)):
            if t1 is None:
                b = int((t0 + dt - begin_s) // bin_s)
                if 0 <= b < n_bins and t0 + dt < end_s:
                    counts[b, m] += weight
                    if bus_share:
                        bus_counts[b, m] += weight * bus_share
                    if j == 0:
                        entry[b, m] += weight
                    mass = weight
                else:
                    mass = 0.0
            else:
                lo = np.clip(begin_s + bin_s * np.arange(n_bins), t0 + dt, min(t1 + dt, end_s))
                hi = np.clip(begin_s + bin_s * np.arange(1, n_bins + 1), t0 + dt, min(t1 + dt, end_s))
                add = weight * np.maximum(hi - lo, 0.0)
                counts[:, m] += add
                if bus_share:
                    bus_counts[:, m] += add * bus_share
                if j == 0:
                    entry[:, m] += add
                mass = float(add.sum())
            mov_total[m] += mass
            if j + 1 < len(movs) and mass > 0:
                m2 = movs[j + 1]
                feed_w[(m, m2)] += mass
                feed_t[(m, m2)] += mass * (times[j + 1] - dt)

    # passenger-car units per vehicle type id; a vTypeDistribution gets its probability-weighted mean
    pcu_of: dict[str, float] = {k: PCU_BY_VCLASS[v] for k, v in DEFAULT_VTYPE_CLASS.items()}
    # per vehicle type id: (expected buses per vehicle, share of its pcu that buses bring); distributions mix
    bus_of: dict[str, tuple[float, float]] = {k: (0.0, 0.0) for k in DEFAULT_VTYPE_CLASS}

    def bus_info(type_id: str) -> tuple[float, float]:
        hit = bus_of.get(type_id)
        if hit is not None:
            return hit
        return (1.0, 1.0) if is_bus_vtype(type_id, None) else (0.0, 0.0)

    def read_vtypes(root: ET.Element) -> None:
        for vt in root.iter("vType"):
            pcu_of[vt.get("id")] = PCU_BY_VCLASS.get(vt.get("vClass", "passenger"), 1.0)
            bus = 1.0 if is_bus_vtype(vt.get("id"), vt.get("vClass", "passenger")) else 0.0
            bus_of[vt.get("id")] = (bus, bus)
        for dist in root.iter("vTypeDistribution"):
            ids = [vt.get("id") for vt in dist.iter("vType")] + (dist.get("vTypes") or "").split()
            probs = [float(vt.get("probability", "1")) for vt in dist.iter("vType")]
            if dist.get("probabilities"):
                probs += [float(x) for x in dist.get("probabilities").split()]
            probs += [1.0] * (len(ids) - len(probs))
            total = sum(probs[: len(ids)])
            if ids and total > 0:
                pcu_of[dist.get("id")] = sum(pcu_of.get(i, 1.0) * p for i, p in zip(ids, probs, strict=False)) / total
                n_bus = sum(bus_info(i)[0] * p for i, p in zip(ids, probs, strict=False)) / total
                pcu_bus = sum(pcu_of.get(i, 1.0) * bus_info(i)[0] * p for i, p in zip(ids, probs, strict=False))
                mean_pcu = pcu_of[dist.get("id")] * total
                bus_of[dist.get("id")] = (n_bus, pcu_bus / mean_pcu if mean_pcu > 0 else n_bus)

    for add in additional_files:
        read_vtypes(parse_xml(Path(add)))

    for rf in route_files:
        rf = Path(rf)
        root = parse_xml(rf)
        read_vtypes(root)
        named_routes: dict[str, tuple[str, ...]] = {}
        for r in root.iter("route"):
            if r.get("id") is not None and r.get("edges") is not None:
                named_routes[r.get("id")] = tuple(r.get("edges").split())
        for rd in root.iter("routeDistribution"):
            if rd.get("id") is not None:
                rs = [tuple(r.get("edges").split()) for r in rd.iter("route") if r.get("edges")]
                if rs:
                    named_routes[rd.get("id")] = rs[-1]

        def pcu(el: ET.Element) -> float:
            return pcu_of.get(el.get("type", "DEFAULT_VEHTYPE"), 1.0)

        def embedded_route(el: ET.Element, named_routes=named_routes, rf=rf) -> tuple[str, ...] | None:
            rd = el.find("routeDistribution")
            if rd is not None:
                rs = list(rd.iter("route"))
                last = rd.get("last")
                pick = rs[int(last)] if last is not None and int(last) < len(rs) else max(
                    rs, key=lambda r: float(r.get("probability", "1"))
                )
                return tuple(pick.get("edges").split())
            r = el.find("route")
            if r is not None and r.get("edges"):
                return tuple(r.get("edges").split())
            ref = el.get("route")
            if ref is not None:
                if ref not in named_routes:
                    raise ScenarioError(f"{el.tag} {el.get('id')!r} refers to unknown route {ref!r}", rf)
                return named_routes[ref]
            return None

        def routed(el: ET.Element, rf=rf) -> tuple[str, ...] | None:
            nonlocal router, n_routed
            frm, to = el.get("from"), el.get("to")
            if frm is None or to is None:
                raise ScenarioError(f"{el.tag} {el.get('id')!r} has neither a route nor from/to edges", rf)
            via = (el.get("via") or "").split()
            for e in (frm, to, *via):
                if e not in tt_edge:
                    raise ScenarioError(f"{el.tag} {el.get('id')!r} uses edge {e!r}, which is not in the network", rf)
            if router is None:
                router = _Router(net_path, net)
            r = router.route(frm, to, via)
            n_routed += 1
            return None if r is None else tuple(r)

        for el in root:
            tag = el.tag
            if tag in ("person", "personFlow"):
                if tag == "person":
                    d = el.get("depart", "")
                    if d.replace(".", "", 1).isdigit() and begin_s <= float(d) < end_s:
                        n_persons += 1
                        add_walks(el, 1.0)
                else:
                    b = max(float(el.get("begin", begin_s)), begin_s)
                    e = min(float(el.get("end", end_s)), end_s)
                    if e > b:
                        n_p = _flow_rate_veh_s(el, b, e, rf) * (e - b)
                        n_persons += round(n_p)
                        add_walks(el, n_p)
                continue
            if tag not in ("vehicle", "trip", "flow"):
                continue
            what = f"{tag} {el.get('id')!r}"
            if tag in ("vehicle", "trip"):
                d = el.get("depart", "0")
                try:
                    t0 = float(d)
                except ValueError:
                    continue  # 'triggered' / 'containerTriggered': not scheduled demand
                if not begin_s <= t0 < end_s:
                    continue
                edges = embedded_route(el) if tag == "vehicle" else None
                if edges is None:
                    edges = routed(el)
                if edges is None:
                    continue
                w = pcu(el)
                n_bus, bus_share = bus_info(el.get("type", "DEFAULT_VEHTYPE"))
                n_vehicles += 1
                n_pcu += w
                n_buses += n_bus
                add_route(edges, t0, None, w, rf, what, bus_share)
            else:
                fb = float(el.get("begin", begin_s))
                fe = float(el.get("end", fb + 3600.0 if el.get("number") is None else end_s))
                rate = _flow_rate_veh_s(el, fb, fe, rf)
                b, e = max(fb, begin_s), min(fe, end_s)
                if e <= b or rate <= 0:
                    continue
                edges = embedded_route(el)
                if edges is None:
                    edges = routed(el)
                if edges is None:
                    continue
                w = pcu(el)
                n_bus, bus_share = bus_info(el.get("type", "DEFAULT_VEHTYPE"))
                n = rate * (e - b)
                n_vehicles += round(n)
                n_pcu += w * n
                n_buses += n_bus * n
                add_route(edges, b, e, w * rate, rf, what, bus_share)

    if n_vehicles == 0:
        files = ", ".join(Path(r).name for r in route_files) or "(no route files)"
        raise ScenarioError(
            f"no vehicle departs within the window [{begin_s:g}, {end_s:g}) s in {files}",
            route_files[0] if route_files else net_path,
        )
    widths = np.minimum(begin_s + bin_s * np.arange(1, n_bins + 1), end_s) - (begin_s + bin_s * np.arange(n_bins))
    rate = counts * (3600.0 / widths)[:, None]
    bus_rate = bus_counts * (3600.0 / widths)[:, None]
    entry_rate = entry * (3600.0 / widths)[:, None]
    appr_total = np.zeros(net.n_approaches)
    np.add.at(appr_total, net.mov_approach, mov_total)
    turn = np.divide(mov_total, appr_total[net.mov_approach], out=np.zeros(M), where=appr_total[net.mov_approach] > 0)
    pairs = sorted(feed_w)
    ptr = np.zeros(M + 1, np.int32)
    for m, _ in pairs:
        ptr[m + 1] += 1
    ptr = np.cumsum(ptr).astype(np.int32)
    feed_mov = np.array([m2 for _, m2 in pairs], np.int32)
    feed_share = np.array([feed_w[k] / mov_total[k[0]] for k in pairs], np.float64)
    feed_tt = np.array([feed_t[k] / feed_w[k] for k in pairs], np.float64)
    return Demand(
        begin_s=float(begin_s),
        end_s=float(end_s),
        bin_s=float(bin_s),
        mov_arrival_veh_h=rate,
        mov_entry_veh_h=entry_rate,
        mov_turn_ratio=turn,
        mov_bus_veh_h=bus_rate,
        feed_ptr=ptr,
        feed_mov=feed_mov,
        feed_share=feed_share,
        feed_travel_s=feed_tt,
        n_vehicles=int(n_vehicles),
        n_pcu=float(n_pcu),
        n_buses=int(round(n_buses)),
        crossing_ped_h=crossing_walks * (3600.0 / (end_s - begin_s)),
        n_walks_unrouted=int(round(n_unrouted)),
        n_persons=int(n_persons),
        n_routed_trips=int(n_routed),
        sources=tuple(str(r) for r in route_files),
    )
