"""KPIs of one SUMO run, from its tripinfo (with emissions), summary and detector outputs.

The benchmark's average delay follows ../shared/scenarios/README.md exactly:

    delay = ( sum over tripinfo of (timeLoss + departDelay) + sum over never-departed of (end - scheduled depart) )
            / ( n_tripinfo + n_never_departed )

reported twice: with RESCO's never-departed heuristic (route-file vehicles scheduled after the one with the latest
actual departure, as published) and with the exact set (vehicles SUMO had loaded but never inserted at the end).
"""

from __future__ import annotations

import functools
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

GASOLINE_KG_PER_L = 0.745
BUS_CLASSES = {"bus", "coach"}


def scheduled_departures(route_files, begin_s: float, end_s: float) -> tuple[list[str], dict[str, float]]:
    """Vehicle ids in order of scheduled departure (stable: route-file order among equal times), for departures
    within [begin, end).

    Flows are expanded the way SUMO names their vehicles ('<flow id>.<k>'), evenly spaced by their period; random
    (probability) flows get their expected departure times.
    """
    order: list[str] = []
    depart: dict[str, float] = {}
    for rf in route_files:
        for _, el in ET.iterparse(str(rf), events=("end",)):
            tag = el.tag
            if tag in ("vehicle", "trip"):
                try:
                    d = float(el.get("depart", "0"))
                except ValueError:
                    el.clear()
                    continue
                if begin_s <= d < end_s:
                    order.append(el.get("id"))
                    depart[el.get("id")] = d
                el.clear()
            elif tag == "flow":
                fb = float(el.get("begin", begin_s))
                fe = float(el.get("end", end_s))
                if el.get("vehsPerHour") is not None:
                    period = 3600.0 / float(el.get("vehsPerHour"))
                elif el.get("period") is not None and not el.get("period").startswith("exp"):
                    period = float(el.get("period"))
                elif el.get("number") is not None:
                    period = (fe - fb) / max(float(el.get("number")), 1.0)
                elif el.get("probability") is not None:
                    period = 1.0 / max(float(el.get("probability")), 1e-9)
                elif el.get("period", "").startswith("exp("):
                    period = 1.0 / float(el.get("period")[4:-1])
                else:
                    period = math.inf
                k = 0
                t = fb
                while t < fe and math.isfinite(period):
                    if begin_s <= t < end_s:
                        vid = f"{el.get('id')}.{k}"
                        order.append(vid)
                        depart[vid] = t
                    k += 1
                    t = fb + k * period
                el.clear()
    # SUMO inserts by departure time; files of <vehicle>s are sorted that way already, flows are not
    order.sort(key=depart.__getitem__)
    return order, depart


def parse_tripinfo(path: Path) -> dict[str, np.ndarray | list]:
    ids, vtypes = [], []
    cols = {k: [] for k in ("depart", "departDelay", "duration", "timeLoss", "waitingTime", "waitingCount", "arrival")}
    co2, fuel = [], []
    person_loss = []
    for _, el in ET.iterparse(str(path), events=("end",)):
        if el.tag == "tripinfo":
            ids.append(el.get("id"))
            vtypes.append(el.get("vType", ""))
            for k in cols:
                cols[k].append(float(el.get(k, "nan")))
            em = el.find("emissions")
            co2.append(float(em.get("CO2_abs", 0.0)) if em is not None else 0.0)
            fuel.append(float(em.get("fuel_abs", 0.0)) if em is not None else 0.0)
            el.clear()
        elif el.tag == "personinfo":
            person_loss.append(sum(float(w.get("timeLoss", 0.0)) for w in el.iter("walk")))
            el.clear()
    out = {k: np.array(v, np.float64) for k, v in cols.items()}
    out["id"] = ids
    out["vType"] = vtypes
    out["co2_mg"] = np.array(co2)
    out["fuel_mg"] = np.array(fuel)
    out["person_time_loss"] = np.array(person_loss)
    return out


def _vtype_classes(route_files, additional_files) -> dict[str, str]:
    """vType id -> vClass over the files; read once per set of files as they are on disk (size and mtime)."""
    stamp = []
    for f in (*route_files, *additional_files):
        st = Path(f).stat()
        stamp.append((str(f), st.st_size, st.st_mtime_ns))
    return _vtype_classes_of(tuple(stamp))


@functools.lru_cache(maxsize=16)
def _vtype_classes_of(stamp: tuple) -> dict[str, str]:
    classes = {"DEFAULT_VEHTYPE": "passenger", "DEFAULT_BIKETYPE": "bicycle"}
    for f, _, _ in stamp:
        for _, el in ET.iterparse(f, events=("end",)):
            if el.tag == "vType":
                classes[el.get("id")] = el.get("vClass", "passenger")
    return classes


def benchmark_delay(ti: dict, order: list[str], depart: dict[str, float], end_s: float,
                    never_ids: list[str]) -> tuple[float, float, int, int]:
    """(heuristic delay, exact delay, heuristic never-departed count, exact count); see module docstring."""
    base = float(np.nansum(ti["timeLoss"] + ti["departDelay"]))
    n = len(ti["id"])
    # heuristic: everything after the vehicle with the latest actual departure, in route-file order
    if n:
        last = ti["id"][int(np.nanargmax(ti["depart"]))]
        pos = {vid: i for i, vid in enumerate(order)}
        cut = pos.get(last, len(order) - 1)
        heur = order[cut + 1 :]
    else:
        heur = list(order)
    h_sum = sum(end_s - depart[v] for v in heur)
    exact = [v for v in never_ids if v in depart]
    e_sum = sum(end_s - depart[v] for v in exact)
    d_h = (base + h_sum) / max(n + len(heur), 1)
    d_e = (base + e_sum) / max(n + len(exact), 1)
    return d_h, d_e, len(heur), len(exact)


