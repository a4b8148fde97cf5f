"""`gronvag evaluate`: a sweep of (controller, seed) SUMO runs of one scenario, in parallel, with one record per run.

Runs go to a process pool (one SUMO per process: libsumo keeps one simulation per process) or, with ``--dask``,
to a dask.distributed cluster. A failed run (SUMO error, missing file) becomes a record with status 'failed' and its
reason; the other runs' results are kept. Outputs in OUT:

* ``runs/<scenario>__<controller>__seed<k>.json``: the run record (KPIs, queue series, per-signal figures); a run
  with the demand scaled (``scale``, SUMO's ``--scale``) has ``__x<scale>`` after the seed, here and in ``work/``;
* ``work/<scenario>__<controller>__seed<k>/``: SUMO's outputs of that run (tripinfo.xml, summary, detectors, log);
* ``summary.json`` and ``summary.csv``: one row per run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from engine.errors import GronvagError
from sim.planio import atomic_write

_COMPILED: dict = {}


def parse_seeds(text: str) -> list[int]:
    """'1-10' -> [1..10]; '1,3,5' -> [1, 3, 5]; '7' -> [7]."""
    out: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise GronvagError(f"bad --seeds {text!r}: use e.g. 1-10 or 1,3,5") from None
    if not out:
        raise GronvagError(f"bad --seeds {text!r}: no seed")
    return out


@contextlib.contextmanager
def _stderr_to(path: Path):
    """Redirect file descriptor 2 (where libsumo writes) to ``path`` for the duration of the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def run_job(job: dict) -> dict:
    """One run, in a worker process. Never raises: failures come back as a record with status 'failed'."""
    from sim.controllers import make_controller
    from sim.harness import RunConfig, run
    from sim.scenario import compile_scenario

    key = f"{job['scenario_name']}__{job['controller']}__seed{job['seed']}"
    scale = float(job.get("scale") or 1.0)
    if scale != 1.0:
        key += f"__x{scale:g}"
    out = Path(job["out"])
    record = {"scenario": job["scenario_name"], "controller": job["controller"], "seed": job["seed"],
              "scale": scale,
              "protocol": job["protocol"], "status": "failed", "error": None, "wall_s": 0.0}
    try:
        ck = (job["scenario"], tuple(job.get("routes") or ()), job.get("begin_s"), job.get("end_s"))
        if ck not in _COMPILED:
            _COMPILED[ck] = compile_scenario(job["scenario"], routes=job.get("routes"), begin_s=job.get("begin_s"),
                                             end_s=job.get("end_s"))
        comp = _COMPILED[ck]
        ctrl = make_controller(job["controller"], job.get("plan"))
        cfg = RunConfig(seed=job["seed"], protocol=job["protocol"], backend=job.get("backend", "libsumo"),
                        gui=job.get("gui", False), sumo_args=("--scale", f"{scale:g}") if scale != 1.0 else ())
        workdir = out / "work" / key
        workdir.mkdir(parents=True, exist_ok=True)
        # SUMO's own console messages (warnings from the simulation) go to the run's folder, not the user's terminal
        with _stderr_to(workdir / "sumo.stderr"):
            record = run(comp.scenario, comp.net, ctrl, cfg, workdir)
        record["scenario"] = job["scenario_name"]
        record["scale"] = scale
    except GronvagError as exc:
        record["error"] = str(exc)
    except Exception as exc:  # a bug or a SUMO crash: keep the reason, keep the sweep going
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=5)
    atomic_write(out / "runs" / f"{key}.json", json.dumps(record, indent=1))
    return record


def _summary_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        row = {k: r.get(k) for k in ("scenario", "controller", "seed", "protocol", "status", "error", "wall_s")}
        row["scale"] = r.get("scale", 1.0)
        row.update(r.get("kpi") or {})
        rows.append(row)
    return rows


def write_summary(out: Path, records: list[dict]) -> None:
    rows = _summary_rows(sorted(records, key=lambda r: (r["scenario"], r["controller"], r["seed"])))
    atomic_write(out / "summary.json", json.dumps(rows, indent=1))
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    atomic_write(out / "summary.csv", buf.getvalue())


def evaluate(scenario: str, controllers: list[str], seeds: list[int], out: Path, *, plan: str | None = None,
             protocol: str = "default", routes: list[str] | None = None, jobs: int | None = None,
             dask_address: str | None = None, backend: str = "libsumo", gui: bool = False,
             progress: bool = True, begin_s: float | None = None, end_s: float | None = None,
             scale: float = 1.0) -> list[dict]:
    """Run every (controller, seed) and return the run records (see module docstring). ``scale``: SUMO's demand
    scale (``--scale``; 1.1 inserts 10 % more vehicles of the same routes), for stress tests."""
    from sim.controllers import CONTROLLERS
    from sim.scenario import load_scenario

    if not scale > 0:
        raise GronvagError(f"--scale {scale:g}: the demand scale must be above 0 (1: the scenario's demand)")
    for c in controllers:
        if c not in CONTROLLERS and not c.startswith("max-pressure:"):
            raise GronvagError(f"unknown controller {c!r} (one of {', '.join(CONTROLLERS)})")
    if "plan" in controllers and not plan:
        raise GronvagError("controller 'plan' needs --plan FILE")
    if plan and not Path(plan).is_file():
        raise GronvagError("plan file not found", plan)
    sc = load_scenario(scenario, routes=routes, begin_s=begin_s, end_s=end_s)  # fail fast, in the parent
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs_list = [
        {"scenario": str(scenario), "scenario_name": sc.name, "routes": routes, "controller": c, "seed": s,
         "begin_s": begin_s, "end_s": end_s,
         "plan": str(Path(plan).resolve()) if plan else None, "protocol": protocol, "out": str(out.resolve()),
         "backend": backend, "gui": gui, "scale": float(scale)}
        for c in controllers for s in seeds
    ]
    records: list[dict] = []
    bar = _progress(progress)
    with bar:
        task = bar.add_task(f"{sc.name}: {len(jobs_list)} runs", total=len(jobs_list))
        if dask_address:
            from distributed import Client
            from distributed import as_completed as dask_completed

            with Client(dask_address) as client:
                futures = client.map(run_job, jobs_list, pure=False)
                for fut in dask_completed(futures):
                    records.append(fut.result())
                    bar.advance(task)
        elif (jobs or 1) <= 1 and backend == "traci":
            for j in jobs_list:
                records.append(run_job(j))
                bar.advance(task)
        else:
            n = jobs or min(len(jobs_list), os.cpu_count() or 1)
            # one SUMO per process at a time; libsumo restarts cleanly in the same process. (No max_tasks_per_child:
            # replacing workers can hang the executor on Python 3.11.)
            with ProcessPoolExecutor(max_workers=n, mp_context=get_context("spawn")) as ex:
                futs = [ex.submit(run_job, j) for j in jobs_list]
                for f in as_completed(futs):
                    records.append(f.result())
                    bar.advance(task)
    write_summary(out, records)
    return records


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled, transient=False)
