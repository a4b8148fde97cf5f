"""Cache folders for built scenarios: content-addressed, built once, published atomically.

A scenario is built into a temporary folder beside its final place and renamed into place when complete, so a
reader sees either nothing or a whole scenario, never a half-written one; of two concurrent builders the second
rename fails and that builder throws its copy away. An interrupted build leaves only a hidden ``.*.tmp`` folder,
swept on a later build once it is an hour old.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from engine.errors import ScenarioError
from sim.sumo import binary, sumo_version, tool_env

BUILD_FORMAT = "1"  # bump when the build steps change in a way the hashed inputs do not show
STALE_TMP_S = 3600.0


def cache_root(cache_dir: Path | None = None) -> Path:
    """Folder holding one sub-folder per built scenario: ``cache_dir``, else ``$GRONVAG_CACHE/scenarios``, else
    ``~/.cache/gronvag/scenarios``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("GRONVAG_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "gronvag"
    return base / "scenarios"


def digest(parts: Iterable[bytes | str]) -> str:
    """Short hex digest of the build inputs, SUMO's version and the build format."""
    h = hashlib.sha256()
    for part in (BUILD_FORMAT, sumo_version(), *parts):
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:16]


def materialise(final: Path, fill: Callable[[Path], None], ready_file: str) -> Path:
    """Return ``final``, building it first with ``fill(tmp_dir)`` unless ``final/ready_file`` already exists."""
    if (final / ready_file).is_file():
        return final
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(parent, final.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=parent))
    try:
        fill(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a cache folder is readable like any other
        if not (tmp / ready_file).is_file():
            raise ScenarioError(f"build produced no {ready_file}", final)
        if final.exists() and not (final / ready_file).is_file():
            shutil.rmtree(final, ignore_errors=True)  # not ours to be incomplete: left by hand, replace it
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / ready_file).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another builder won the race with the same content
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _sweep_stale(parent: Path, name: str) -> None:
    now = time.time()
    for old in parent.glob(f".{name}.*.tmp"):
        try:
            if now - old.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def netconvert(workdir: Path, out_net: str, inputs: dict[str, str], options: Sequence[str], source: Path) -> None:
    """Run netconvert in ``workdir`` on plain-XML ``inputs`` (option name -> file name); its log goes to
    ``netconvert.log``. Errors become ScenarioError naming ``source``."""
    args = [binary("netconvert")]
    for opt, fname in inputs.items():
        args += [f"--{opt}", fname]
    args += ["--output-file", out_net, *options]
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, env=tool_env(), check=False)
    (workdir / "netconvert.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0 or not (workdir / out_net).is_file():
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error")] or proc.stderr.splitlines()
        raise ScenarioError(f"netconvert failed: {errors[0] if errors else 'no output'}", source)


_TL_RE = re.compile(r'<tlLogic id="([^"]+)"')
_PHASE_RE = re.compile(r'(<phase duration="[^"]*"\s*state="([^"]*)")')


def carry_phase_bounds(net: Path, tll: Path) -> None:
    """Copy ``minDur``/``maxDur`` of the loaded programs into the built net.

    netconvert drops them from ``type="static"`` programs; SUMO and sumolib read them from any program, and the
    minimum greens belong with the program. Also checks that netconvert kept every loaded phase state as written.
    """
    import xml.etree.ElementTree as ET

    bounds: dict[str, list[tuple[str, str | None, str | None]]] = {}
    for logic in ET.parse(tll).getroot().iter("tlLogic"):
        bounds[logic.get("id")] = [(p.get("state"), p.get("minDur"), p.get("maxDur")) for p in logic.iter("phase")]
    out, tl_id, k = [], None, 0
    with open(net, encoding="utf-8") as fh:
        for line in fh:
            m = _TL_RE.search(line)
            if m:
                tl_id, k = m.group(1), 0
            elif tl_id is not None and "<phase " in line:
                want = bounds.get(tl_id)
                pm = _PHASE_RE.search(line)
                if want is None or pm is None or k >= len(want) or want[k][0] != pm.group(2):
                    raise ScenarioError(f"netconvert changed the program of traffic light {tl_id!r}", tll)
                extra = "".join(f' {a}="{v}"' for a, v in (("minDur", want[k][1]), ("maxDur", want[k][2])) if v)
                line = line.replace(pm.group(1), pm.group(1) + extra, 1)
                k += 1
            elif "</tlLogic>" in line:
                if tl_id is not None and k != len(bounds.get(tl_id, ())):
                    raise ScenarioError(f"netconvert changed the program of traffic light {tl_id!r}", tll)
                tl_id = None
            out.append(line)
    net.write_text("".join(out), encoding="utf-8")


def sumocfg_text(net: str, routes: Sequence[str], additionals: Sequence[str], end_s: int, seed: int) -> str:
    """A .sumocfg for files in the same folder, one hour of demand by default, teleports only after 300 s."""
    add = f'        <additional-files value="{",".join(additionals)}"/>\n' if additionals else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<configuration>\n"
        "    <input>\n"
        f'        <net-file value="{net}"/>\n'
        f'        <route-files value="{",".join(routes)}"/>\n'
        f"{add}"
        "    </input>\n"
        "    <time>\n"
        '        <begin value="0"/>\n'
        f'        <end value="{end_s}"/>\n'
        "    </time>\n"
        "    <processing>\n"
        '        <time-to-teleport value="300"/>\n'
        '        <pedestrian.model value="striping"/>\n'
        "    </processing>\n"
        "    <random_number>\n"
        f'        <seed value="{seed}"/>\n'
        "    </random_number>\n"
        "</configuration>\n"
    )
