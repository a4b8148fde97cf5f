"""The one place that knows where SUMO lives and how to talk to it.

SUMO comes from PyPI: the ``eclipse-sumo`` wheel ships the binaries and tools, ``sumolib``/``traci``/``libsumo`` the
Python bindings. No system install and no ``SUMO_HOME`` are needed; everything here is resolved lazily, on first use,
so importing the project never touches SUMO.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from pathlib import Path

from engine.errors import SumoNotFoundError


@functools.cache
def sumo_home() -> Path:
    """Root of the SUMO installation from the eclipse-sumo wheel (falls back to ``$SUMO_HOME`` if set and valid)."""
    try:
        import sumo  # the eclipse-sumo wheel

        home = Path(sumo.SUMO_HOME)
        if (home / "bin").is_dir():
            return home
    except ImportError:
        pass
    env = os.environ.get("SUMO_HOME")
    if env and (Path(env) / "bin").is_dir():
        return Path(env)
    raise SumoNotFoundError(
        "SUMO not found: install the eclipse-sumo wheel (pip install eclipse-sumo) or run `make test` to set up .venv"
    )


def binary(name: str = "sumo") -> str:
    """Absolute path of a SUMO binary (``sumo``, ``sumo-gui``, ``netconvert``, ``duarouter``, ...)."""
    exe = sumo_home() / "bin" / name
    if exe.is_file():
        return str(exe)
    found = shutil.which(name)
    if found:
        return found
    raise SumoNotFoundError(f"SUMO binary {name!r} not found under {sumo_home() / 'bin'}")


def tool(relpath: str) -> Path:
    """Path of a script under SUMO's ``tools/`` folder, e.g. ``tool('tlsCycleAdaptation.py')``."""
    p = sumo_home() / "tools" / relpath
    if not p.is_file():
        raise SumoNotFoundError(f"SUMO tool {relpath!r} not found under {sumo_home() / 'tools'}")
    return p


def tool_env() -> dict[str, str]:
    """Environment for running SUMO's tool scripts as subprocesses (they import sumolib via SUMO_HOME)."""
    env = dict(os.environ)
    env["SUMO_HOME"] = str(sumo_home())
    tools = str(sumo_home() / "tools")
    env["PYTHONPATH"] = tools + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def python() -> str:
    """The interpreter to run SUMO tool scripts with (the project's own)."""
    return sys.executable


def sumo_version() -> str:
    try:
        from importlib.metadata import version

        return version("eclipse-sumo")
    except Exception:  # pragma: no cover - only without the wheel
        return "unknown"


def connection_module(backend: str = "libsumo"):
    """Import and return the TraCI-compatible module: ``libsumo`` (in process, fast) or ``traci`` (socket, GUI)."""
    if backend == "libsumo":
        try:
            import libsumo

            return libsumo
        except ImportError as exc:  # pragma: no cover
            raise SumoNotFoundError(f"libsumo not importable ({exc}); use backend='traci'") from exc
    if backend == "traci":
        import traci

        return traci
    raise ValueError(f"unknown SUMO backend {backend!r} (libsumo or traci)")


def constants(conn_mod=None):
    """TraCI constants (variable ids for subscriptions); identical for libsumo and traci."""
    import traci.constants as tc

    return tc
