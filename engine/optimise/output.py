"""What `gronvag optimise` writes, all or nothing, into OUT:

* ``plan.json``: the plan set (schema ``gronvag.plan/1``, see :mod:`engine.plan`), one plan per optimised signal,
  valid over the demand window it was optimised for;
* ``plan.add.xml``: SUMO additional file with one static ``tlLogic`` per signal under the new programID. SUMO runs
  the program loaded last for a traffic light, so ``sumo -a plan.add.xml`` (after the scenario's own additional
  files) activates it without a WAUT (verified with SUMO 1.28 in tests/test_optimise_sumo.py);
* ``summary.md`` and ``summary.json``: per signal the cycle, offset, splits, the degree of saturation of the most
  loaded movement of each green phase, predicted delay and stops, and the constraints that bind; network totals of
  the current and the optimised plan on the cyclic model; how the search went. With ``--bus-weight`` or
  ``--ped-weight`` on: the weights, the weighted objective, and per signal and in total the predicted delay per bus
  and per pedestrian (HCM crossing delay; see :mod:`engine.optimise.evaluation`).

The files are written into a temporary folder next to OUT which then replaces OUT by rename: readers see the old
folder or the complete new one. OUT must be new, empty, or an earlier output of this command.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from engine.errors import GronvagError
from engine.plan import encode_planset
from models.network import TURN_NAMES

MARKER = ".gronvag-optimise"


def _movement_label(net, m: int) -> str:
    return f"{net.mov_from_edge[m]}->{net.mov_to_edge[m]} ({TURN_NAMES[int(net.mov_turn[m])]})"


def signal_report(inst, sig, timing, mov, loc: np.ndarray) -> dict:
    """Summary of one signal. ``mov``: CyclicMovementOut of its group at the final plan; ``loc``: local indices of
    the signal's movements in that output."""
    opts = inst.options
    net = inst.net
    d = np.array(timing.durations_s, np.int64)
    c = int(d.sum())
    flow = mov.flow_veh_h[0, loc]
    dos = mov.dos[0, loc]
    delay = mov.uniform_delay_s[0, loc] + mov.overflow_delay_s[0, loc]
    stops = mov.stops_per_veh[0, loc]
    total = flow.sum()
    phases = []
    for p in range(sig.n_phases):
        row = {"phase": p, "state": sig.states[p], "kind": sig.kinds[p], "duration_s": int(d[p]),
               "share_pct": round(100.0 * d[p] / c, 1), "adjustable": bool(sig.adjustable[p])}
        if sig.kinds[p] == "green":
            served = np.flatnonzero(sig.mov_coef[:, p] > 0)
            served = served[flow[served] > 0]
            if served.size:
                k = served[np.argmax(dos[served])]
                row["critical_movement"] = _movement_label(net, int(sig.movements[k]))
                row["critical_dos"] = round(float(dos[k]), 3)
        phases.append(row)
    binding = []
    for p in range(sig.n_phases):
        if p in sig.pinned:
            binding.append(f"phase {p} pinned at {sig.pinned[p]} s")
        elif sig.adjustable[p] and d[p] == sig.lo_s[p]:
            binding.append(f"phase {p} at its minimum {int(sig.lo_s[p])} s")
        elif sig.adjustable[p] and d[p] == sig.hi_s[p]:
            binding.append(f"phase {p} at its maximum {int(sig.hi_s[p])} s")
    for cons in sig.sums:
        if not any(sig.adjustable[p] for p in cons.phases):
            continue
        s = int(d[list(cons.phases)].sum())
        if s == cons.lo or (cons.hi and s == cons.hi):
            binding.append(cons.why)
    cap_dos = opts.max_dos
    have = sig.capacity_green_s(d)
    need = sig.cap_need_s(c, cap_dos)
    tight = np.flatnonzero((sig.mov_flow_veh_h > 0) & (have - need < 1.0))
    if timing.cap_enforced:
        for k in tight[:3]:
            binding.append(f"X <= {cap_dos:g} on {_movement_label(net, int(sig.movements[k]))}")
    else:
        binding.append(f"X <= {cap_dos:g} not attainable at cycle {c} s")
    g = inst.groups[next(i for i, gr in enumerate(inst.groups) if inst.by_id[sig.signal_id] in gr.members)]
    if c == g.cycle_hi_s:
        binding.append(f"cycle at the group's maximum {c} s")
    elif c == g.cycle_lo_s:
        binding.append(f"cycle at the group's minimum {c} s")
    extra = {}
    w = getattr(sig, "weights", None)
    if w is not None and (opts.bus_weight != 1.0 or opts.ped_weight > 0):
        bus = flow * w.mov_bus_share
        extra["bus_flow_veh_h"] = round(float(bus.sum()), 1)
        extra["bus_delay_s_per_bus"] = round(float((bus * delay).sum() / bus.sum()) if bus.sum() > 0 else 0.0, 2)
        pf = float(w.ped_flow_h.sum())
        extra["ped_flow_h"] = round(pf, 1)
        extra["ped_delay_s_per_ped"] = round(float(w.ped_delay_s_h(d)) / pf if pf > 0 else 0.0, 2)
    return {
        **extra,
        "signal_id": sig.signal_id, "cycle_s": c, "offset_s": int(timing.offset_s),
        "current": {"cycle_s": sig.base_cycle_s, "offset_s": sig.base_offset_s,
                    "durations_s": [int(v) for v in sig.base_s]},
        "durations_s": [int(v) for v in d], "phases": phases,
        "max_dos": round(float(dos.max()) if dos.size else 0.0, 3),
        "flow_veh_h": round(float(total), 1),
        "delay_s_per_veh": round(float((flow * delay).sum() / total) if total > 0 else 0.0, 2),
        "stops_per_veh": round(float((flow * stops).sum() / total) if total > 0 else 0.0, 3),
        "x_cap_enforced": bool(timing.cap_enforced), "binding": binding,
    }


