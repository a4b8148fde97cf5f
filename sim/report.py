"""``gronvag compare DIR...``: every KPI of ``gronvag evaluate`` runs, per (scenario, controller), over seeds.

Each DIR holds ``runs/*.json``, one run record per (scenario, controller, seed) as ``sim.kpi.run_record`` writes
it. For every KPI the report gives mean ± half-width of the 95 % confidence interval of the mean (Student t with
n - 1 degrees of freedom, sample standard deviation) and the median over the seeds whose run succeeded and whose
value is not null, with n ok / n failed per (scenario, controller). A few seeds that gridlock dominate means, so the
median stands beside each mean (../shared/scenarios/README.md).

Outputs (into ``--out``, default the first DIR), each written atomically (temporary file + ``os.replace``):

- ``compare.md``: one table per scenario (KPI rows x controller columns), then the failed runs;
- ``compare.csv``: the same numbers in long form, one row per (scenario, controller, KPI);
- ``compare_delay.png``: benchmark delay per controller, one panel per scenario: bar = mean, error bar = 95 % CI,
  dots = seeds;
- ``compare_queue.png``: network halting vehicles over time, mean over seeds per controller (only when run records
  carry a queue series).

Failed runs (status other than ``ok``, missing KPIs, unreadable record files) are listed, never fatal. When the same
(scenario, controller, seed) appears in several DIRs, the later DIR wins and the replaced records are listed as
notes. Records of one scenario made under different protocols (``default``/``resco``) are kept apart: the scenario
label gets the protocol in brackets.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engine.errors import GronvagError
from sim.planio import atomic_write

# display order and labels; KPIs found in records but not listed here follow in alphabetical order
KPI_LABELS = {
    "benchmark_delay_s": "benchmark delay (RESCO heuristic) [s]",
    "benchmark_delay_exact_s": "benchmark delay (exact never-departed) [s]",
    "mean_travel_time_s": "mean travel time [s]",
    "mean_time_loss_s": "mean time loss [s]",
    "mean_waiting_time_s": "mean waiting time [s]",
    "mean_stops": "mean stops [-]",
    "arrived": "arrived [veh]",
    "inserted": "inserted [veh]",
    "never_inserted": "never inserted [veh]",
    "never_departed_heuristic": "never departed, heuristic [veh]",
    "never_departed_exact": "never departed, exact [veh]",
    "teleports": "teleports [-]",
    "co2_kg": "CO2 [kg]",
    "fuel_l": "fuel [l]",
    "bus_mean_time_loss_s": "bus mean time loss [s]",
    "ped_mean_time_loss_s": "pedestrian mean time loss [s]",
    "bus_time_loss_sum_s": "bus time loss, total [s]",
    "ped_time_loss_sum_s": "pedestrian time loss, total [s]",
    "n_tripinfo": "tripinfo entries [-]",
    "loaded": "loaded [veh]",
}
CONTROLLER_ORDER = ("fixed", "webster", "webster-coord", "actuated", "max-pressure")
DELAY_KPI = "benchmark_delay_s"
CI_LEVEL = 0.95
FILES = {"markdown": "compare.md", "csv": "compare.csv", "delay_plot": "compare_delay.png",
         "queue_plot": "compare_queue.png"}


@dataclass(frozen=True)
class Stat:
    """Summary of one KPI over seeds: n values used, mean, CI half-width (None if n < 2), median."""

    n: int
    mean: float | None
    ci95: float | None
    median: float | None


def summarise(values) -> Stat:
    """Mean, 95 % CI half-width (t distribution, ddof=1) and median of the finite numbers in ``values``."""
    from scipy import stats

    x = np.array([v for v in values if _is_number(v)], dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Stat(0, None, None, None)
    ci = None
    if n >= 2:
        ci = float(stats.t.ppf(0.5 + CI_LEVEL / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Stat(n, float(x.mean()), ci, float(np.median(x)))


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# ---------------------------------------------------------------------------------------------------------------
# loading


def load_runs(dirs: list[Path]) -> tuple[list[dict], list[dict], list[str]]:
    """Run records of every DIR/runs/*.json: (ok records, failed records, notes). A failed record carries
    ``scenario``, ``controller``, ``seed``, ``error`` and ``file``. A missing DIR or one without run records is a
    GronvagError; an unreadable record file is a failed run."""
    if not dirs:
        raise GronvagError("compare needs at least one evaluate output folder")
    latest: dict[tuple, dict] = {}
    notes: list[str] = []
    broken: list[dict] = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise GronvagError("no such evaluate output folder", d)
        files = sorted((d / "runs").glob("*.json"))
        if not files:
            raise GronvagError("no run records (runs/*.json) in the folder", d)
        for f in files:
            try:
                rec = json.loads(f.read_text(encoding="utf-8"))
                if not isinstance(rec, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as exc:
                broken.append({"scenario": "?", "controller": "?", "seed": None, "file": str(f),
                               "error": f"unreadable run record ({' '.join(str(exc).split())})"})
                continue
            rec = {**rec, "_file": str(f)}
            key = (rec.get("scenario"), rec.get("protocol"), rec.get("controller"), rec.get("seed"))
            if key in latest:
                notes.append(f"{latest[key]['_file']} replaced by {f} (same scenario, controller and seed)")
            latest[key] = rec
    ok, failed = [], list(broken)
    for rec in latest.values():
        kpi = rec.get("kpi")
        if rec.get("status") == "ok" and isinstance(kpi, dict):
            ok.append(rec)
        else:
            err = rec.get("error") or ("no KPIs in the record" if rec.get("status") == "ok" else "failed")
            failed.append({"scenario": str(rec.get("scenario")), "controller": str(rec.get("controller")),
                           "seed": rec.get("seed"), "error": " ".join(str(err).split()), "file": rec["_file"],
                           "protocol": rec.get("protocol")})
    return ok, failed, notes


def _labels(records: list[dict]) -> dict[tuple, str]:
    """(scenario, protocol) -> scenario label; the protocol is named only where a scenario has several."""
    protos: dict[str, set] = {}
    for r in records:
        protos.setdefault(str(r.get("scenario")), set()).add(r.get("protocol"))
    return {(s, p): (f"{s} [{p}]" if len(ps) > 1 else s) for s, ps in protos.items() for p in ps}


def _controller_key(name: str) -> tuple:
    return (CONTROLLER_ORDER.index(name), "") if name in CONTROLLER_ORDER else (len(CONTROLLER_ORDER), name)


# ---------------------------------------------------------------------------------------------------------------
# the report


def compare(dirs: list[Path], out: Path | None = None, console=None) -> dict:
    """Build, print and write the comparison of the evaluate outputs in ``dirs`` (see module docstring).

    Returns ``{"groups": [{"scenario", "controller", "n_ok", "n_failed", "kpi": {name: Stat as dict}}...],
    "failed": [...], "notes": [...], "files": {kind: path}}``.
    """
    dirs = [Path(d) for d in dirs]
    ok, failed, notes = load_runs(dirs)
    out = Path(out) if out is not None else dirs[0]
    labels = _labels([*ok, *[f for f in failed if f["scenario"] != "?"]])
    for f in failed:
        f["scenario_label"] = labels.get((f["scenario"], f.get("protocol")), f["scenario"])

    by_group: dict[tuple[str, str], list[dict]] = {}
    for r in ok:
        label = labels[(str(r.get("scenario")), r.get("protocol"))]
        by_group.setdefault((label, str(r.get("controller"))), []).append(r)
    for f in failed:
        if f["scenario"] != "?":
            by_group.setdefault((f["scenario_label"], f["controller"]), [])
    kpi_names = [k for k in KPI_LABELS if any(k in r["kpi"] for r in ok)]
    kpi_names += sorted({k for r in ok for k, v in r["kpi"].items() if k not in KPI_LABELS and _numeric_kpi(v)})

    groups = []
    for scen, ctrl in sorted(by_group, key=lambda g: (g[0], _controller_key(g[1]))):
        recs = by_group[(scen, ctrl)]
        n_failed = sum(1 for f in failed if f["scenario_label"] == scen and f["controller"] == ctrl)
        stats = {k: asdict(summarise(r["kpi"].get(k) for r in recs)) for k in kpi_names}
        groups.append({"scenario": scen, "controller": ctrl, "n_ok": len(recs), "n_failed": n_failed,
                       "seeds": sorted(r.get("seed") for r in recs if isinstance(r.get("seed"), int)),
                       "kpi": stats})

    out.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out / FILES["markdown"], "csv": out / FILES["csv"]}
    atomic_write(files["markdown"], _markdown(groups, kpi_names, failed, notes, dirs))
    atomic_write(files["csv"], _csv(groups, kpi_names))
    plot = _delay_plot(groups, ok, labels)
    if plot is not None:
        files["delay_plot"] = out / FILES["delay_plot"]
        atomic_write(files["delay_plot"], plot)
    plot = _queue_plot(groups, ok, labels)
    if plot is not None:
        files["queue_plot"] = out / FILES["queue_plot"]
        atomic_write(files["queue_plot"], plot)
    _print(groups, kpi_names, failed, notes, files, console)
    return {"groups": groups, "failed": failed, "notes": notes, "files": {k: str(v) for k, v in files.items()}}


def _numeric_kpi(v) -> bool:
    return v is None or _is_number(v)


def fmt(x: float | None) -> str:
    """A KPI value with precision by magnitude; None as an en dash."""
    if x is None or not math.isfinite(x):
        return "–"
    if float(x).is_integer():
        return f"{x:.0f}"
    a = abs(x)
    if a >= 100:
        return f"{x:.1f}"
    if a >= 10:
        return f"{x:.2f}"
    return f"{x:.3f}"


def cell(st: dict) -> str:
    """'mean ± ci (median)' of one KPI; '–' without values, no '±' with one value."""
    if not st["n"]:
        return "–"
    ci = f" ± {fmt(st['ci95'])}" if st["ci95"] is not None else ""
    return f"{fmt(st['mean'])}{ci} ({fmt(st['median'])})"


def _scenarios(groups: list[dict]) -> list[str]:
    return list(dict.fromkeys(g["scenario"] for g in groups))


def _markdown(groups, kpi_names, failed, notes, dirs) -> str:
    lines = ["# Controller comparison", "",
             f"From {', '.join(f'`{d}`' for d in dirs)}. Cells: mean ± 95 % CI half-width (Student t over seeds) "
             "(median). n ok / n failed counts runs.", ""]
    for scen in _scenarios(groups):
        gs = [g for g in groups if g["scenario"] == scen]
        lines += [f"## {scen}", "", "| KPI | " + " | ".join(g["controller"] for g in gs) + " |",
                  "|---|" + "---|" * len(gs),
                  "| n ok / n failed | " + " | ".join(f"{g['n_ok']} / {g['n_failed']}" for g in gs) + " |"]
        for k in kpi_names:
            if any(g["kpi"][k]["n"] for g in gs):
                lines.append(f"| {KPI_LABELS.get(k, k)} | " + " | ".join(cell(g["kpi"][k]) for g in gs) + " |")
        lines.append("")
    lines += ["## Failed runs", ""]
    if failed:
        lines += ["| scenario | controller | seed | error |", "|---|---|---|---|"]
        for f in sorted(failed, key=lambda f: (f["scenario_label"], f["controller"], str(f["seed"]))):
            err = f["error"].replace("|", "\\|")
            lines.append(f"| {f['scenario_label']} | {f['controller']} | {f['seed']} | {err} (`{f['file']}`) |")
    else:
        lines.append("None.")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _csv(groups, kpi_names) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["scenario", "controller", "kpi", "n_ok", "n_failed", "n", "mean", "ci95_half_width", "ci95_low",
                "ci95_high", "median"])
    for g in groups:
        for k in kpi_names:
            st = g["kpi"][k]
            lo = hi = None
            if st["ci95"] is not None:
                lo, hi = st["mean"] - st["ci95"], st["mean"] + st["ci95"]
            w.writerow([g["scenario"], g["controller"], k, g["n_ok"], g["n_failed"], st["n"],
                        *("" if v is None else repr(float(v)) for v in (st["mean"], st["ci95"], lo, hi,
                                                                          st["median"]))])
    return buf.getvalue()


def _print(groups, kpi_names, failed, notes, files, console) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = console or Console()
    for scen in _scenarios(groups):
        gs = [g for g in groups if g["scenario"] == scen]
        t = Table(title=escape(f"{scen}: mean ± 95 % CI (median)"), title_justify="left")
        t.add_column("KPI")
        for g in gs:
            t.add_column(escape(g["controller"]), justify="right")
        t.add_row("n ok / n failed", *(f"{g['n_ok']} / {g['n_failed']}" for g in gs))
        for k in kpi_names:
            if any(g["kpi"][k]["n"] for g in gs):
                t.add_row(escape(KPI_LABELS.get(k, k)), *(cell(g["kpi"][k]) for g in gs))
        con.print(t)
    if failed:
        t = Table(title=f"failed runs ({len(failed)})", title_justify="left")
        for c in ("scenario", "controller", "seed", "error"):
            t.add_column(c)
        for f in failed:
            t.add_row(*(escape(str(v)) for v in (f["scenario_label"], f["controller"], f["seed"], f["error"])))
        con.print(t)
    for n in notes:
        con.print(escape(f"note: {n}"))
    for kind, path in files.items():
        con.print(escape(f"{kind}: {path}"))


# ---------------------------------------------------------------------------------------------------------------
# plots (matplotlib's object API on the Agg canvas: no pyplot state, safe in worker processes)


def _figure(n_panels: int, title: str):
    from matplotlib.figure import Figure

    ncols = min(3, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(5.0 * ncols, 3.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, axes


def _colours(groups) -> dict[str, str]:
    """One colour per controller, the same in every panel."""
    names = sorted({g["controller"] for g in groups}, key=_controller_key)
    return {c: f"C{i % 10}" for i, c in enumerate(names)}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _delay_plot(groups, ok, labels) -> bytes | None:
    scens = [s for s in _scenarios(groups) if any(g["scenario"] == s for g in groups)]
    if not scens:
        return None
    fig, axes = _figure(len(scens), "Benchmark average delay per controller (bar: mean, error bar: 95 % CI, "
                                    "dots: seeds)")
    rng = np.random.default_rng(0)  # jitter of the seed dots only
    colour = _colours(groups)
    for ax, scen in zip(axes, scens, strict=False):
        gs = [g for g in groups if g["scenario"] == scen]
        x = np.arange(len(gs))
        for i, g in enumerate(gs):
            st = g["kpi"].get(DELAY_KPI, {"n": 0})
            if not st["n"]:
                ax.text(i, 0, "no data", ha="center", va="bottom", rotation=90, fontsize=8)
                continue
            ax.bar(i, st["mean"], color=colour[g["controller"]], alpha=0.6,
                   yerr=st["ci95"] if st["ci95"] is not None else None, capsize=4)
            vals = [r["kpi"].get(DELAY_KPI) for r in ok if labels[(str(r.get("scenario")), r.get("protocol"))]
                    == scen and str(r.get("controller")) == g["controller"]]
            vals = [v for v in vals if _is_number(v)]
            ax.scatter(i + rng.uniform(-0.2, 0.2, len(vals)), vals, s=10, color="k", zorder=3)
        ax.set_xticks(x, [f"{g['controller']}\n{g['n_ok']} ok / {g['n_failed']} failed" for g in gs], fontsize=8)
        ax.set_ylabel("delay [s]")
        ax.set_title(scen)
        ax.set_ylim(bottom=0)
    return _png(fig)


def _queue_plot(groups, ok, labels) -> bytes | None:
    series: dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]] = {}
    for r in ok:
        q = r.get("queue_series")
        if not isinstance(q, dict) or not q.get("t_s"):
            continue
        t = np.asarray(q["t_s"], dtype=np.float64)
        h = np.asarray(q["halting"], dtype=np.float64)
        if t.size != h.size or t.size == 0:
            continue
        scen = labels[(str(r.get("scenario")), r.get("protocol"))]
        series.setdefault(scen, {}).setdefault(str(r.get("controller")), []).append((t, h))
    if not series:
        return None
    scens = [s for s in _scenarios(groups) if s in series]
    fig, axes = _figure(len(scens), "Network queue: halting vehicles, mean over seeds")
    colour = _colours(groups)
    for ax, scen in zip(axes, scens, strict=False):
        t0 = min(float(t[0]) for runs in series[scen].values() for t, _ in runs)
        ctrls = sorted(series[scen], key=_controller_key)
        for ctrl in ctrls:
            grid, mean = mean_series(series[scen][ctrl])
            ax.plot((grid - t0) / 60.0, mean, color=colour[ctrl],
                    label=f"{ctrl} ({len(series[scen][ctrl])} seeds)")
        ax.set_xlabel("minutes into the window")
        ax.set_ylabel("halting vehicles")
        ax.set_title(scen)
        ax.legend(fontsize=8)
    return _png(fig)


def mean_series(runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds of (t_s, value) series: each is interpolated onto the union of their sample times and
    counts only inside its own time span (a run that ended early does not pull the mean to zero)."""
    grid = np.unique(np.concatenate([t for t, _ in runs]))
    stack = np.full((len(runs), grid.size), np.nan)
    for k, (t, v) in enumerate(runs):
        inside = (grid >= t[0]) & (grid <= t[-1])
        stack[k, inside] = np.interp(grid[inside], t, v)
    with np.errstate(invalid="ignore"):
        counts = np.sum(np.isfinite(stack), axis=0)
        mean = np.where(counts > 0, np.nansum(stack, axis=0) / np.maximum(counts, 1), np.nan)
    return grid, mean


# ---------------------------------------------------------------------------------------------------------------
# command line


def compare_main(argv: list[str]) -> int:
    """``gronvag compare DIR... [--out DIR]``. User errors are raised as GronvagError (the CLI prints one line)."""
    ap = argparse.ArgumentParser(prog="gronvag compare",
                                 description="every KPI per scenario and controller over seeds: table and plots")
    ap.add_argument("dirs", nargs="+", metavar="DIR", type=Path, help="gronvag evaluate output folders")
    ap.add_argument("--out", type=Path, help="where to write compare.md/.csv and plots (default: the first DIR)")
    args = ap.parse_args(argv)
    compare(args.dirs, args.out)
    return 0
