"""The project's bundled SUMO scenarios, built on demand into a cache.

Names:

- ``stockholm-corridor``: a 2.4 km inner-city arterial with 9 signalised junctions, cross streets, pedestrian
  crossings, a bus line and one hour of morning-peak demand. Built by netconvert from the plain XML committed in
  ``stockholm_corridor/`` (regenerate it with ``python -m sim.scenarios.stockholm_corridor.make_sources``).
- ``grid-NxM[:level]``: N rows x M columns of signalised junctions (1 <= N, M <= 64) whose most loaded lane has
  degree of saturation ``level`` (0 < level <= 1.5, default 0.7), e.g. ``grid-4x4``, ``grid-32x32:0.9``.

``build(name)`` returns the path of a ready ``.sumocfg`` whose net, routes and additional files sit beside it.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ScenarioError

from . import _build

__all__ = ["CORRIDOR", "GRID_PATTERN", "bundled_names", "build", "is_bundled", "parse_name", "ScenarioName"]

CORRIDOR = "stockholm-corridor"
GRID_PATTERN = "grid-NxM[:level]"
GRID_MAX_SIDE = 64
GRID_DEFAULT_LEVEL = 0.7
GRID_MAX_LEVEL = 1.5
_GRID_RE = re.compile(r"grid-(\d{1,3})x(\d{1,3})(?::(\d*\.?\d+))?")
_HERE = Path(__file__).resolve().parent
CORRIDOR_DIR = _HERE / "stockholm_corridor"
CORRIDOR_SOURCES = tuple(
    f"{CORRIDOR}.{ext}" for ext in ("nod.xml", "edg.xml", "con.xml", "tll.xml", "rou.xml", "add.xml", "sumocfg")
)
CORRIDOR_NETCONVERT_OPTIONS = (
    "--no-turnarounds", "true",
    "--walkingareas", "true",
    "--junctions.corner-detail", "5",
    "--offset.disable-normalization", "true",
)
GRID_NETCONVERT_OPTIONS = ("--no-turnarounds", "true", "--offset.disable-normalization", "true")


@dataclass(frozen=True)
class ScenarioName:
    """A parsed scenario name. ``canonical`` is the name with defaults filled in (``grid-4x4:0.7``)."""

    kind: str  # "corridor" | "grid"
    canonical: str
    rows: int = 0
    cols: int = 0
    level: float = 0.0

    @property
    def slug(self) -> str:
        """File-system friendly name, unique per parameter set."""
        return self.canonical.replace(":", "-")


def parse_name(name: str) -> ScenarioName:
    """Parse a bundled scenario name; ScenarioError if it is not one."""
    name = name.strip()
    if name == CORRIDOR:
        return ScenarioName("corridor", CORRIDOR)
    m = _GRID_RE.fullmatch(name)
    if not m:
        raise ScenarioError(f"unknown scenario {name!r}: bundled are {CORRIDOR} and {GRID_PATTERN} (e.g. grid-4x4:0.8)")
    rows, cols = int(m.group(1)), int(m.group(2))
    level = float(m.group(3)) if m.group(3) else GRID_DEFAULT_LEVEL
    if not (1 <= rows <= GRID_MAX_SIDE and 1 <= cols <= GRID_MAX_SIDE):
        raise ScenarioError(f"scenario {name!r}: grid sides must be 1..{GRID_MAX_SIDE}")
    if not 0.0 < level <= GRID_MAX_LEVEL:
        raise ScenarioError(f"scenario {name!r}: demand level must be in (0, {GRID_MAX_LEVEL}]")
    return ScenarioName("grid", f"grid-{rows}x{cols}:{level:g}", rows, cols, level)


def bundled_names() -> list[str]:
    """Names of the bundled scenarios; any ``grid-NxM[:level]`` is accepted too (see :data:`GRID_PATTERN`)."""
    return [CORRIDOR, "grid-4x4", "grid-8x8", "grid-16x16", "grid-32x32"]


def is_bundled(name: str) -> bool:
    """True for ``stockholm-corridor`` and any valid ``grid-NxM[:level]``."""
    try:
        parse_name(name)
    except ScenarioError:
        return False
    return True


def build(name: str, cache_dir: Path | None = None) -> Path:
    """Build scenario ``name`` (once) and return its ``.sumocfg``.

    The scenario lives in ``<cache>/<name>-<hash>/`` where ``<cache>`` is ``cache_dir``, else
    ``$GRONVAG_CACHE/scenarios``, else ``~/.cache/gronvag/scenarios``, and the hash covers the sources, the
    parameters and the SUMO version. An existing build is returned at once; a new one is published atomically.
    """
    spec = parse_name(name)
    root = _build.cache_root(cache_dir)
    if spec.kind == "corridor":
        parts = [(CORRIDOR_DIR / f).read_bytes() for f in CORRIDOR_SOURCES if (CORRIDOR_DIR / f).is_file()]
        if len(parts) != len(CORRIDOR_SOURCES):
            raise ScenarioError("corridor sources incomplete (run make_sources)", CORRIDOR_DIR)
        parts += [" ".join(CORRIDOR_NETCONVERT_OPTIONS), Path(_build.__file__).read_bytes()]
        final = root / f"{spec.slug}-{_build.digest(parts)}"
        _build.materialise(final, _fill_corridor, f"{CORRIDOR}.sumocfg")
        return final / f"{CORRIDOR}.sumocfg"
    from . import grid, signals

    parts = [spec.canonical, " ".join(GRID_NETCONVERT_OPTIONS)]
    parts += [Path(m.__file__).read_bytes() for m in (grid, signals, _build)]
    final = root / f"{spec.slug}-{_build.digest(parts)}"
    stem = f"grid-{spec.rows}x{spec.cols}"

    def fill(tmp: Path) -> None:
        grid.write_sources(tmp, spec.rows, spec.cols, spec.level)
        _build.netconvert(
            tmp, f"{stem}.net.xml",
            {"node-files": f"{stem}.nod.xml", "edge-files": f"{stem}.edg.xml",
             "connection-files": f"{stem}.con.xml", "tllogic-files": f"{stem}.tll.xml"},
            GRID_NETCONVERT_OPTIONS, Path(grid.__file__),
        )
        _build.carry_phase_bounds(tmp / f"{stem}.net.xml", tmp / f"{stem}.tll.xml")

    _build.materialise(final, fill, f"{stem}.sumocfg")
    return final / f"{stem}.sumocfg"


def _fill_corridor(tmp: Path) -> None:
    for f in CORRIDOR_SOURCES:
        shutil.copyfile(CORRIDOR_DIR / f, tmp / f)
    _build.netconvert(
        tmp, f"{CORRIDOR}.net.xml",
        {"node-files": f"{CORRIDOR}.nod.xml", "edge-files": f"{CORRIDOR}.edg.xml",
         "connection-files": f"{CORRIDOR}.con.xml", "tllogic-files": f"{CORRIDOR}.tll.xml"},
        CORRIDOR_NETCONVERT_OPTIONS, CORRIDOR_DIR,
    )
    _build.carry_phase_bounds(tmp / f"{CORRIDOR}.net.xml", tmp / f"{CORRIDOR}.tll.xml")
