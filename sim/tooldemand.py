"""The scenario's demand as SUMO's signal tools can read it: one file of routed vehicles inside the window.

tlsCycleAdaptation.py counts ``<vehicle>`` elements with a route only; tlsCoordinator.py reads the ``<route>``
elements of one file. ``window_demand`` turns whatever the scenario ships into that, as an engineer would:

- ``<trip>``, ``<flow>`` with from/to and ``<vehicle>`` without a route (cologne1, ingolstadt1: trips) are routed
  with the wheel's ``duarouter`` restricted to the window (``--begin/--end``); it uses the same free-flow shortest
  paths SUMO uses when it inserts a trip. Vehicles that already have a route are never re-routed (duarouter would
  change 112 of cologne3's routes).
- ``<flow>`` with a route (the bundled scenarios) is expanded into its departures at its mean rate (vehsPerHour,
  period, probability or number), evenly spaced.
- Several route files are merged into the one file.
- Vehicles departing outside the window are dropped (cologne3's route file starts 1700 s before its window).
- The tool weighs vehicles by PCE keyed on the vehicle's *type id* (``bus`` 3.5, ``bicycle`` 0.2, ...). Each
  vehicle's type is rewritten to its vType's vClass so that trucks and buses of any type id count as such;
  vTypeDistributions are resolved deterministically in proportion to their probabilities.
- The tool assumes data shorter than an hour when the last departure is before begin + 3599 s and scales it up
  additively. Window demand is one whole hour, so a zero-flow sentinel (a one-edge route, which the tool and the
  coordinator count nowhere) departs at begin + 3599 s (arterial4x4's last vehicle departs at 2991 s: the tool
  would add 17 %). Windows shorter than an hour are tiled with shifted copies of themselves to one hour
  (stationary demand, Webster's own assumption); for windows longer than an hour the busiest hour (PCE) is used.
- Persons, containers and ``depart="triggered"`` vehicles are ignored (the tool ignores pedestrians).

Every conversion applied is listed in ``ToolDemand.conversions``. Also here: ``run_tool``, which runs a SUMO tool or
binary and turns a failure into a one-line GronvagError naming the scenario and the tool.
"""

from __future__ import annotations

import gzip
import math
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import GronvagError
from sim import sumo
from sim.planio import atomic_write
from sim.scenario import Scenario

HOUR_S = 3600.0
TOOL_TIMEOUT_S = 600.0
# vClass -> the type id tlsCycleAdaptation.py's PCE table knows (bicycle 0.2, moped/motorcycle 0.5, heavy 3.5)
_PCE_CLASS = {c: c for c in ("bicycle", "moped", "motorcycle", "truck", "trailer", "bus", "coach")}
_NOISE = ("pj_obj_create", "proj.db")  # harmless PROJ messages of the wheel's binaries


@dataclass
class ToolDemand:
    """Window demand for the tools: (depart_s, vehicle id, PCE type id, edges) per vehicle."""

    vehicles: list[tuple[float, str, str, str]] = field(default_factory=list)
    conversions: list[str] = field(default_factory=list)
    tool_begin_s: float = 0.0




def parse_any(path: Path) -> ET.Element:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return ET.parse(f).getroot()
        return ET.parse(path).getroot()
    except (ET.ParseError, OSError, EOFError) as exc:
        raise GronvagError(f"cannot read XML ({exc})", path) from None


def float_attr(value: str | None, default: float | None = None) -> float | None:
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        return default




def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and not ln.startswith(_NOISE)]
        if lines:
            return lines[-1]
    return "no message"


