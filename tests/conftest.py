"""Shared fixtures. Tests that need ../shared/scenarios skip cleanly when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SCENARIOS = REPO.parent / "shared" / "scenarios"
SHARED_NAMES = ("cologne1", "cologne3", "ingolstadt1", "grid4x4", "arterial4x4")


def shared_scenario(name: str) -> Path:
    path = SHARED_SCENARIOS / name
    if not path.is_dir():
        pytest.skip(f"../shared/scenarios/{name} is absent")
    return path


@pytest.fixture(scope="session")
def compiled_shared():
    """Compile a shared scenario once per session: compiled_shared('grid4x4')."""
    from sim.scenario import compile_scenario

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = compile_scenario(shared_scenario(name))
        return cache[name]

    return get


def run_script_json(script: str, timeout_s: float = 120.0):
    """Run a Python script in a fresh interpreter from the repository root (libsumo gets its own process) and
    return the JSON object it prints last."""
    import json
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])
