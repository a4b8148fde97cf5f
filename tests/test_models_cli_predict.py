"""`gronvag predict` (models.cli_predict.predict_main): own programs, JSON and SUMO plan files, errors."""

from __future__ import annotations

import json

import pytest

from engine.errors import GronvagError
from engine.plan import Phase, PlanSet, encode_planset, make_plan
from models.cli_predict import parse_params, predict_main


@pytest.fixture(scope="module")
def grid():
    from sim.scenario import compile_scenario

    return compile_scenario("grid-2x2")


def own_planset(net, shift=0):
    """The network's programs, the first signal's offset shifted (a common shift would change nothing)."""
    plans = []
    for s in range(net.n_signals):
        phases = [Phase(net.phase_states[p], int(net.phase_duration_s[p])) for p in net.phases_of(s)]
        plans.append(make_plan(net.signal_ids[s], phases, int(net.signal_offset_s[s]) + (shift if s == 0 else 0)))
    return PlanSet(plans=tuple(plans))


def test_text_and_json_output_for_the_own_programs(capsys, grid):
    assert predict_main(["grid-2x2"]) == 0
    out = capsys.readouterr().out
    assert "cyclic model: mean delay" in out
    n_bins = grid.demand.n_bins
    assert f"{n_bins} analysis periods of {(grid.demand.end_s - grid.demand.begin_s) / 60 / n_bins:.0f} min" in out
    assert predict_main(["grid-2x2", "--params", '{"cyclic_periods": "window"}']) == 0
    assert "analysis periods" not in capsys.readouterr().out
    for sid in grid.net.signal_ids:
        assert sid in out
    assert predict_main(["grid-2x2", "--model", "both", "--json", "--movements"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["models"]) == {"cyclic", "queue"}
    assert set(data["models"]["cyclic"]["signals"]) == set(grid.net.signal_ids)
    assert len(data["models"]["queue"]["movements"]["mov_delay_s"]) == grid.net.n_movements


def test_json_and_sumo_plan_files_give_the_same_prediction(tmp_path, capsys, grid):
    from sim.planio import planset_to_additional

    ps = own_planset(grid.net, shift=13)
    (tmp_path / "plan.json").write_bytes(encode_planset(ps))
    (tmp_path / "plan.add.xml").write_text(planset_to_additional(ps))
    res = []
    for f in ("plan.json", "plan.add.xml", None):
        argv = ["grid-2x2", "--json"] + (["--plan", str(tmp_path / f)] if f else [])
        assert predict_main(argv) == 0
        res.append(json.loads(capsys.readouterr().out)["models"]["cyclic"]["mean_delay_s"])
    assert res[0] == pytest.approx(res[1], rel=1e-12)
    assert res[0] != pytest.approx(res[2], rel=1e-6)  # one offset moved


def test_errors_are_user_errors(tmp_path, grid):
    with pytest.raises(GronvagError):
        predict_main(["grid-2x2", "--plan", str(tmp_path / "missing.json")])
    bad = PlanSet(plans=(make_plan(grid.net.signal_ids[0], [Phase("GG", 30)]),))
    (tmp_path / "bad.json").write_bytes(encode_planset(bad))
    with pytest.raises(GronvagError):
        predict_main(["grid-2x2", "--plan", str(tmp_path / "bad.json")])
    with pytest.raises(GronvagError):
        parse_params('{"nope": 1}')
    with pytest.raises(GronvagError):
        parse_params("[1, 2]")
    p = parse_params('{"sat_flow_scale": 1.2, "levels": {"end_gain_s": 3.0}}')
    assert p.sat_flow_scale == 1.2 and p.levels.end_gain_s == 3.0
    for bad_yield in ('{"yield_sneakers": -1}', '{"yield_gap_s": "fast"}', '{"yield_gap_s": NaN}'):
        with pytest.raises(GronvagError, match="must be a number >= 0"):
            parse_params(bad_yield)
    assert parse_params('{"yield_gap_s": 0}').yield_gap_s == 0  # giving way off


def test_cli_registers_predict():
    from engine.cli import main

    assert main(["predict", "grid-2x2", "--model", "queue"]) == 0
    assert main(["predict", "grid-2x2", "--plan", "/does/not/exist.json"]) == 2