def run_tool(scenario_name: str, tool_name: str, cmd: list[str], cwd: Path, log: Path) -> str:
    """Run a SUMO tool or binary; its output goes to ``log``. Failure -> GronvagError naming scenario and tool."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=sumo.tool_env(), capture_output=True, text=True,
                              timeout=TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise GronvagError(f"{scenario_name}: {tool_name} did not finish within {TOOL_TIMEOUT_S:g} s") from None
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}\n", encoding="utf-8")
    if proc.returncode != 0:
        raise GronvagError(f"{scenario_name}: {tool_name} failed: {_last_line(proc.stderr, proc.stdout)}", log)
    return proc.stdout




class _Types:
    """vType ids -> vClass, vTypeDistributions resolved deterministically (largest accumulated credit wins)."""

    def __init__(self) -> None:
        self.vclass: dict[str, str] = {}
        self.dists: dict[str, list[tuple[str, float]]] = {}
        self._credit: dict[str, list[float]] = {}

    def read(self, root: ET.Element) -> None:
        for vt in root.iter("vType"):
            self.vclass[vt.get("id")] = vt.get("vClass", "passenger")
        for dist in root.iter("vTypeDistribution"):
            members = [(vt.get("id"), float_attr(vt.get("probability"), 1.0)) for vt in dist.findall("vType")]
            if not members and dist.get("vTypes"):
                ids = dist.get("vTypes").split()
                probs = [float(p) for p in (dist.get("probabilities") or "").split()] or [1.0] * len(ids)
                members = list(zip(ids, probs, strict=False))
            if members:
                self.dists[dist.get("id")] = members

    def pce_type(self, type_id: str | None, depth: int = 0) -> str:
        if type_id in self.dists and depth < 8:
            members = self.dists[type_id]
            total = sum(p for _, p in members) or 1.0
            credit = self._credit.setdefault(type_id, [0.0] * len(members))
            for k, (_, p) in enumerate(members):
                credit[k] += p / total
            k = max(range(len(members)), key=credit.__getitem__)
            credit[k] -= 1.0
            return self.pce_type(members[k][0], depth + 1)
        vclass = self.vclass.get(type_id or "", "passenger")
        if type_id in _PCE_CLASS and type_id not in self.vclass:  # SUMO's default types named after their class
            vclass = type_id
        return _PCE_CLASS.get(vclass, "passenger")


def _flow_departures(flow: ET.Element, lo_s: float, hi_s: float) -> list[float]:
    """Departures of a ``<flow>`` inside [lo_s, hi_s) at its mean rate, evenly spaced from its begin."""
    b = float_attr(flow.get("begin"), 0.0)
    e = float_attr(flow.get("end"), None)
    number = flow.get("number")
    n_max = int(float(number)) if number is not None else None
    rate = flow.get("vehsPerHour") or flow.get("perHour")
    period_txt = flow.get("period")
    if rate is not None:
        period = HOUR_S / float(rate) if float(rate) > 0 else math.inf
    elif period_txt is not None:
        if period_txt.startswith("exp("):  # Poisson arrivals: mean headway 1/rate
            period = 1.0 / float(period_txt[4:-1])
        else:
            period = float(period_txt)
    elif flow.get("probability") is not None:
        p = float(flow.get("probability"))
        period = 1.0 / p if p > 0 else math.inf
    elif n_max is not None and e is not None and n_max > 0:
        period = (e - b) / n_max
    else:
        return []
    if e is None:
        e = b + n_max * period if n_max is not None else 86400.0  # SUMO's default end: 24 h
    if not math.isfinite(period) or period <= 0:
        return []
    k0 = max(0, math.ceil((lo_s - b) / period - 1e-9))
    out = []
    k = k0
    while True:
        t = b + k * period
        if t >= min(e, hi_s) or (n_max is not None and k >= n_max):
            return out
        out.append(t)
        k += 1


def _route_of(el: ET.Element, named: dict[str, str], dists: dict[str, str]) -> str | None:
    """Edges of an element's route: embedded ``<route>``, embedded ``<routeDistribution>`` (its most probable
    route) or a ``route`` attribute naming a route or a route distribution. None when it must be routed."""
    child = el.find("route")
    if child is not None and child.get("edges"):
        return child.get("edges")
    rdist = el.find("routeDistribution")
    if rdist is not None:
        return _most_probable(rdist, named)
    ref = el.get("route")
    if ref is not None:
        return named.get(ref) or dists.get(ref)
    return None


def _most_probable(rdist: ET.Element, named: dict[str, str]) -> str | None:
    best, best_p = None, -1.0
    for r in rdist.findall("route"):
        edges = r.get("edges") or named.get(r.get("refId", ""))
        p = float_attr(r.get("probability"), 1.0)
        if edges and p > best_p:
            best, best_p = edges, p
    return best


def _depart(el: ET.Element, begin_s: float) -> float | None:
    d = el.get("depart", "0")
    if d == "begin":
        return begin_s
    return float_attr(d, None)


def window_demand(sc: Scenario, work: Path) -> ToolDemand:
    """All of the scenario's demand departing in [begin, end) as routed vehicles (see module docstring, 1.)."""
    dem = ToolDemand(tool_begin_s=sc.begin_s)
    if not sc.route_files:
        raise GronvagError(f"{sc.name}: the scenario has no route files: nothing for Webster to count")
    types = _Types()
    roots = []
    for path in sc.route_files:
        roots.append(parse_any(path))
    for path in sc.additional_files:
        types.read(parse_any(path))
    named: dict[str, str] = {}
    rdists: dict[str, str] = {}
    for root in roots:
        types.read(root)
        for r in root.iter("route"):
            if r.get("id") and r.get("edges"):
                named[r.get("id")] = r.get("edges")
    for root in roots:
        for rd in root.iter("routeDistribution"):
            if rd.get("id"):
                edges = _most_probable(rd, named)
                if edges:
                    rdists[rd.get("id")] = edges

    lo, hi = sc.begin_s, sc.end_s
    to_route_ids: set[str] = set()
    to_route_flows: set[str] = set()
    n_flows = n_vehicles = n_skipped = n_outside = n_persons = 0
    raw: list[tuple[float, str, str | None, str]] = []  # depart, id, type, edges
    for root in roots:
        for el in root:
            tag = el.tag
            if tag in ("person", "personFlow", "container", "containerFlow"):
                n_persons += 1
                continue
            if tag not in ("vehicle", "trip", "flow"):
                continue
            edges = _route_of(el, named, rdists) if tag != "trip" else None
            if tag == "flow":
                if edges is None:
                    to_route_flows.add(el.get("id"))
                    continue
                n_flows += 1
                for k, t in enumerate(_flow_departures(el, lo, hi)):
                    raw.append((t, f"{el.get('id')}.{k}", el.get("type"), edges))
                continue
            if edges is None:
                to_route_ids.add(el.get("id"))
                continue
            t = _depart(el, sc.begin_s)
            if t is None:
                n_skipped += 1
            elif lo <= t < hi:
                raw.append((t, el.get("id"), el.get("type"), edges))
                n_vehicles += 1
            else:
                n_outside += 1
    if n_vehicles:
        dem.conversions.append(f"{n_vehicles} vehicles with routes kept as they are")
    if n_flows:
        dem.conversions.append(f"{n_flows} flows with routes expanded into their departures at their mean rate")
    if n_outside:
        dem.conversions.append(f"{n_outside} vehicles departing outside the window [{lo:g}, {hi:g}) s dropped")
    if n_skipped:
        dem.conversions.append(f"{n_skipped} vehicles with a non-numeric depart (triggered, ...) ignored")
    if n_persons:
        dem.conversions.append(f"{n_persons} persons/containers ignored (the tool does not count pedestrians)")
    if len(sc.route_files) > 1:
        dem.conversions.append(f"{len(sc.route_files)} route files merged into one")

    if to_route_ids or to_route_flows:
        raw += _duarouter(sc, work, to_route_ids, to_route_flows, dem, types)

    raw = [r for r in raw if lo <= r[0] < hi]
    raw.sort(key=lambda r: (r[0], r[1]))
    if not raw:
        raise GronvagError(f"{sc.name}: no vehicle departs in the window [{lo:g}, {hi:g}) s: nothing for Webster")
    dem.vehicles = [(t, vid, types.pce_type(ty), edges) for t, vid, ty, edges in raw]
    n_heavy = sum(1 for v in dem.vehicles if v[2] != "passenger")
    dem.conversions.append(
        f"vehicle types rewritten to their vClass for the tool's PCE table ({n_heavy} non-passenger vehicles)")
    _fit_to_hour(sc, dem)
    return dem


