"""Proof in SUMO: the optimised plan against fixed, webster and webster-coord, over seeds, per scenario.

    python -m bench.prove_optimiser --seeds 1-10 --out bench/results/optimiser

For each scenario: `gronvag optimise` (seed 1, the given time limit) writes a plan; `sim.evaluate.evaluate` runs the
scenario with controllers fixed, webster, webster-coord and plan=<the optimised JSON> for every seed (the shared
RESCO scenarios under ``--protocol resco``, the bundled ones under SUMO's defaults unless ``--protocol`` says
otherwise). The table of mean (and median) benchmark delay goes to ``bench/results/optimiser.md``, prefixed with the
exact command; run records stay in ``OUT/runs/<scenario>``, plans in ``OUT/plans/<scenario>``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "scenarios"
SCENARIOS = ("stockholm-corridor", "grid-4x4", "cologne1", "cologne3", "ingolstadt1", "grid4x4", "arterial4x4")
BASELINES = ("fixed", "webster", "webster-coord")
KPI = "benchmark_delay_s"
EXACT = "benchmark_delay_exact_s"


def _resolve(name: str) -> tuple[str, str] | None:
    """(scenario spec, protocol) or None when a shared scenario is missing."""
    if name.startswith(("cologne", "ingolstadt", "grid4x4", "arterial")):
        d = SHARED / name
        return (str(d), "resco") if d.is_dir() else None
    return name, "default"


def _stats(records: list[dict], controller: str) -> dict:
    ok = [r for r in records if r["controller"] == controller and r.get("status") == "ok"
          and r.get("kpi") and r["kpi"].get(KPI) is not None]
    vals = [r["kpi"][KPI] for r in ok]
    failed = sum(1 for r in records if r["controller"] == controller and r.get("status") != "ok")
    if not vals:
        return {"n": 0, "failed": failed, "mean": float("nan"), "median": float("nan")}
    return {"n": len(vals), "failed": failed, "mean": float(np.mean(vals)), "median": float(np.median(vals)),
            "values": vals, "seeds": [r.get("seed") for r in ok],
            "exact": [r["kpi"].get(EXACT) for r in ok]}


def _exact(row: dict, controller: str, out: Path | None) -> list[float] | None:
    """The benchmark delay with the exact never-departed set, per seed of the row's statistics: kept in the row, or
    (rows from before it was kept) read from the runs' summary in OUT/runs/NAME; None when neither has it."""
    st = row["stats"][controller]
    if st.get("exact") and None not in st["exact"]:
        return list(st["exact"])
    if out is None or "seeds" not in st:
        return None
    path = out / "runs" / row["scenario"] / "summary.json"
    if not path.is_file():
        return None
    got = {r["seed"]: r.get(EXACT) for r in json.loads(path.read_text())
           if r.get("controller") == controller and r.get("status") == "ok"}
    vals = [got.get(seed) for seed in st["seeds"]]
    return None if None in vals else vals


def exact_section(rows: list[dict], out: Path | None) -> list[str]:
    """The same comparison with the exact never-departed set (SUMO writes the vehicles it never inserted)."""
    from engine.optimise.simpolish import paired_difference

    lines = ["", "The same runs with the exact never-departed set (SUMO's tripinfo of the vehicles it never inserted, "
             "with their wait until the end; the optimiser's SUMO check and polish score this one). The heuristic "
             "above counts every vehicle after the latest departure in route-file order as never departed, which an "
             "insertion backlog at one entry can inflate. Mean over seeds [s]; the plan minus the best baseline "
             "paired by seed (standard error; seeds lower):", "",
             "| scenario | fixed | webster | webster-coord | optimised | vs fixed | vs best baseline | plan - best "
             "baseline |", "|---|---|---|---|---|---|---|---|"]
    gains = []
    for r in rows:
        ex = {c: _exact(r, c, out) for c in (*BASELINES, "plan")}
        if any(v is None or not v for v in ex.values()):
            continue
        means = {c: float(np.mean(v)) for c, v in ex.items()}
        best = min(BASELINES, key=lambda c: means[c])
        fixed = means["fixed"]
        vs_fixed = 100.0 * (means["plan"] - fixed) / fixed
        gains.append(vs_fixed)
        base = dict(zip(r["stats"][best]["seeds"], ex[best], strict=True))
        pairs = [(v, base[s]) for s, v in zip(r["stats"]["plan"]["seeds"], ex["plan"], strict=True) if s in base]
        plan, ref = (np.array(x) for x in zip(*pairs, strict=True))
        mean, se = paired_difference(plan, ref)
        lines.append(f"| {r['scenario']} | " + " | ".join(f"{means[c]:.1f}" for c in (*BASELINES, "plan"))
                     + f" | {vs_fixed:+.1f} % | {100.0 * (means['plan'] - means[best]) / means[best]:+.1f} % "
                     f"({best}) | {mean:+.2f} ({se:.2f}); {int((plan < ref).sum())} of {plan.size} |")
    if not gains:
        return []
    return lines + ["", f"Mean change against fixed over {len(gains)} scenarios: {np.mean(gains):+.1f} %."]


