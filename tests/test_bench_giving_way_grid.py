"""bench.giving_way_grid: the models' rank over (t0, sneakers) pairs on the calibration plans."""

import re

import pytest

from bench.giving_way_grid import main


def test_the_grid_prints_every_pair_and_the_best_on_the_calibration_plans(capsys, tmp_path):
    assert main(["grid-2x2", "--end", "300", "--plans", "3", "--gaps", "0,3", "--sneakers", "0.5", "--jobs", "1",
                 "--sumo-cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"t0 (\d\.\d\d) s, sneakers 0\.50: calibration (-?\d\.\d{3}|nan)", out)
    assert [r[0] for r in rows] == ["0.00", "3.00"]
    best = re.search(r"best on the calibration plans: t0 (\S+) s", out)
    top = max(rows, key=lambda r: float(r[1]))
    assert best and float(best.group(1)) == float(top[0])
    assert len(list(tmp_path.glob("*.json"))) == 3 * 3  # three plans x three SUMO seeds, kept for a rerun


def test_negative_constants_are_a_usage_error():
    with pytest.raises(SystemExit):
        main(["grid-2x2", "--gaps=-1"])


def test_the_grid_runs_on_the_constants_given(capsys, tmp_path):
    """--params sets the other constants: a lower saturation flow moves the model's level (its MAPE) on the same
    SUMO runs (the second call takes them from the cache)."""
    common = ["grid-2x2", "--end", "300", "--plans", "3", "--gaps", "3", "--sneakers", "0.5", "--jobs", "1",
              "--model", "queue", "--sumo-cache", str(tmp_path)]

    def mape() -> float:
        out = capsys.readouterr().out
        return float(re.search(r"calibration (?:-?\d\.\d{3}|nan) \((\d+\.\d) %\)", out).group(1))

    assert main(common) == 0
    base = mape()
    assert main(common + ["--params", '{"sat_flow_scale": 0.7}']) == 0
    assert mape() != base
    assert len(list(tmp_path.glob("*.json"))) == 9  # no new SUMO runs


def test_measured_flows_run_beside_the_compiled_ones_on_the_same_plans(capsys, tmp_path):
    """--sat-flow runs each pair on both flows: two rows per pair, the measured flows' level differs, the same SUMO
    runs (no new ones), and the best names its flows."""
    cache = tmp_path / "cache"
    sat = tmp_path / "sat.json"
    sat.write_text('{"base_veh_h_lane": 1200}')
    assert main(["grid-2x2", "--end", "300", "--plans", "3", "--gaps", "3", "--sneakers", "0.5", "--jobs", "1",
                 "--model", "queue", "--sumo-cache", str(cache), "--sat-flow", str(sat)]) == 0
    out = capsys.readouterr().out
    rows = dict(re.findall(r"(compiled|measured) flows, t0 3\.00 s, sneakers 0\.50: calibration "
                           r"(?:-?\d\.\d{3}|nan) \((\d+\.\d) %\)", out))
    assert set(rows) == {"compiled", "measured"}
    assert rows["compiled"] != rows["measured"]
    assert re.search(r"best on the calibration plans: (compiled|measured) flows, t0 3 s", out)
    assert len(list(cache.glob("*.json"))) == 9


@pytest.mark.parametrize("content, needle", [("{not json", "malformed JSON"), ('{"base_veh_h_lane": -5}', "positive")])
def test_a_bad_sat_flow_file_is_one_line_naming_it(capsys, tmp_path, content, needle):
    sat = tmp_path / "sat.json"
    sat.write_text(content)
    assert main(["grid-2x2", "--end", "300", "--plans", "3", "--jobs", "1", "--sat-flow", str(sat)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(sat) in err[0] and needle in err[0], err
