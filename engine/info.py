"""`gronvag info`: what the compiler made of a scenario, with warnings an engineer should look at."""

from __future__ import annotations

import numpy as np

from models.network import PHASE_KIND_NAMES, TURN_NAMES


def scenario_report(compiled) -> dict:
    """A JSON-ready description of a compiled scenario: signals, phases, movements, demand and warnings."""
    sc, net, dem = compiled.scenario, compiled.net, compiled.demand
    green = net.mov_green()  # (phases, movements)
    q_veh_h = dem.mean_arrival_veh_h()
    warnings: list[str] = []
    signals = []
    for s in range(net.n_signals):
        ph = list(net.phases_of(s))
        cycle = float(net.signal_cycle_s[s])
        movs = net.movements_of(s)
        mov_rows = []
        for m in movs:
            g_s = float(net.phase_duration_s[ph][green[ph, m]].sum())
            cap = float(net.mov_sat_flow_veh_s[m]) * 3600.0 * g_s / cycle if cycle > 0 else 0.0
            x = float(q_veh_h[m] / cap) if cap > 0 else (float("inf") if q_veh_h[m] > 0 else 0.0)
            a = int(net.mov_approach[m])
            row = {
                "from": net.mov_from_edge[m],
                "to": net.mov_to_edge[m],
                "turn": TURN_NAMES[int(net.mov_turn[m])],
                "lanes": int(net.mov_n_lanes[m]),
                "links": (net.mov_link[net.mov_link_ptr[m]:net.mov_link_ptr[m + 1]] - net.signal_link_ptr[s]).tolist(),
                "protected": bool(net.mov_protected[m]),
                "sat_flow_veh_h": round(float(net.mov_sat_flow_veh_s[m]) * 3600.0, 1),
                "speed_m_s": round(float(net.mov_speed_m_s[m]), 2),
                "storage_veh": round(float(net.appr_storage_veh[a]), 1),
                "demand_veh_h": round(float(q_veh_h[m]), 1),
                "green_s": g_s,
                "degree_of_saturation": round(x, 3) if np.isfinite(x) else None,
            }
            mov_rows.append(row)
            if g_s == 0:
                warnings.append(f"{net.signal_ids[s]}: movement {row['from']} -> {row['to']} never gets green")
            if q_veh_h[m] > 0 and net.appr_storage_veh[a] < 1.0:
                warnings.append(f"{net.signal_ids[s]}: approach {row['from']} has demand but no queue storage")
            if np.isfinite(x) and x > 1.0 and g_s > 0:
                warnings.append(
                    f"{net.signal_ids[s]}: movement {row['from']} -> {row['to']} is oversaturated under its own plan "
                    f"(X = {x:.2f})"
                )
        served = (net.link_movement >= 0) | (net.link_crossing >= 0)
        unused = [li - int(net.signal_link_ptr[s]) for li in net.links_of(s) if not served[li]]
        if unused:
            warnings.append(f"{net.signal_ids[s]}: link indices {unused} control no connection")
        if net.signal_is_actuated[s]:
            warnings.append(f"{net.signal_ids[s]}: active program {net.signal_program_ids[s]!r} is not static")
        signals.append(
            {
                "id": net.signal_ids[s],
                "junctions": list(net.signal_junctions[s]),
                "program": net.signal_program_ids[s],
                "actuated": bool(net.signal_is_actuated[s]),
                "cycle_s": cycle,
                "offset_s": float(net.signal_offset_s[s]),
                "allred_s": int(net.signal_allred_s[s]),
                "links": len(net.links_of(s)),
                "crossings": [net.crossing_ids[c] for c in np.flatnonzero(net.crossing_signal == s)],
                "phases": [
                    {
                        "state": net.phase_states[p],
                        "duration_s": float(net.phase_duration_s[p]),
                        "min_s": float(net.phase_min_s[p]),
                        "max_s": float(net.phase_max_s[p]),
                        "kind": PHASE_KIND_NAMES[int(net.phase_kind[p])],
                    }
                    for p in ph
                ],
                "movements": mov_rows,
            }
        )
    return {
        "scenario": sc.name,
        "sumocfg": str(sc.sumocfg) if sc.sumocfg else None,
        "net_file": str(sc.net_file),
        "route_files": [str(r) for r in sc.route_files],
        "window_s": [sc.begin_s, sc.end_s],
        "counts": {
            "signals": net.n_signals,
            "phases": net.n_phases,
            "links": net.n_links,
            "movements": net.n_movements,
            "approaches": net.n_approaches,
            "crossings": net.n_crossings,
            "downstream_links": int(net.down_ptr[-1]),
        },
        "demand": {
            "vehicles": dem.n_vehicles,
            "pcu": round(dem.n_pcu, 1),
            "persons": dem.n_persons,
            "routed_trips": dem.n_routed_trips,
            "bin_s": dem.bin_s,
            "bins": dem.n_bins,
            "stop_line_arrivals_pcu_h": round(float(q_veh_h.sum()), 1),
        },
        "saturation_flow_model": net.sat_flow_notes,
        "signals": signals,
        "warnings": warnings,
    }