def paired_against_fixed(stats: dict) -> dict | None:
    """The optimised plan minus the fixed plan, seed by seed (the seeds both ran): mean, its standard error, on how
    many seeds the plan was lower. None without per-seed records (rows from before they were kept)."""
    f, p = stats.get("fixed", {}), stats.get("plan", {})
    if "seeds" not in f or "seeds" not in p:
        return None
    fixed = dict(zip(f["seeds"], f["values"], strict=True))
    from engine.optimise.simpolish import paired_difference

    pairs = [(v, fixed[s]) for s, v in zip(p["seeds"], p["values"], strict=True) if s in fixed]
    if len(pairs) < 2:
        return None
    plan, base = (np.array(x) for x in zip(*pairs, strict=True))
    mean, se = paired_difference(plan, base)
    return {"n": len(pairs), "mean": mean, "se": se, "lower": int((plan < base).sum())}


def _earlier_records(runs: Path, seeds: list[int]) -> list[dict]:
    """Baseline run records of an earlier run in ``runs`` (sim.evaluate's summary.json), when every seed is there
    for a baseline; the baselines' plans do not depend on the optimiser, so their runs repeat exactly."""
    f = runs / "summary.json"
    if not f.is_file():
        return []
    head = ("scenario", "controller", "seed", "protocol", "status", "error", "wall_s")
    rows = [r for r in json.loads(f.read_text()) if isinstance(r, dict)]
    out = []
    for c in BASELINES:
        mine = [r for r in rows if r.get("controller") == c and r.get("seed") in seeds and r.get("status") == "ok"]
        if {r["seed"] for r in mine} == set(seeds):  # summary rows back into run records
            out += [{**{k: r.get(k) for k in head}, "kpi": {k: v for k, v in r.items() if k not in head}}
                    for r in mine]
    return out


def stress_cell(sc: dict) -> str:
    """The SUMO check's stress test in a few words: the demand scale, seeds, and each stressed candidate's mean
    against the current plan's ("-" for summaries made before the stress test, or when it did not run)."""
    st = sc.get("stress")
    ran = [c for c in sc["candidates"] if c.get("stress_delay_s") is not None]
    if not st or not st.get("scale") or not ran:
        return "-"
    seeds = st["seeds"]
    span = f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ",".join(map(str, seeds))
    parts = []
    for c in ran:
        what = ("current plan" if c["candidate"] == st.get("reference")
                else ("turned down: " if c.get("turned_down_by_stress") else "kept: ") + c["candidate"])
        parts.append(f"{what} {c['stress_delay_s']:.1f}")
    return f"x{st['scale']:g}, seeds {span}: " + "; ".join(parts)


def sim_check_section(rows: list[dict], out: Path) -> list[str]:
    """Where the chosen plans came from: the SUMO check's candidates on its training seeds, per scenario."""
    lines = []
    for r in rows:
        f = out / "plans" / r["scenario"] / "summary.json"
        if not f.is_file():
            continue
        sc = json.loads(f.read_text()).get("sim_check")
        if not sc:
            continue
        if not lines:
            lines = ["", "## Where the plans come from (SUMO check on training seeds "
                     f"{', '.join(map(str, sc['seeds']))}, never the seeds above)", "",
                     "| scenario | chosen candidate | its delay | model's own choice | current plan "
                     "| model at other cycles | stress test |", "|---|---|---|---|---|---|---|"]
        cands = sc["candidates"]
        chosen = next(c for c in cands if c["chosen"])

        def find(prefix, cands=cands):
            c = next((c for c in cands if c["candidate"].startswith(prefix)), None)
            return f"{c['sumo_delay_s']:.1f} (cycle {', '.join(map(str, c['cycles_s']))})" if c else "-"

        others = ", ".join(f"{c['cycles_s'][0] if len(c['cycles_s']) == 1 else c['cycles_s']} s: "
                           f"{c['sumo_delay_s']:.0f}" for c in cands if c["candidate"].startswith("model at cycle"))
        own = find("model's choice")
        lines.append(f"| {r['scenario']} | {chosen['candidate']} | {chosen['sumo_delay_s']:.1f} | "
                     f"{own} | {find('current plan')} | {others} | {stress_cell(sc)} |")
    return lines