def build_summary(inst, sol, outcomes, current_eval, new_eval, command: str = "") -> dict:
    from engine.optimise.instance import DEFAULT_STOP_COST_S

    opts = inst.options
    signals = []
    for out in outcomes:
        ge = out.evaluator
        _, mov = ge.movement_report(np.concatenate(out.durations), out.offsets)
        for k, i in enumerate(out.members):
            loc = np.flatnonzero(ge.mov_sig == k)
            signals.append(signal_report(inst, inst.signals[i], sol.timings[i], mov, loc))

    weights_on = opts.bus_weight != 1.0 or opts.ped_weight > 0

    def totals(obj, ev, plan_sol=None) -> dict:
        out = {"objective": round(obj, 1), "mean_delay_s": round(ev.mean_delay_s, 2),
               "stops_per_veh": round(ev.stops_per_veh, 3), "max_dos": round(ev.max_dos, 3)}
        if weights_on:
            from engine.optimise.evaluation import network_terms

            out.update({k: round(v, 2) for k, v in network_terms(inst, ev, plan_sol).items()})
        return out

    from engine.optimise.evaluation import DEFAULT_PED_FLOW_H

    sources = sorted({s.weights.ped_source for s in inst.signals if getattr(s, "weights", None) is not None})
    src_text = {"scenario": "the scenario's walks, routed to the crossings they use",
                "option": f"{opts.ped_flow_h if opts.ped_flow_h is not None else DEFAULT_PED_FLOW_H:g} per crossing "
                          f"({'--ped-flow' if opts.ped_flow_h is not None else 'default: the scenario has no walks'})"}
    return {
        **({"ped_flow_source": "; ".join(src_text[x] for x in sources)} if weights_on and sources else {}),
        "scenario": inst.scenario, "command": command,
        "options": {"time_limit_s": opts.time_limit_s, "seed": opts.seed, "workers": opts.workers,
                    "stop_cost_s": opts.stop_cost_s, "default_stop_cost_s": DEFAULT_STOP_COST_S,
                    "cycle_range_s": [opts.cycle_min_s, opts.cycle_max_s], "max_dos": opts.max_dos,
                    "signals": list(opts.signals) if opts.signals else "all",
                    "pins": [f"{p.signal_id}:{p.phase}={p.seconds}" for p in opts.pins],
                    "program_id": opts.program_id, "bus_weight": opts.bus_weight, "ped_weight": opts.ped_weight,
                    "ped_flow_h": opts.ped_flow_h},
        "window_s": [float(inst.demand.begin_s), float(inst.demand.end_s)],
        "predicted": {"model": "cyclic flow profile (models.cyclic), " + _demand_text(inst),
                      "current": totals(*current_eval), "optimised": totals(*new_eval, sol)},
        "groups": [{"signals": [inst.signals[i].signal_id for i in o.members], "cycle_s": int(o.cycle_s),
                    **{k: v for k, v in o.log.items() if k not in ("signals",)}} for o in outcomes],
        "wall_s": round(sol.stats.get("wall_s", 0.0), 2),
        "signals": signals,
    }


