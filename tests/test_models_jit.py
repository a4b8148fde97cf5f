"""models.jit: the no-reference-counting decorator, and its fallback where numba lacks the option."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

_SCRIPT = """
import json, sys
from models import jit
from models.evaluate import evaluate_cyclic, evaluate_queue
from sim.scenario import compile_scenario
c = compile_scenario("grid-2x2")
a, b = evaluate_cyclic(c.net, c.demand), evaluate_queue(c.net, c.demand)
print(json.dumps({"no_refcount": jit.NO_REFCOUNT, "cyclic": a.network_delay_s, "queue": b.network_delay_s,
                  "cyc_mov": a.mov_delay_s.tolist()}))
"""


@pytest.mark.timeout(600)
def test_the_fallback_without_numbas_option_gives_the_same_results(tmp_path):
    """The models with the option and, forced by the environment as where numba lacks it, with plain njit: equal
    results."""
    def run(mode: str) -> dict:
        env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / mode), GRONVAG_NUMBA_REFCOUNT=str(int(mode == "without")))
        res = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, timeout=500,
                             cwd=REPO, env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        return json.loads(res.stdout.strip().splitlines()[-1])

    with_opt, without = run("with"), run("without")
    assert with_opt["no_refcount"] is True and without["no_refcount"] is False
    for k in ("cyclic", "queue", "cyc_mov"):
        assert with_opt[k] == without[k], k