def sim_polish_section(rows: list[dict], out: Path) -> list[str]:
    """What the SUMO polish did per scenario (training seeds only)."""
    lines = []
    for r in rows:
        f = out / "plans" / r["scenario"] / "summary.json"
        sp = json.loads(f.read_text()).get("sim_polish") if f.is_file() else None
        if not sp:
            continue
        if not lines:
            lines = ["", f"## SUMO polish (local search on training seeds {', '.join(map(str, sp['seeds']))})", "",
                     "| scenario | plans evaluated | training delay start -> end [s] | steps kept | wall [s] |",
                     "|---|---|---|---|---|"]
        lines.append(f"| {r['scenario']} | {sp['evaluations']} / {sp['budget']} | {sp['start_delay_s']:.1f} -> "
                     f"{sp['end_delay_s']:.1f} | {len(sp['accepted'])} | {sp['wall_s']} |")
    return lines


def render(rows: list[dict], command: str, seeds: str, note: str, out: Path | None = None) -> str:
    lines = ["# Optimiser proof in SUMO", "", f"Made by `{command}` ({time.strftime('%Y-%m-%d %H:%M')}).", "",
             "Benchmark delay per vehicle [s] (../shared/scenarios/README.md: time loss + depart delay, plus "
             "never-departed vehicles), mean over seeds (median in brackets); seeds " + seeds + ". Plan: "
             "`gronvag optimise` with seed 1. Shared scenarios under the RESCO protocol (no teleports), bundled ones "
             "under SUMO's defaults.", "",
             "| scenario | fixed | webster | webster-coord | optimised | vs fixed | vs best baseline | predicted "
             "(model) current -> optimised | optimise wall [s] |",
             "|---|---|---|---|---|---|---|---|---|"]
    gains = []
    for r in rows:
        st = r["stats"]
        cells = []
        for c in (*BASELINES, "plan"):
            s = st[c]
            cell = f"{s['mean']:.1f} ({s['median']:.1f})" if s["n"] else "failed"
            if s["failed"]:
                cell += f" [{s['failed']} failed]"
            cells.append(cell)
        opt = st["plan"]["mean"]
        fixed = st["fixed"]["mean"]
        best = min(st[c]["mean"] for c in BASELINES if st[c]["n"])
        vs_fixed = 100.0 * (opt - fixed) / fixed if fixed == fixed and fixed > 0 else float("nan")
        vs_best = 100.0 * (opt - best) / best if best > 0 else float("nan")
        if vs_fixed == vs_fixed:
            gains.append(vs_fixed)
        pred = r.get("predicted", {})
        lines.append(f"| {r['scenario']} | " + " | ".join(cells) + f" | {vs_fixed:+.1f} % | {vs_best:+.1f} % | "
                     f"{pred.get('current', float('nan')):.1f} -> {pred.get('optimised', float('nan')):.1f} s | "
                     f"{r.get('optimise_wall_s', float('nan')):.1f} |")
    if gains:
        lines += ["", f"Mean change against fixed over {len(gains)} scenarios: {np.mean(gains):+.1f} %."]
    paired = [(r["scenario"], paired_against_fixed(r["stats"])) for r in rows]
    if any(pa for _, pa in paired):
        lines += ["", "Paired by seed, optimised minus fixed [s] (standard error of the mean; seeds where the plan "
                  "was lower). A difference within about two standard errors is noise, not a gain:", ""]
        lines += [f"- {name}: {pa['mean']:+.2f} ({pa['se']:.2f}); lower on {pa['lower']} of {pa['n']} seeds"
                  for name, pa in paired if pa]
    lines += exact_section(rows, out)
    if out is not None:
        lines += sim_check_section(rows, out)
        lines += sim_polish_section(rows, out)
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from engine.optimise.cli import optimise_main
    from sim.evaluate import evaluate, parse_seeds, write_summary
    from sim.planio import atomic_write

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m bench.prove_optimiser")
    ap.add_argument("--seeds", default="1-3")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--time-limit", type=float, default=30.0, help="optimise time limit per scenario, s")
    ap.add_argument("--protocol", help="override the protocol (default: resco for shared, default for bundled)")
    ap.add_argument("--out", default="out/prove_optimiser", help="runs and plans")
    ap.add_argument("--table", default=str(REPO / "bench" / "results" / "optimiser.md"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--note", default="", help="text appended under the table")
    ap.add_argument("--optimise-args", default="", help="extra arguments for gronvag optimise")
    ap.add_argument("--phase-skip", action="store_true", help="optimise with --phase-skip")
    ap.add_argument("--render-only", metavar="COMMAND",
                    help="rebuild the table from OUT/rows.json (COMMAND: the command that made the runs)")
    ap.add_argument("--sim-check", action="store_true",
                    help="optimise with --sim-check (SUMO picks among model plans on training seeds 1001-1003)")
    ap.add_argument("--sim-polish", type=int, default=0, metavar="N",
                    help="optimise with --sim-polish N (local search in SUMO on the training seeds)")
    ap.add_argument("--reuse-baselines", action="store_true",
                    help="take the baselines' records from an earlier run in OUT/runs (same seeds) instead of "
                         "running them again; the plan always runs")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.render_only:
        rows = json.loads((out / "rows.json").read_text())
        atomic_write(Path(args.table), render(rows, args.render_only, args.seeds, args.note, out))
        print(f"table in {args.table}")
        return 0
    seeds = parse_seeds(args.seeds)
    rows = []
    for name in args.scenarios.split(","):
        res = _resolve(name.strip())
        if res is None:
            print(f"skip {name}: ../shared/scenarios/{name} is absent")
            continue
        spec, protocol = res
        protocol = args.protocol or protocol
        plan_dir = out / "plans" / name
        t0 = time.perf_counter()
        extra = shlex.split(args.optimise_args) + (["--phase-skip"] if args.phase_skip else [])
        if args.sim_check or args.sim_polish:
            extra += ["--protocol", protocol, "--jobs", str(args.jobs)]
        if args.sim_check:
            extra += ["--sim-check"]
        if args.sim_polish:
            extra += ["--sim-polish", str(args.sim_polish)]
        rc = optimise_main([spec, "--out", str(plan_dir), "--time-limit", f"{args.time_limit:g}", "--seed", "1",
                            "--quiet", *extra])
        wall = time.perf_counter() - t0
        if rc != 0:
            print(f"{name}: optimise failed (exit {rc})")
            continue
        summary = json.loads((plan_dir / "summary.json").read_text())
        old = _earlier_records(out / "runs" / name, seeds) if args.reuse_baselines else []
        todo = [c for c in BASELINES if not any(r["controller"] == c for r in old)]
        records = [r for r in old if r["controller"] in BASELINES]
        records += evaluate(spec, [*todo, "plan"], seeds, out / "runs" / name, plan=str(plan_dir / "plan.json"),
                            protocol=protocol, jobs=args.jobs, progress=False)
        write_summary(out / "runs" / name, records)  # all of them, reused ones included
        stats = {c: _stats(records, c) for c in (*BASELINES, "plan")}
        pred = summary["predicted"]
        rows.append({"scenario": name, "protocol": protocol, "stats": stats, "optimise_wall_s": wall,
                     "predicted": {"current": pred["current"]["mean_delay_s"],
                                   "optimised": pred["optimised"]["mean_delay_s"]}})
        print(f"{name}: " + ", ".join(f"{c} {stats[c]['mean']:.1f}" for c in (*BASELINES, "plan")), flush=True)
        atomic_write(out / "rows.json", json.dumps(rows, indent=1))
    command = "python -m bench.prove_optimiser " + " ".join(shlex.quote(a) for a in argv)
    atomic_write(Path(args.table), render(rows, command, args.seeds, args.note, out))
    print(f"table in {args.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
