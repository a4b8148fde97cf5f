"""Proof that the controller link changes nothing but who runs the signals: SUMO -> engine -> ZeroMQ -> controllers ->
SUMO gives the same KPIs as SUMO running the same plans in process.

    .venv/bin/python -m bench.prove_controller_link [--scenario stockholm-corridor] [--plan PLAN.json] [--seeds 1,2,3]

For every seed the scenario runs twice with the same plan set: (a) in process, the plans loaded into SUMO as static
programs (:class:`sim.controllers.PlanController`), and (b) through :class:`controllers.virtual.VirtualNetwork`: an
engine serving the plans over CURVE-secured ZeroMQ on loopback to one controller agent per traffic light, whose
signal states drive SUMO second by second. The KPI records must be equal, key by key. Without ``--plan`` the plan set
is the scenario's own programs with shifted splits and offsets (:func:`variant_plan_set`), written next to the
report. Writes ``bench/results/controller_link.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from engine.plan import PlanSet, SignalPlan, encode_planset, make_plan, now_iso, read_planset
from engine.safety import check_plan

RESULTS = Path(__file__).resolve().parent / "results"


def variant_plan(net, s: int, green_shift_s: int, offset_shift_s: int) -> SignalPlan:
    """Signal ``s``'s own program with ``green_shift_s`` seconds moved from its longest green phase to its second
    longest (less where minimum greens forbid) and the offset moved by ``offset_shift_s``; always safe under the
    network's spec (engine.safety.check_plan)."""
    from controllers.virtual import own_program

    base = own_program(net, s)
    spec = net.signal_spec(s)
    greens = sorted((k for k, ph in enumerate(base.phases) if ph.kind == "green"),
                    key=lambda k: (-base.phases[k].duration_s, k))
    for shift in range(abs(int(green_shift_s)), -1, -1):
        phases = list(base.phases)
        if len(greens) >= 2 and shift:
            a, b = (greens[0], greens[1]) if green_shift_s > 0 else (greens[1], greens[0])
            if phases[a].duration_s - shift < 1:
                continue
            phases[a] = type(phases[a])(phases[a].state, phases[a].duration_s - shift, kind=phases[a].kind)
            phases[b] = type(phases[b])(phases[b].state, phases[b].duration_s + shift, kind=phases[b].kind)
        plan = make_plan(base.signal_id, phases, base.offset_s + offset_shift_s, program_id="variant")
        if not check_plan(plan, spec):
            return plan
    raise AssertionError(f"{base.signal_id}: no safe variant")  # shift 0 is the own program, which is safe


def variant_plan_set(net, green_shift_s: int = 6, offset_step_s: int = 13, scenario: str = "") -> PlanSet:
    """Every signal's :func:`variant_plan`, offsets moved by ``offset_step_s`` times (signal index + 1)."""
    plans = tuple(variant_plan(net, s, green_shift_s, offset_step_s * (s + 1)) for s in range(net.n_signals))
    return PlanSet(plans=plans, scenario=scenario, created=now_iso())


# ---------------------------------------------------------------------- the proof
KPI_COLUMNS = (("n_tripinfo", "trips", "{:d}"), ("mean_travel_time_s", "travel [s]", "{:.3f}"),
               ("mean_time_loss_s", "time loss [s]", "{:.3f}"), ("mean_waiting_time_s", "waiting [s]", "{:.3f}"),
               ("mean_stops", "stops/veh", "{:.4f}"), ("benchmark_delay_s", "bench. delay [s]", "{:.3f}"),
               ("co2_kg", "CO2 [kg]", "{:.3f}"))


def _fmt(fmt: str, v) -> str:
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def states_match(vn, plans: tuple[SignalPlan, ...], net, begin: int, end: int) -> int:
    """Signal-seconds where the virtual network showed something else than SUMO running ``plans`` (0 = none)."""
    from controllers.virtual import sumo_state

    by_sid = {p.signal_id: p for p in plans}
    bad = 0
    for s in range(net.n_signals):
        changes = vn.trace[s]
        plan = by_sid.get(net.signal_ids[s])
        if plan is None:
            continue
        k = 0
        for t in range(begin, end):
            while k + 1 < len(changes) and changes[k + 1][0] <= t:
                k += 1
            bad += changes[k][1] != sumo_state(plan, t)[2]
    return bad


