"""bench.approach_compare: SUMO and model delay per approach for two plans (a short real run)."""

import re

import pytest

from bench.approach_compare import main


def test_prints_every_approach_of_the_signals_asked_and_the_totals(capsys):
    assert main(["grid-1x1", "own", "own", "--seeds", "1", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if re.match(r"^\S+ \S+-?\S*\s+-?\d", ln) and "->" in ln]
    assert len(rows) >= 4
    total = [ln for ln in out.splitlines() if ln.startswith("all approaches")]
    assert len(total) == 1
    sumo_a, sumo_b = map(float, re.findall(r"(-?\d+\.\d+)", total[0])[:2])
    assert sumo_a == sumo_b > 0  # the same plan and seed: SUMO is deterministic


def test_unknown_signal_is_a_one_line_error():
    with pytest.raises(SystemExit, match="no signal 'nope'"):
        main(["grid-1x1", "own", "own", "--seeds", "1", "--signals", "nope", "--jobs", "1"])
