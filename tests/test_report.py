"""``gronvag compare``: numbers checked by hand on synthetic run records, failures listed, plots written."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from engine.errors import GronvagError
from sim.report import compare, compare_main, mean_series, summarise

# Student t quantile t(0.975, df) for df = 1, 2 (tables)
T975 = {1: 12.706204736, 2: 4.302652730}


def _kpi(delay: float, **extra) -> dict:
    k = {"mean_travel_time_s": 100.0 + delay, "mean_time_loss_s": delay, "mean_waiting_time_s": delay / 2,
         "mean_stops": 1.0, "arrived": 900, "inserted": 1000, "never_inserted": 0, "teleports": 0, "co2_kg": 50.0,
         "fuel_l": 20.0, "benchmark_delay_s": delay, "benchmark_delay_exact_s": delay + 1,
         "never_departed_heuristic": 0, "never_departed_exact": 0, "bus_mean_time_loss_s": None,
         "ped_mean_time_loss_s": None, "n_tripinfo": 1000}
    k.update(extra)
    return k


def _record(scenario, controller, seed, delay=None, status="ok", error=None, queue=None, protocol="resco") -> dict:
    rec = {"scenario": scenario, "controller": controller, "seed": seed, "protocol": protocol, "status": status,
           "error": error, "wall_s": 1.5, "kpi": _kpi(delay) if delay is not None else None}
    if queue is not None:
        rec["queue_series"] = {"t_s": [25200.0 + 60 * i for i in range(len(queue))], "halting": queue}
    return rec


def _write(folder: Path, records: list[dict]) -> Path:
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    for r in records:
        name = f"{r['scenario']}__{r['controller']}__{r['seed']}.json"
        (folder / "runs" / name).write_text(json.dumps(r))
    return folder


@pytest.fixture
def evaluate_dirs(tmp_path):
    a = _write(tmp_path / "a", [
        _record("cologne1", "fixed", 1, 10.0, queue=[0, 4, 8]),
        _record("cologne1", "fixed", 2, 12.0, queue=[0, 6, 10]),
        _record("cologne1", "fixed", 3, 17.0, queue=[0, 5, 9]),
        _record("grid4x4", "fixed", 1, 90.0),
    ])
    b = _write(tmp_path / "b", [
        _record("cologne1", "webster", 1, 30.0, queue=[0, 10, 20]),
        _record("cologne1", "webster", 2, 40.0, queue=[0, 12, 24]),
        _record("cologne1", "webster", 3, status="failed", error="SUMO failed to start: Error: bad\nsecond line"),
        _record("grid4x4", "max-pressure", 1, status="failed", error=None),
    ])
    (b / "runs" / "garbage.json").write_text("{not json")
    return a, b


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_summarise_by_hand():
    st = summarise([10.0, 12.0, 17.0, None, float("nan")])
    sd = math.sqrt(((10 - 13) ** 2 + (12 - 13) ** 2 + (17 - 13) ** 2) / 2)
    assert st.n == 3 and st.mean == pytest.approx(13.0) and st.median == 12.0
    assert st.ci95 == pytest.approx(T975[2] * sd / math.sqrt(3), rel=1e-9)
    one = summarise([5])
    assert (one.n, one.mean, one.ci95, one.median) == (1, 5.0, None, 5.0)
    assert summarise([None]).n == 0


def test_compare_numbers_failures_and_files(evaluate_dirs, tmp_path):
    a, b = evaluate_dirs
    out = tmp_path / "report"
    con = _quiet()
    res = compare([a, b], out, console=con)
    printed = con.file.getvalue()
    assert "mean travel time [s]" in printed and "13 ± 8.957 (12)" in printed  # labels survive rich markup
    groups = {(g["scenario"], g["controller"]): g for g in res["groups"]}
    assert list(groups) == [("cologne1", "fixed"), ("cologne1", "webster"), ("grid4x4", "fixed"),
                            ("grid4x4", "max-pressure")]

    fixed = groups[("cologne1", "fixed")]
    assert (fixed["n_ok"], fixed["n_failed"]) == (3, 0)
    d = fixed["kpi"]["benchmark_delay_s"]
    half = T975[2] * math.sqrt(13.0) / math.sqrt(3)  # sample variance of 10, 12, 17 is 13
    assert d["mean"] == pytest.approx(13.0) and d["median"] == 12.0 and d["ci95"] == pytest.approx(half)
    web = groups[("cologne1", "webster")]
    assert (web["n_ok"], web["n_failed"]) == (2, 1)
    assert web["kpi"]["benchmark_delay_s"]["ci95"] == pytest.approx(T975[1] * math.sqrt(50.0) / math.sqrt(2))
    assert web["kpi"]["bus_mean_time_loss_s"] == {"n": 0, "mean": None, "ci95": None, "median": None}
    mp = groups[("grid4x4", "max-pressure")]
    assert (mp["n_ok"], mp["n_failed"]) == (0, 1)

    # failed runs: two records plus the unreadable file, each with a one-line error
    errors = sorted((f["scenario"], f["controller"], str(f["seed"])) for f in res["failed"])
    assert errors == [("?", "?", "None"), ("cologne1", "webster", "3"), ("grid4x4", "max-pressure", "1")]
    assert all("\n" not in f["error"] for f in res["failed"])

    md = (out / "compare.md").read_text()
    assert f"13 ± {half:.3f} (12)" in md
    assert "| n ok / n failed | 3 / 0 | 2 / 1 |" in md
    assert "SUMO failed to start: Error: bad second line" in md and "unreadable run record" in md
    assert "bus mean time loss" not in md  # a KPI without any value gets no row

    rows = list(csv.DictReader((out / "compare.csv").open()))
    row = next(r for r in rows if r["scenario"] == "cologne1" and r["controller"] == "fixed"
               and r["kpi"] == "benchmark_delay_s")
    assert float(row["mean"]) == pytest.approx(13.0) and float(row["median"]) == 12.0
    assert float(row["ci95_low"]) == pytest.approx(13.0 - half) and float(row["ci95_high"]) == pytest.approx(13 + half)
    assert row["n_ok"] == "3" and row["n"] == "3"

    for kind in ("delay_plot", "queue_plot"):
        png = Path(res["files"][kind])
        assert png.parent == out and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        from matplotlib.image import imread

        img = imread(png)
        assert img.shape[0] > 100 and float(np.std(img)) > 0.01  # something is drawn
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_compare_main_default_out_is_first_dir(evaluate_dirs, capsys):
    a, b = evaluate_dirs
    assert compare_main([str(a), str(b)]) == 0
    assert (a / "compare.md").is_file() and (a / "compare.csv").is_file()
    printed = capsys.readouterr().out
    assert "cologne1" in printed and "failed runs" in printed


def test_missing_or_empty_dir_is_an_error(tmp_path, evaluate_dirs):
    a, _ = evaluate_dirs
    with pytest.raises(GronvagError, match="no such evaluate output folder"):
        compare([a, tmp_path / "nope"], tmp_path / "out", console=_quiet())
    (tmp_path / "empty").mkdir()
    with pytest.raises(GronvagError, match="no run records"):
        compare([tmp_path / "empty"], console=_quiet())


def test_duplicates_and_protocols(tmp_path):
    a = _write(tmp_path / "a", [_record("g", "fixed", 1, 10.0), _record("g", "fixed", 2, 20.0, protocol="default")])
    b = _write(tmp_path / "b", [_record("g", "fixed", 1, 14.0)])
    res = compare([a, b], tmp_path / "out", console=_quiet())
    groups = {(g["scenario"], g["controller"]): g for g in res["groups"]}
    assert groups[("g [resco]", "fixed")]["kpi"]["benchmark_delay_s"]["mean"] == 14.0  # the later DIR wins
    assert groups[("g [default]", "fixed")]["kpi"]["benchmark_delay_s"]["mean"] == 20.0
    assert len(res["notes"]) == 1 and "replaced" in res["notes"][0]
    assert "queue_plot" not in res["files"]  # no queue series anywhere: no queue plot


def test_mean_series_by_hand():
    t1, v1 = np.array([0.0, 60.0, 120.0]), np.array([0.0, 6.0, 12.0])
    t2, v2 = np.array([0.0, 60.0]), np.array([2.0, 8.0])
    grid, mean = mean_series([(t1, v1), (t2, v2)])
    assert grid.tolist() == [0.0, 60.0, 120.0]
    assert mean.tolist() == [1.0, 7.0, 12.0]  # the second run ended at 60 s and does not count after it