def prove(scenario: str, plan_files: list[tuple[str, Path]], seeds: list[int], work: Path,
          end_s: float | None = None) -> list[dict]:
    """Every (plan, seed): in process vs through the controller link. Returns one row per pair."""
    from controllers.virtual import VirtualNetwork
    from sim.controllers import PlanController
    from sim.harness import RunConfig, run
    from sim.scenario import compile_scenario

    comp = compile_scenario(scenario, end_s=end_s)
    rows = []
    for label, path in plan_files:
        plans = read_planset(path).plans
        for seed in seeds:
            key = f"{label}__seed{seed}"
            t0 = time.perf_counter()
            a = run(comp.scenario, comp.net, PlanController(path), RunConfig(seed=seed), work / key / "inproc")
            t1 = time.perf_counter()
            vn = VirtualNetwork(path)
            b = run(comp.scenario, comp.net, vn, RunConfig(seed=seed), work / key / "remote")
            t2 = time.perf_counter()
            diff = sorted(k for k in set(a["kpi"]) | set(b["kpi"]) if a["kpi"].get(k) != b["kpi"].get(k))
            link = vn.report.get("engine", {})
            rows.append({
                "plan": label, "plan_file": str(path), "seed": seed, "inproc": a["kpi"], "remote": b["kpi"],
                "kpi_keys": len(a["kpi"]), "kpi_differ": diff, "per_signal_equal": a["per_signal"] == b["per_signal"],
                "queue_series_equal": a.get("queue_series") == b.get("queue_series"),
                "state_mismatch_signal_s": states_match(vn, plans, comp.net, int(comp.scenario.begin_s),
                                                        int(comp.scenario.end_s)),
                "wall_inproc_s": round(t1 - t0, 2), "wall_remote_s": round(t2 - t1, 2),
                "startup_wall_s": vn.report.get("startup_wall_s"), "link_counts": link.get("counts", {}),
                "link_status": sorted(set((link.get("status") or {}).values())),
            })
            print(f"{key}: {'identical' if not diff else 'DIFFERENT ' + ', '.join(diff)} "
                  f"({rows[-1]['wall_inproc_s']} s in process, {rows[-1]['wall_remote_s']} s remote)", flush=True)
    return rows