def bus_mask(ti: dict, scenario) -> np.ndarray:
    """bool per tripinfo row: the vehicle is a bus or coach (by its vType's vClass, or 'bus' in the type id)."""
    classes = _vtype_classes(scenario.route_files, scenario.additional_files)
    return np.array([classes.get(v, "passenger") in BUS_CLASSES for v in ti["vType"]], bool)


def weight_sums(ti: dict, is_bus: np.ndarray) -> dict:
    """What a bus- or pedestrian-weighted objective adds to the vehicles' delay: the buses' summed time loss and the
    pedestrians' summed walking time loss, s (per vehicle: divided by ``n_tripinfo``)."""
    loss = np.nan_to_num(ti["timeLoss"])
    return {"bus_time_loss_sum_s": float(loss[is_bus].sum()),
            "ped_time_loss_sum_s": float(np.sum(ti["person_time_loss"]))}


def run_record(scenario, controller_name: str, cfg, workdir: Path, net, pending_ids: list[str]) -> dict:
    """The JSON run record: KPIs, queue series and per-signal figures of the run in ``workdir``."""
    ti = parse_tripinfo(workdir / "tripinfo.xml")
    order, depart = scheduled_departures(scenario.route_files, scenario.begin_s, scenario.end_s)
    d_h, d_e, n_h, n_e = benchmark_delay(ti, order, depart, scenario.end_s, pending_ids)
    is_bus = bus_mask(ti, scenario)
    arrived = int(np.sum(ti["arrival"] >= 0)) if len(ti["id"]) else 0
    stats = ET.parse(workdir / "statistics.xml").getroot() if (workdir / "statistics.xml").exists() else None
    veh = stats.find("vehicles") if stats is not None else None
    tele = stats.find("teleports") if stats is not None else None

    def mean(a):
        return float(np.nanmean(a)) if len(a) else None

    kpi = {
        "n_tripinfo": len(ti["id"]),
        "mean_travel_time_s": mean(ti["duration"]),
        "mean_time_loss_s": mean(ti["timeLoss"]),
        "mean_waiting_time_s": mean(ti["waitingTime"]),
        "mean_stops": mean(ti["waitingCount"]),
        "arrived": arrived,
        "inserted": int(veh.get("inserted")) if veh is not None else len(ti["id"]),
        "loaded": int(veh.get("loaded")) if veh is not None else None,
        "never_inserted": n_e,
        "teleports": int(tele.get("total")) if tele is not None else 0,
        "co2_kg": float(ti["co2_mg"].sum() / 1e6),
        "fuel_l": float(ti["fuel_mg"].sum() / 1e6 / GASOLINE_KG_PER_L),
        "benchmark_delay_s": d_h,
        "benchmark_delay_exact_s": d_e,
        "never_departed_heuristic": n_h,
        "never_departed_exact": n_e,
        "bus_mean_time_loss_s": mean(ti["timeLoss"][is_bus]) if is_bus.any() else None,
        "ped_mean_time_loss_s": mean(ti["person_time_loss"]) if len(ti["person_time_loss"]) else None,
        **weight_sums(ti, is_bus),
    }
    rec = {
        "scenario": scenario.name,
        "controller": controller_name,
        "seed": int(cfg.seed),
        "protocol": cfg.protocol,
        "status": "ok",
        "error": None,
        "kpi": kpi,
        "queue_series": _queue_series(workdir / "summary.xml"),
        "per_signal": _per_signal(workdir / "e2_in.xml", net),
    }
    return rec


def _queue_series(path: Path, every_s: float = 60.0) -> dict:
    t, h = [], []
    if not path.exists():
        return {"t_s": t, "halting": h}
    nxt = -math.inf
    for _, el in ET.iterparse(str(path), events=("end",)):
        if el.tag == "step":
            ts = float(el.get("time"))
            if ts >= nxt:
                t.append(ts)
                h.append(int(el.get("halting", 0)))
                nxt = ts + every_s
            el.clear()
    return {"t_s": t, "halting": h}


def _per_signal(path: Path, net) -> dict:
    """Per signal: mean time loss of vehicles seen by its approach detectors, and the largest total jam (veh)."""
    if not path.exists():
        return {}
    lane_signal: dict[str, int] = {}
    for a in range(net.n_approaches):
        for k in range(int(net.appr_n_lanes[a]) + 4):
            lane_signal[f"gv_in_{net.appr_edge[a]}_{k}"] = int(net.appr_signal[a])
    loss = np.zeros(net.n_signals)
    seen = np.zeros(net.n_signals)
    jam: dict[tuple[int, float], float] = {}
    for _, el in ET.iterparse(str(path), events=("end",)):
        if el.tag == "interval":
            s = lane_signal.get(el.get("id"))
            if s is not None:
                n = float(el.get("nVehSeen", 0))
                loss[s] += float(el.get("meanTimeLoss", 0)) * n if n > 0 else 0.0
                seen[s] += n
                key = (s, float(el.get("begin")))
                jam[key] = jam.get(key, 0.0) + float(el.get("maxJamLengthInVehicles", 0))
            el.clear()
    maxq = np.zeros(net.n_signals)
    for (s, _), v in jam.items():
        maxq[s] = max(maxq[s], v)
    return {
        net.signal_ids[s]: {"delay_s": float(loss[s] / seen[s]) if seen[s] else 0.0, "max_queue_veh": float(maxq[s])}
        for s in range(net.n_signals)
    }
