"""Resolve what the user names as SCENARIO into its files and simulation window.

SCENARIO may be a ``.sumocfg``, a folder holding exactly one, a ``.net.xml`` with routes given separately, or the name
of a bundled scenario (``stockholm-corridor``, ``grid-NxM[:level]``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from engine.errors import ScenarioError
from sim.netcompile import parse_xml


@dataclass(frozen=True)
class Scenario:
    name: str
    net_file: Path
    route_files: tuple[Path, ...]
    additional_files: tuple[Path, ...]
    begin_s: float
    end_s: float
    sumocfg: Path | None = None
    # simulation options of the .sumocfg other than files, outputs, time and seed (e.g. processing, routing)
    sumo_options: tuple[tuple[str, str], ...] = ()

    @property
    def folder(self) -> Path:
        return (self.sumocfg or self.net_file).parent


def _split_files(value: str, base: Path) -> tuple[Path, ...]:
    return tuple((base / v.strip()).resolve() for v in value.replace(";", ",").split(",") if v.strip())


def read_sumocfg(path: Path) -> Scenario:
    root = parse_xml(path)
    if root.tag not in ("configuration", "sumoConfiguration"):
        raise ScenarioError(f"not a SUMO configuration (root element <{root.tag}>)", path)

    def opt(*names: str) -> str | None:
        for el in root.iter():
            if el.tag in names and el.get("value") is not None:
                return el.get("value")
        return None

    base = path.parent
    net = opt("net-file", "n")
    if not net:
        raise ScenarioError("the configuration names no net-file", path)
    net_file = _split_files(net, base)[0]
    routes = _split_files(opt("route-files", "r") or "", base)
    adds = _split_files(opt("additional-files", "a") or "", base)
    for f in (net_file, *routes, *adds):
        if not f.is_file():
            raise ScenarioError(f"the configuration refers to a missing file {f.name!r}", path)
    begin = float(opt("begin", "b") or 0.0)
    end_txt = opt("end", "e")
    end = float(end_txt) if end_txt is not None else begin + 3600.0
    if end <= begin:
        raise ScenarioError(f"empty simulation window: begin {begin:g} s, end {end:g} s", path)
    options = []
    for section in root:
        if section.tag in _NOT_PASSED_SECTIONS:
            continue
        for o in section:
            name, value = o.tag, o.get("value")
            if value is None or name.endswith(("-output", "-file", "-files", "-log")) or name in ("seed", "log"):
                continue
            options.append((name, value))
    return Scenario(path.stem, net_file, routes, adds, begin, end, sumocfg=path.resolve(), sumo_options=tuple(options))


_NOT_PASSED_SECTIONS = {"input", "output", "time", "report", "random_number", "gui_only"}


def load_scenario(
    spec: str | Path,
    routes: list[str | Path] | None = None,
    begin_s: float | None = None,
    end_s: float | None = None,
) -> Scenario:
    """Resolve SCENARIO (see module docstring). ``routes``/``begin_s``/``end_s`` override the configuration's."""
    text = str(spec)
    path = Path(text)
    if not path.exists():
        from sim import scenarios

        if scenarios.is_bundled(text):
            path = scenarios.build(text)
        else:
            raise ScenarioError("no such file, folder or bundled scenario", text)
    if path.is_dir():
        cfgs = sorted(path.glob("*.sumocfg"))
        if len(cfgs) != 1:
            raise ScenarioError(f"expected exactly one .sumocfg in the folder, found {len(cfgs)}", path)
        path = cfgs[0]
    if path.name.endswith(".sumocfg"):
        sc = read_sumocfg(path)
    elif path.name.endswith(".net.xml") or path.name.endswith(".net.xml.gz"):
        if not routes:
            raise ScenarioError("a .net.xml needs route files (--routes)", path)
        sc = Scenario(path.name.split(".")[0], path.resolve(), (), (), 0.0, 3600.0)
    else:
        raise ScenarioError("not a .sumocfg, .net.xml, folder or bundled scenario name", path)
    if routes:
        rs = tuple(Path(r).resolve() for r in routes)
        for r in rs:
            if not r.is_file():
                raise ScenarioError("file not found", r)
        sc = replace(sc, route_files=rs)
    b = sc.begin_s if begin_s is None else float(begin_s)
    e = sc.end_s if end_s is None else float(end_s)
    if e <= b:
        raise ScenarioError(f"empty simulation window: begin {b:g} s, end {e:g} s", sc.sumocfg or sc.net_file)
    return replace(sc, begin_s=b, end_s=e)


@dataclass(frozen=True)
class Compiled:
    scenario: Scenario
    net: object  # models.network.Network
    demand: object  # models.demand.Demand


def compile_scenario(
    spec: str | Path,
    routes: list[str | Path] | None = None,
    bin_s: float = 900.0,
    begin_s: float | None = None,
    end_s: float | None = None,
    sat=None,
    safety=None,
) -> Compiled:
    """SCENARIO -> (Scenario, Network, Demand): the arrays every later stage works on."""
    from sim.demandcompile import compile_demand
    from sim.netcompile import compile_network

    sc = load_scenario(spec, routes=routes, begin_s=begin_s, end_s=end_s)
    net = compile_network(sc.net_file, sc.additional_files, sat=sat, safety=safety, at_s=sc.begin_s)
    dem = compile_demand(net, sc.net_file, sc.route_files, sc.begin_s, sc.end_s, bin_s, sc.additional_files)
    return Compiled(sc, net, dem)