def render(rows: list[dict], command: str, scenario: str, window: str, note: str = "") -> str:
    ok = all(not r["kpi_differ"] and r["per_signal_equal"] and r["state_mismatch_signal_s"] == 0 for r in rows)
    lines = ["# Controller link: SUMO -> engine -> ZeroMQ -> controllers -> SUMO", "",
             f"Made by `{command}` ({time.strftime('%Y-%m-%d %H:%M')}).", "",
             f"Scenario `{scenario}`, window {window}. For each plan set and seed the scenario runs twice: **in "
             "process** (the plans loaded into SUMO as static programs, `sim.controllers.PlanController`) and "
             "**remote** (`controllers.virtual.VirtualNetwork`: the engine serves the plans over CURVE-secured "
             "ZeroMQ on 127.0.0.1 to one controller agent per traffic light; each agent accepts, validates, persists, "
             "switches at a safe point and acknowledges; its plan runner's state drives SUMO every second, its clock "
             "being simulation time).", "",
             f"**Result: {'identical' if ok else 'NOT identical'}** — "
             + ("every KPI key, the per-signal figures and every signal state of every second are equal in all "
                f"{len(rows)} pairs." if ok else "see the rows marked below."), "",
             "| plan | seed | path | " + " | ".join(h for _, h, _ in KPI_COLUMNS) + " | wall [s] |",
             "|---|---|---|" + "---|" * len(KPI_COLUMNS) + "---|"]
    for r in rows:
        for path in ("inproc", "remote"):
            k = r[path]
            cells = [_fmt(f, k.get(key)) for key, _, f in KPI_COLUMNS]
            wall = r["wall_inproc_s"] if path == "inproc" else r["wall_remote_s"]
            lines.append(f"| {r['plan']} | {r['seed']} | {'in process' if path == 'inproc' else 'remote'} | "
                         + " | ".join(cells) + f" | {wall} |")
    lines += ["", "| plan | seed | KPI keys compared | differing keys | per-signal equal | queue series equal | "
                  "signal-seconds not as SUMO | link start-up [s] | engine counters | final plan status |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r["link_counts"].items()) if k != "received")
        lines.append(f"| {r['plan']} | {r['seed']} | {r['kpi_keys']} | {', '.join(r['kpi_differ']) or 'none'} | "
                     f"{r['per_signal_equal']} | {r['queue_series_equal']} | {r['state_mismatch_signal_s']} | "
                     f"{r['startup_wall_s']} | {counts} | {', '.join(r['link_status'])} |")
    lines += ["", "Plans: " + "; ".join(sorted({f"`{r['plan']}` = `{r['plan_file']}`" for r in rows})) + ".", "",
              "How the remote run starts exactly: the controllers boot on their fallback programs (the scenario's own) "
              "at a signal time before the window, receive the plans, switch at their next safe point and acknowledge "
              "`applied`; once the engine holds every `applied` they restart (state kept), each at the start of the "
              "phase its plan shows at the window's begin, resume the persisted plan and reconnect. The remote wall "
              "time includes that start-up and the harness's second-by-second stepping (the in-process run advances "
              "SUMO in one call).", ""]
    if note:
        lines += [note, ""]
    return "\n".join(lines)


def _shown(path: Path) -> Path:
    """The path relative to the working directory where it lies below it (for the report)."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.prove_controller_link", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="stockholm-corridor")
    ap.add_argument("--plan", action="append", default=[],
                    help="plan set JSON to prove (repeatable); 'variant' (default): the scenario's programs with "
                         "shifted splits and offsets")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--end", type=float, help="window end, s (default: the scenario's)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder of controller_link.md/.json (default "
                                                              "bench/results)")
    ap.add_argument("--note", default="", help="a line for the report (e.g. how a plan file was made)")
    ap.add_argument("--work", type=Path, help="keep the runs' SUMO outputs here (default: a temporary folder)")
    a = ap.parse_args(argv)
    from sim.evaluate import parse_seeds
    from sim.planio import atomic_write
    from sim.scenario import compile_scenario

    seeds = parse_seeds(a.seeds)
    a.out.mkdir(parents=True, exist_ok=True)
    plan_files: list[tuple[str, Path]] = []
    for spec in a.plan or ["variant"]:
        if spec == "variant":
            comp = compile_scenario(a.scenario, end_s=a.end)
            path = a.out / "controller_link_variant.plan.json"
            atomic_write(path, encode_planset(variant_plan_set(comp.net, scenario=a.scenario)))
            plan_files.append(("variant", _shown(path)))
        else:
            plan_files.append((Path(spec).stem.removesuffix(".plan"), _shown(Path(spec))))
    if a.work is not None:
        rows = prove(a.scenario, plan_files, seeds, a.work, end_s=a.end)
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="gronvag-link-proof-") as tmp:
            rows = prove(a.scenario, plan_files, seeds, Path(tmp), end_s=a.end)
    comp = compile_scenario(a.scenario, end_s=a.end)
    window = f"{comp.scenario.begin_s:g}-{comp.scenario.end_s:g} s"
    command = "python -m bench.prove_controller_link " + shlex.join(argv if argv is not None else sys.argv[1:])
    atomic_write(a.out / "controller_link.md", render(rows, command.strip(), a.scenario, window, a.note))
    atomic_write(a.out / "controller_link.json", json.dumps(rows, indent=1))
    print(f"wrote {a.out / 'controller_link.md'}")
    same = all(not r["kpi_differ"] and r["per_signal_equal"] and r["state_mismatch_signal_s"] == 0 for r in rows)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