def _duarouter(sc: Scenario, work: Path, ids: set[str], flows: set[str], dem: ToolDemand, types: _Types) -> list:
    """Route trips, from/to flows and route-less vehicles with duarouter, restricted to the window."""
    out = work / "duarouter.rou.xml"
    cmd = [sumo.binary("duarouter"), "-n", str(sc.net_file), "-r", ",".join(str(r) for r in sc.route_files),
           "-o", str(out), "--alternatives-output", str(work / "duarouter.rou.alt.xml"),
           "--begin", f"{sc.begin_s:g}", "--end", f"{sc.end_s:g}", "--ignore-errors", "true",
           "--no-step-log", "true", "--no-warnings", "true", "--output-prefix", ""]
    type_adds = [a for a in sc.additional_files if any(True for _ in parse_any(a).iter("vType"))]
    if type_adds:
        cmd += ["--additional-files", ",".join(str(a) for a in type_adds)]
    run_tool(sc.name, "duarouter", cmd, work, work / "duarouter.log")
    root = parse_any(out)
    types.read(root)
    got = []
    for v in root.iter("vehicle"):
        vid = v.get("id")
        if vid in ids or vid.rsplit(".", 1)[0] in flows:
            r = v.find("route")
            if r is None:
                r = v.find("routeDistribution/route[last()]")
            t = float_attr(v.get("depart"), None)
            if r is not None and t is not None:
                got.append((t, vid, v.get("type"), r.get("edges")))
    n_in = len(ids) + len(flows)
    dem.conversions.append(
        f"{len(ids)} trips/route-less vehicles and {len(flows)} from/to flows routed with duarouter (window only): "
        f"{len(got)} routed vehicles")
    if not got and n_in:
        raise GronvagError(f"{sc.name}: duarouter routed none of the {n_in} trips/flows", work / "duarouter.log")
    return got