def _demand_text(inst) -> str:
    """How the model took the demand: HCM's analysis periods (one per demand bin) or the window mean."""
    from models.evaluate import analysis_periods

    dem = inst.demand
    if inst.ctx.params.cyclic_periods == "bins" and dem.n_bins > 1:
        n = len(analysis_periods(dem))
        return f"{n} analysis periods of {dem.bin_s / 60:g} min (HCM: the overflow carried from each into the next)"
    return "window-mean demand"


def render_markdown(summary: dict) -> str:
    p = summary["predicted"]
    cur, new = p["current"], p["optimised"]

    def pct(a, b):
        return f"{100.0 * (b - a) / a:+.1f} %" if a else "n/a"

    o = summary["options"]
    lines = [
        f"# Optimised signal plan: {summary['scenario']}", "",
        f"Window {summary['window_s'][0]:g}-{summary['window_s'][1]:g} s; cycle {o['cycle_range_s'][0]}-"
        f"{o['cycle_range_s'][1]} s; X cap {o['max_dos']:g}; stop cost {o['stop_cost_s']:g} s of delay per stop; "
        f"seed {o['seed']}, {o['workers']} workers, time limit {o['time_limit_s']:g} s (used {summary['wall_s']} s).",
        "", f"Made by `{summary['command']}`." if summary.get("command") else "", "",
        f"Predicted by the {p['model']}:", "",
        "| | current | optimised | change |", "|---|---|---|---|",
        f"| objective (veh-s/h + k stops/h) | {cur['objective']:.0f} | {new['objective']:.0f} | "
        f"{pct(cur['objective'], new['objective'])} |",
        f"| mean delay [s/veh] | {cur['mean_delay_s']:.1f} | {new['mean_delay_s']:.1f} | "
        f"{pct(cur['mean_delay_s'], new['mean_delay_s'])} |",
        f"| stops per vehicle | {cur['stops_per_veh']:.2f} | {new['stops_per_veh']:.2f} | "
        f"{pct(cur['stops_per_veh'], new['stops_per_veh'])} |",
        f"| max degree of saturation | {cur['max_dos']:.2f} | {new['max_dos']:.2f} | |",
        *_weights_rows(o, cur, new, pct), "",
        "## Signals", "",
        "| signal | cycle [s] | offset [s] | green phases: duration [s] (critical X) | max X | delay [s/veh] "
        "| stops/veh | binding constraints |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summary["signals"]:
        greens = ", ".join(
            f"{ph['phase']}: {ph['duration_s']}" + (f" ({ph['critical_dos']:.2f})" if "critical_dos" in ph else "")
            for ph in s["phases"] if ph["kind"] == "green")
        lines.append(f"| {s['signal_id']} | {s['cycle_s']} (was {s['current']['cycle_s']}) | {s['offset_s']} | "
                     f"{greens} | {s['max_dos']:.2f} | {s['delay_s_per_veh']:.1f} | {s['stops_per_veh']:.2f} | "
                     f"{'; '.join(s['binding']) or '-'} |")
    if any("bus_delay_s_per_bus" in s for s in summary["signals"]):
        src = summary.get("ped_flow_source", "")
        lines += ["", f"Weighted objective: bus weight {o.get('bus_weight', 1.0):g}, pedestrian weight "
                  f"{o.get('ped_weight', 0.0):g}{'; pedestrian flows: ' + src if src else ''}; predicted per signal "
                  "at the optimised plan:", "",
                  "| signal | buses [pcu/h] | delay per bus [s] | pedestrians [/h] | delay per pedestrian [s] |",
                  "|---|---|---|---|---|"]
        for s in summary["signals"]:
            lines.append(f"| {s['signal_id']} | {s.get('bus_flow_veh_h', 0):.1f} | "
                         f"{s.get('bus_delay_s_per_bus', 0):.1f} | {s.get('ped_flow_h', 0):.0f} | "
                         f"{s.get('ped_delay_s_per_ped', 0):.1f} |")
    sc = summary.get("sim_check")
    if sc:
        lines += ["", "## SUMO check", "",
                  f"Candidates run in SUMO on training seeds {sc['seeds']} ({sc['protocol']} protocol); the plan above "
                  "is the one with the lowest mean benchmark delay.", "",
                  "| candidate | cycle(s) [s] | SUMO delay [s/veh] | per seed | predicted objective | chosen |",
                  "|---|---|---|---|---|---|"]
        for c in sc["candidates"]:
            vals = ", ".join(f"{v:.1f}" for v in c["sumo_values"])
            lines.append(f"| {c['candidate']} | {', '.join(map(str, c['cycles_s']))} | {c['sumo_delay_s']:.1f} | "
                         f"{vals} | {c['predicted_objective']:.0f} | {'yes' if c['chosen'] else ''} |")
    sp = summary.get("sim_polish")
    if sp:
        lines += ["", "## SUMO polish", "",
                  f"Local search in SUMO on training seeds {sp['seeds']} ({sp['protocol']} protocol): "
                  f"{sp['evaluations']} plans evaluated (budget {sp['budget']}), mean benchmark delay "
                  f"{sp['start_delay_s']:.2f} -> {sp['end_delay_s']:.2f} s/veh, {len(sp['accepted'])} steps kept "
                  f"({sp['wall_s']} s).", ""]
        lines += [f"- {a['step']} -> {a['delay_s']:.2f} s/veh" for a in sp["accepted"]]
    sv = summary.get("sim_validate")
    if sv and "chosen_delay_s" not in sv:
        lines += ["", "## SUMO validation", "", f"{sv.get('note', '')}."]
    elif sv:
        kept = {"optimised": "the optimised plan", "programs": "the scenario's own programs"}[sv["kept"]]
        lines += ["", "## SUMO validation", "",
                  f"On validation seeds {sv['seeds']} ({sv['protocol']} protocol), apart from the training seeds: "
                  f"the optimised plan {sv['chosen_delay_s']:.2f} s/veh, the programs {sv['programs_delay_s']:.2f}; "
                  f"paired difference {sv['paired_difference_s']:+.2f} s (standard error "
                  f"{sv['standard_error_s']:.2f}). Written: {kept}." + (f" {sv['note']}" if sv.get("note") else "")]
    lines += ["", "## Search", ""]
    for g in summary["groups"]:
        ids = ", ".join(g["signals"][:6]) + (", ..." if len(g["signals"]) > 6 else "")
        srch = g.get("search", {})
        before, after = g.get("current_objective"), g.get("objective")
        # plans scored without a search (the SUMO polish's, the validation's fallback) carry no group objective
        objective = (f"; group objective {before:.0f} -> {after:.0f}"
                     if before is not None and after is not None and np.isfinite([before, after]).all() else "")
        lines.append(f"- group ({ids}): cycle {g['cycle_s']} s; start: {g.get('start')}; local search "
                     f"{srch.get('rounds', 0)} rounds, {srch.get('evaluations', 0)} plans evaluated, stopped by "
                     f"{srch.get('stopped_by', '-')}{objective}")
    return "\n".join(lines) + "\n"


def _weights_rows(o: dict, cur: dict, new: dict, pct) -> list[str]:
    """Extra rows of the totals table when the objective carries bus or pedestrian weights."""
    if "objective_weighted" not in new:
        return []
    ped = f", pedestrian weight {o.get('ped_weight', 0):g}" if o.get("ped_weight", 0) > 0 else ""
    return [
        f"| weighted objective (bus weight {o.get('bus_weight', 1):g}{ped}) | {cur['objective_weighted']:.0f} | "
        f"{new['objective_weighted']:.0f} | {pct(cur['objective_weighted'], new['objective_weighted'])} |",
        f"| delay per bus and signal [s] ({new['bus_flow_veh_h']:.0f} pcu/h of bus arrivals) | "
        f"{cur['bus_delay_s']:.1f} | {new['bus_delay_s']:.1f} | {pct(cur['bus_delay_s'], new['bus_delay_s'])} |",
        f"| HCM delay per pedestrian and crossing [s] ({new['ped_flow_h']:.0f} /h) | {cur['ped_delay_s']:.1f} | "
        f"{new['ped_delay_s']:.1f} | {pct(cur['ped_delay_s'], new['ped_delay_s'])} |",
    ]


def write_outputs(out: str | Path, files: dict[str, bytes | str]) -> Path:
    """Write ``files`` (name -> content) as the folder ``out``, all or nothing (see module docstring)."""
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise GronvagError("--out exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise GronvagError("--out holds files this command did not write; choose a new or empty folder", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        for name, data in {**files, MARKER: "gronvag optimise output\n"}.items():
            raw = data.encode() if isinstance(data, str) else data
            with open(tmp / name, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def output_files(inst, sol, summary: dict) -> dict[str, bytes | str]:
    from engine.optimise.solution import to_planset

    return planset_files(to_planset(inst, sol), summary, render_markdown(summary))


def planset_files(ps, summary: dict, markdown: str) -> dict[str, bytes | str]:
    """The optimiser's output folder: plan.json, plan.add.xml (SUMO), summary.json, summary.md."""
    from sim.planio import planset_to_additional

    return {"plan.json": encode_planset(ps), "plan.add.xml": planset_to_additional(ps),
            "summary.json": json.dumps(summary, indent=1, default=float), "summary.md": markdown}