def print_report(rep: dict, detail: bool, console) -> None:
    from rich.table import Table

    c = rep["counts"]
    d = rep["demand"]
    console.print(f"[bold]{rep['scenario']}[/bold]  window {rep['window_s'][0]:g}-{rep['window_s'][1]:g} s  "
                  f"net {rep['net_file']}")
    console.print(
        f"{c['signals']} signals, {c['phases']} phases, {c['links']} signal groups, {c['movements']} movements, "
        f"{c['approaches']} approaches, {c['crossings']} pedestrian crossings, "
        f"{c['downstream_links']} signal-to-signal links"
    )
    console.print(
        f"demand: {d['vehicles']} vehicles ({d['pcu']} pcu), {d['persons']} persons, {d['routed_trips']} trips routed; "
        f"{d['bins']} bins of {d['bin_s']:g} s; stop-line arrivals {d['stop_line_arrivals_pcu_h']} pcu/h"
    )
    console.print(f"saturation flows: {rep['saturation_flow_model']}")
    t = Table(title="signals")
    for col in ("id", "program", "cycle s", "offset s", "phases", "groups", "movements", "crossings", "max X"):
        t.add_column(col)
    for s in rep["signals"]:
        xs = [m["degree_of_saturation"] for m in s["movements"] if m["degree_of_saturation"] is not None]
        t.add_row(s["id"], s["program"] + (" (actuated)" if s["actuated"] else ""), f"{s['cycle_s']:g}",
                  f"{s['offset_s']:g}", str(len(s["phases"])), str(s["links"]), str(len(s["movements"])),
                  str(len(s["crossings"])), f"{max(xs):.2f}" if xs else "-")
    console.print(t)
    if detail:
        for s in rep["signals"]:
            pt = Table(title=f"{s['id']}: phases")
            for col in ("#", "state", "kind", "dur s", "min s", "max s"):
                pt.add_column(col)
            for k, p in enumerate(s["phases"]):
                pt.add_row(str(k), p["state"], p["kind"], f"{p['duration_s']:g}", f"{p['min_s']:g}", f"{p['max_s']:g}")
            console.print(pt)
            mt = Table(title=f"{s['id']}: movements")
            cols = ("from", "to", "turn", "lanes", "G/g", "sat veh/h", "demand veh/h", "green s", "X", "storage veh")
            for col in cols:
                mt.add_column(col)
            for m in s["movements"]:
                x = m["degree_of_saturation"]
                mt.add_row(m["from"], m["to"], m["turn"], str(m["lanes"]), "G" if m["protected"] else "g",
                           f"{m['sat_flow_veh_h']:g}", f"{m['demand_veh_h']:g}", f"{m['green_s']:g}",
                           "-" if x is None else f"{x:.2f}", f"{m['storage_veh']:g}")
            console.print(mt)
    if rep["warnings"]:
        console.print(f"[yellow]{len(rep['warnings'])} warnings[/yellow]")
        for w in rep["warnings"][:50]:
            console.print(f"  [yellow]warning:[/yellow] {w}")
        if len(rep["warnings"]) > 50:
            console.print(f"  ... and {len(rep['warnings']) - 50} more (see --json)")
