"""Plans <-> SUMO additional files (tlLogic programs, WAUTs). Written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

from engine.errors import GronvagError
from engine.plan import Phase, PlanSet, SignalPlan, make_plan, phase_kind
from sim.netcompile import parse_xml, read_tl_programs


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write a file so that readers see the old content or the whole new content, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def planset_to_additional(ps: PlanSet) -> str:
    """SUMO additional-file XML with one static tlLogic per plan (loads with `sumo -a`, opens in netedit).

    Plans with validity periods that do not cover the whole day get a WAUT switching between them.
    """
    lines = ["<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "<additional>"]
    for p in ps.plans:
        lines.append(
            f"    <tlLogic id={quoteattr(p.signal_id)} type=\"static\" programID={quoteattr(p.program_id)} "
            f"offset=\"{p.offset_s}\">"
        )
        for ph in p.phases:
            extra = ""
            if ph.min_s:
                extra += f" minDur=\"{ph.min_s}\""
            if ph.max_s:
                extra += f" maxDur=\"{ph.max_s}\""
            lines.append(f"        <phase duration=\"{ph.duration_s}\" state=\"{ph.state}\"{extra}/>")
        lines.append("    </tlLogic>")
    by_signal: dict[str, list[SignalPlan]] = {}
    for p in ps.plans:
        by_signal.setdefault(p.signal_id, []).append(p)
    for sid, plans in by_signal.items():
        if len(plans) < 2:
            continue
        plans = sorted(plans, key=lambda q: q.valid_from_s)
        wid = f"gv_waut_{sid}"
        lines.append(f"    <WAUT id={quoteattr(wid)} refTime=\"0\" startProg={quoteattr(plans[0].program_id)}>")
        for q in plans:
            lines.append(f"        <wautSwitch time=\"{q.valid_from_s:g}\" to={quoteattr(q.program_id)}/>")
        lines.append("    </WAUT>")
        lines.append(f"    <wautJunction wautID={quoteattr(wid)} junctionID={quoteattr(sid)}/>")
    lines.append("</additional>")
    return "\n".join(lines) + "\n"


def additional_to_planset(path: Path, scenario: str = "") -> PlanSet:
    """Read the tlLogic programs of a SUMO additional file as a PlanSet (durations rounded to whole seconds)."""
    programs: dict[str, dict] = {}
    root = parse_xml(Path(path))
    read_tl_programs(root, programs)
    if not programs:
        raise GronvagError("no tlLogic program in the file", path)
    plans = []
    for sid, prog in programs.items():
        phases = [
            Phase(st, max(1, int(round(d))), int(round(mn)) if mn != d else 0, int(round(mx)) if mx != d else 0,
                  phase_kind(st))
            for st, d, mn, mx in prog["phases"]
        ]
        plan = make_plan(sid, phases, int(round(prog["offset"])), program_id=prog["programID"])
        plans.append(plan)
    return PlanSet(plans=tuple(plans), scenario=scenario)