def _fit_to_hour(sc: Scenario, dem: ToolDemand) -> None:
    """Make the tool see exactly one hour of demand starting at ``dem.tool_begin_s`` (module docstring, 1.)."""
    window = sc.end_s - sc.begin_s
    if window < HOUR_S:
        base = list(dem.vehicles)
        copies = math.ceil(HOUR_S / window) - 1
        for k in range(1, copies + 1):
            for t, vid, ty, edges in base:
                if t + k * window < sc.begin_s + HOUR_S:
                    dem.vehicles.append((t + k * window, f"{vid}#tile{k}", ty, edges))
        dem.vehicles.sort(key=lambda v: v[0])
        dem.conversions.append(f"window of {window:g} s tiled with {copies} shifted copies to one hour")
    elif window > HOUR_S:
        pce = {"bicycle": 0.2, "moped": 0.5, "motorcycle": 0.5}
        times = [v[0] for v in dem.vehicles]
        weights = [pce.get(v[2], 3.5 if v[2] != "passenger" else 1.0) for v in dem.vehicles]
        best, best_w = sc.begin_s, -1.0
        start = sc.begin_s
        while start + HOUR_S <= sc.end_s:
            w = sum(wt for t, wt in zip(times, weights, strict=True) if start <= t < start + HOUR_S)
            if w > best_w:
                best, best_w = start, w
            start += 60.0
        dem.tool_begin_s = best
        dem.vehicles = [v for v in dem.vehicles if best <= v[0] < best + HOUR_S]
        dem.conversions.append(f"window longer than an hour: the busiest hour from {best:g} s is used")
    first_edge = dem.vehicles[0][3].split()[0]
    dem.vehicles.append((dem.tool_begin_s + HOUR_S - 1.0, "gronvag.sentinel", "passenger", first_edge))
    dem.conversions.append("zero-flow sentinel at begin + 3599 s so the tool does not scale the hour up")


def write_demand(dem: ToolDemand, path: Path, name: str) -> None:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f"<!-- {name}: window demand for SUMO's Webster tools (types are PCE classes, not vTypes) -->",
             "<routes>"]
    for t, vid, ty, edges in dem.vehicles:
        lines.append(f'    <vehicle id="{_esc(vid)}" type="{ty}" depart="{t:.2f}"><route edges="{_esc(edges)}"/>'
                     "</vehicle>")
    lines.append("</routes>")
    atomic_write(path, "\n".join(lines) + "\n")


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
