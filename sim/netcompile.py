"""Compile a SUMO .net.xml (+ additional files with tlLogic programs) into an immutable ``models.network.Network``.

Reads the XML directly with ElementTree (one pass, no per-object Python graph), so a 1024-signal grid compiles in a
few seconds. Junction link indices follow SUMO's own numbering (incoming lanes in ``incLanes`` order, then each lane's
connections in file order, walking-area links skipped except those onto a crossing): the rule sumolib uses too.

Saturation flow defaults (documented, overridable per movement through ``SatFlowConfig.overrides``):
``base_veh_h_lane`` = 1800 veh/h per lane for a through movement, times a turn factor (right 0.85, protected left
0.90, permissive left 0.50, U-turn 0.40). A lane shared by k movements gives each 1/k of its capacity.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import ScenarioError
from engine.plan import phase_kind
from engine.safety import derive_spec, encode_state
from models.network import (
    PHASE_KIND_NAMES,
    TURN_LEFT,
    TURN_RIGHT,
    TURN_STRAIGHT,
    TURN_UTURN,
    Network,
    csr,
)

JAM_SPACING_M = 7.5  # stored vehicle length + gap, m (passenger car)
_TURN = {"s": TURN_STRAIGHT, "l": TURN_LEFT, "L": TURN_LEFT, "r": TURN_RIGHT, "R": TURN_RIGHT, "t": TURN_UTURN}


@dataclass(frozen=True)
class SatFlowConfig:
    """Saturation-flow model: base flow per lane and turn factors; overrides in veh/h keyed by
    (signal_id, from_edge, to_edge) for the whole movement."""

    base_veh_h_lane: float = 1800.0
    right_factor: float = 0.85
    left_protected_factor: float = 0.90
    left_permissive_factor: float = 0.50
    uturn_factor: float = 0.40
    overrides: dict[tuple[str, str, str], float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, path: str | Path) -> SatFlowConfig:
        """Read a calibration file: ``{"base_veh_h_lane": 1850, "right_factor": 0.85, ...,
        "overrides": [{"signal": "J1", "from": "E1", "to": "E2", "veh_h": 1700}, ...]}`` (every key optional)."""
        import json

        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except OSError as exc:
            raise ScenarioError(f"cannot read saturation-flow file ({exc.strerror})", path) from None
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"malformed JSON ({exc.msg} at line {exc.lineno})", path) from None
        if not isinstance(raw, dict):
            raise ScenarioError("expected a JSON object", path)
        known = {"base_veh_h_lane", "right_factor", "left_protected_factor", "left_permissive_factor", "uturn_factor"}
        records = {"schema", "measured_on", "lost_times"}  # what satflow writes for the record
        unknown = set(raw) - known - {"overrides"} - records
        if unknown:
            raise ScenarioError(f"unknown keys {sorted(unknown)}", path)
        kw = {}
        for k in known & set(raw):
            if not isinstance(raw[k], int | float) or raw[k] <= 0:
                raise ScenarioError(f"{k} must be a positive number", path)
            kw[k] = float(raw[k])
        over = {}
        for i, o in enumerate(raw.get("overrides", [])):
            try:
                over[(str(o["signal"]), str(o["from"]), str(o["to"]))] = float(o["veh_h"])
            except (KeyError, TypeError, ValueError):
                raise ScenarioError(f"override {i} needs signal, from, to and a numeric veh_h", path) from None
        return cls(**kw, overrides=over)

    def factor(self, turn: int, protected: bool) -> float:
        if turn == TURN_RIGHT:
            return self.right_factor
        if turn == TURN_LEFT:
            return self.left_protected_factor if protected else self.left_permissive_factor
        if turn == TURN_UTURN:
            return self.uturn_factor
        return 1.0


@dataclass(frozen=True)
class SafetyDefaults:
    """Minimum greens assumed where the scenario's program does not show longer ones (s)."""

    min_green_s: int = 5
    ped_min_green_s: int = 5


def parse_xml(path: Path) -> ET.Element:
    """Parse an XML file; a missing, unreadable or malformed file is a one-line ScenarioError naming it."""
    if not path.is_file():
        raise ScenarioError("file not found", path)
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ScenarioError(f"malformed XML ({exc})", path) from None
    except OSError as exc:
        raise ScenarioError(f"cannot read file ({exc.strerror})", path) from None


def _junction_of_internal(edge_id: str) -> str:
    # internal edge ids look like ':<junction>_<k>' (crossings ':<junction>_c<k>', walking areas ':<junction>_w<k>')
    return edge_id[1:].rsplit("_", 1)[0]


def read_tl_programs(root: ET.Element, programs: dict[str, dict], catalogue: dict | None = None) -> None:
    """Collect tlLogic elements of a net or additional file into ``programs[tl_id]`` (the last loaded is active,
    as in SUMO) and, when given, every program into ``catalogue[(tl_id, programID)]``."""
    for tl in root.iter("tlLogic"):
        tid = tl.get("id")
        phases = []
        for ph in tl.iter("phase"):
            dur = float(ph.get("duration"))
            phases.append(
                (
                    ph.get("state"),
                    dur,
                    float(ph.get("minDur", dur)),
                    float(ph.get("maxDur", dur)),
                )
            )
        programs[tid] = {
            "programID": tl.get("programID", "0"),
            "type": tl.get("type", "static"),
            "offset": float(tl.get("offset", "0")),
            "phases": phases,
        }
        if catalogue is not None:
            catalogue[(tid, programs[tid]["programID"])] = programs[tid]


def apply_wauts(roots: list[ET.Element], programs: dict[str, dict], catalogue: dict, at_s: float) -> None:
    """Make the program a WAUT has switched to by time ``at_s`` the active one of each junction it controls."""
    wauts: dict[str, tuple[str, list[tuple[float, str]]]] = {}
    junctions: list[tuple[str, str]] = []
    for root in roots:
        for w in root.iter("WAUT"):
            ref = float(w.get("refTime", "0"))
            switches = sorted((float(x.get("time")) + ref, x.get("to")) for x in w.iter("wautSwitch"))
            wauts[w.get("id")] = (w.get("startProg", ""), switches)
        junctions += [(j.get("wautID"), j.get("junctionID")) for j in root.iter("wautJunction")]
    for wid, tid in junctions:
        if wid not in wauts:
            continue
        active, switches = wauts[wid]
        for t, to in switches:
            if t <= at_s:
                active = to
        if (tid, active) in catalogue:
            programs[tid] = catalogue[(tid, active)]


def compile_network(
    net_path: str | Path,
    additional_files: list[str | Path] | tuple = (),
    sat: SatFlowConfig | None = None,
    safety: SafetyDefaults | None = None,
    at_s: float = 0.0,
) -> Network:
    """Compile ``net_path`` (and tlLogic programs of ``additional_files``, loaded after it) into a Network.

    The active program of each traffic light is the one SUMO runs at time ``at_s``: the last loaded, unless a WAUT
    has switched the junction to another by then.
    """
    net_path = Path(net_path)
    sat = sat or SatFlowConfig()
    safety = safety or SafetyDefaults()
    root = parse_xml(net_path)
    if root.tag != "net":
        raise ScenarioError(f"not a SUMO network (root element <{root.tag}>, expected <net>)", net_path)

    # --- edges and lanes
    edge_from: dict[str, str] = {}
    edge_to: dict[str, str] = {}
    edge_function: dict[str, str] = {}
    edge_lanes: dict[str, list[tuple[float, float, str]]] = {}  # (length, speed, allow/disallow marker)
    lane_length: dict[str, float] = {}
    crossing_edges: dict[str, list[str]] = {}
    for e in root.iter("edge"):
        eid = e.get("id")
        fn = e.get("function", "normal")
        edge_function[eid] = fn
        if fn == "normal":
            edge_from[eid] = e.get("from")
            edge_to[eid] = e.get("to")
        lanes = []
        for ln in e.iter("lane"):
            if fn == "normal":
                lane_length[ln.get("id")] = float(ln.get("length"))
            disallow = ln.get("disallow", "")
            allow = ln.get("allow", "")
            vehicle_lane = not (allow and "passenger" not in allow and "bus" not in allow and "truck" not in allow)
            vehicle_lane = vehicle_lane and "passenger" not in disallow.split()
            lanes.append((float(ln.get("length")), float(ln.get("speed")), "v" if vehicle_lane else "p"))
        edge_lanes[eid] = lanes
        if fn == "crossing":
            crossing_edges[eid] = e.get("crossingEdges", "").split()

    # --- junctions: incoming lanes and foe matrices
    junction_inc: dict[str, list[str]] = {}
    junction_foes: dict[str, dict[int, str]] = {}
    for j in root.iter("junction"):
        if j.get("type") == "internal":
            continue
        jid = j.get("id")
        junction_inc[jid] = j.get("incLanes", "").split()
        junction_foes[jid] = {int(r.get("index")): r.get("foes", "") for r in j.iter("request")}

    # --- connections
    lane_out: dict[str, list[dict]] = defaultdict(list)  # from lane id -> connections in file order
    tl_conns: dict[str, list[dict]] = defaultdict(list)
    edge_succ: dict[str, list[str]] = defaultdict(list)
    for c in root.iter("connection"):
        a = dict(c.attrib)
        frm, to = a["from"], a["to"]
        a["from_lane_id"] = f"{frm}_{a['fromLane']}"
        lane_out[a["from_lane_id"]].append(a)
        if edge_function.get(frm) == "normal" and edge_function.get(to) == "normal" and to not in edge_succ[frm]:
            edge_succ[frm].append(to)
        if "tl" in a and "linkIndex" in a:
            tl_conns[a["tl"]].append(a)

    # junction request index of each connection (SUMO's numbering; see module docstring)
    for jid, inc in junction_inc.items():
        k = 0
        for lane_id in inc:
            for a in lane_out.get(lane_id, ()):
                ffn = edge_function.get(a["from"], "normal")
                tfn = edge_function.get(a["to"], "normal")
                if tfn == "walkingarea" or (ffn == "walkingarea" and tfn != "crossing"):
                    continue
                a["_junction"] = jid
                a["_req"] = k
                k += 1

    programs: dict[str, dict] = {}
    catalogue: dict[tuple[str, str], dict] = {}
    read_tl_programs(root, programs, catalogue)
    roots = [root]
    for add in additional_files:
        roots.append(parse_xml(Path(add)))
        read_tl_programs(roots[-1], programs, catalogue)
    apply_wauts(roots, programs, catalogue, at_s)
    if not tl_conns:
        raise ScenarioError("the network has no traffic lights (no connection is signal-controlled)", net_path)
    missing = sorted(set(tl_conns) - set(programs))
    if missing:
        raise ScenarioError(f"traffic light {missing[0]!r} controls connections but has no tlLogic program", net_path)

    signal_ids = tuple(sorted(tl_conns))
    signal_index = {s: i for i, s in enumerate(signal_ids)}

    # --- per signal: links, phases, foes, movements, crossings
    sig_phase_ptr = [0]
    sig_link_ptr = [0]
    sig_offset, sig_cycle, sig_allred, sig_actuated, sig_prog, sig_junctions = [], [], [], [], [], []
    ph_signal, ph_dur, ph_min, ph_max, ph_kind, ph_states = [], [], [], [], [], []
    ph_code_parts = []
    ph_code_ptr = [0]
    link_signal_l, link_movement_l, link_crossing_l = [], [], []
    link_min_l, link_yel_l, link_ra_l = [], [], []
    foe_lists: list[list[int]] = []
    path_foe_lists: list[list[int]] = []
    mov_signal, mov_from, mov_to, mov_turn, mov_lanes, mov_sat, mov_speed, mov_prot = [], [], [], [], [], [], [], []
    mov_links: list[list[int]] = []
    mov_in_lanes: list[tuple[str, ...]] = []
    mov_out_lanes: list[tuple[str, ...]] = []
    movement_index: dict[tuple[str, str, str], int] = {}
    approach_index: dict[tuple[str, str], int] = {}
    appr_signal, appr_edge, appr_len, appr_lanes, appr_storage = [], [], [], [], []
    crossing_ids, crossing_signal, crossing_len = [], [], []
    edge_signal: dict[str, int] = {}  # edge -> signal whose approach it is

    for s, sid in enumerate(signal_ids):
        prog = programs[sid]
        conns = tl_conns[sid]
        n_links = max(int(a["linkIndex"]) for a in conns) + 1
        for state, *_ in prog["phases"]:
            if len(state) < n_links:
                raise ScenarioError(
                    f"traffic light {sid!r}: phase state {state!r} has {len(state)} signals but link index "
                    f"{n_links - 1} is used",
                    net_path,
                )
        n_links = len(prog["phases"][0][0]) if prog["phases"] else n_links
        if not prog["phases"]:
            raise ScenarioError(f"traffic light {sid!r} has a program without phases", net_path)
        base = sig_link_ptr[-1]
        sig_link_ptr.append(base + n_links)
        sig_prog.append(prog["programID"])
        sig_offset.append(prog["offset"])
        sig_actuated.append(prog["type"] != "static")
        sig_cycle.append(sum(p[1] for p in prog["phases"]))
        sig_junctions.append(tuple(sorted({a.get("_junction", "") for a in conns} - {""})))
        for state, dur, mn, mx in prog["phases"]:
            ph_signal.append(s)
            ph_dur.append(dur)
            ph_min.append(mn)
            ph_max.append(mx)
            ph_kind.append(PHASE_KIND_NAMES.index(phase_kind(state)))
            ph_states.append(state)
            ph_code_parts.append(encode_state(state))
            ph_code_ptr.append(ph_code_ptr[-1] + len(state))
        sig_phase_ptr.append(len(ph_signal))

        # links -> connections
        by_link: dict[int, list[dict]] = defaultdict(list)
        for a in conns:
            by_link[int(a["linkIndex"])].append(a)
        # foes between this signal's links, via the junction request matrices
        foes = np.zeros((n_links, n_links), bool)
        by_junction: dict[str, list[dict]] = defaultdict(list)
        for a in conns:
            if "_req" in a:
                by_junction[a["_junction"]].append(a)
        for jid, js in by_junction.items():
            fm = junction_foes.get(jid, {})
            for a in js:
                row = fm.get(a["_req"], "")
                n = len(row)
                for b in js:
                    rb = b["_req"]
                    if rb < n and row[n - 1 - rb] == "1":
                        ia, ib = int(a["linkIndex"]), int(b["linkIndex"])
                        if ia != ib:
                            foes[ia, ib] = foes[ib, ia] = True
        # crossings and pedestrian links
        is_ped = np.zeros(n_links, bool)
        link_cross = np.full(n_links, -1, np.int64)
        for li, cs in by_link.items():
            for a in cs:
                if edge_function.get(a["to"]) == "crossing":
                    is_ped[li] = True
                    if link_cross[li] < 0:
                        link_cross[li] = len(crossing_ids)
                        crossing_ids.append(a["to"])
                        crossing_signal.append(s)
                        lanes = edge_lanes.get(a["to"], [(0.0, 0.0, "p")])
                        crossing_len.append(lanes[0][0])
        spec = derive_spec(
            sid,
            [(st, d) for st, d, *_ in prog["phases"]],
            foes,
            min_green_s=safety.min_green_s,
            ped_min_green_s=safety.ped_min_green_s,
            is_pedestrian=is_ped,
        )
        sig_allred.append(spec.allred_s)

        # movements of this signal
        green_major = np.zeros(n_links, bool)
        for state, *_ in prog["phases"]:
            green_major |= np.frombuffer(state[:n_links].encode(), np.uint8) == ord("G")
        groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for a in conns:
            if edge_function.get(a["from"]) == "normal" and edge_function.get(a["to"]) == "normal":
                groups[(a["from"], a["to"])].append(a)
        lane_targets: dict[str, set] = defaultdict(set)
        for (_frm, to), cs in groups.items():
            for a in cs:
                lane_targets[a["from_lane_id"]].add(to)
        link_mov = np.full(n_links, -1, np.int64)
        for (frm, to), cs in sorted(groups.items()):
            m = len(mov_signal)
            movement_index[(sid, frm, to)] = m
            links = sorted({int(a["linkIndex"]) for a in cs})
            for li in links:
                if link_mov[li] < 0:
                    link_mov[li] = m
            turn = _TURN.get(cs[0].get("dir", "s"), TURN_STRAIGHT)
            protected = bool(green_major[links].any())
            lanes = sorted({a["from_lane_id"] for a in cs})
            share = sum(1.0 / len(lane_targets[ln]) for ln in lanes)
            key = (sid, frm, to)
            if key in sat.overrides:
                sat_veh_h = float(sat.overrides[key])
            else:
                sat_veh_h = sat.base_veh_h_lane * share * sat.factor(turn, protected)
            el = edge_lanes.get(frm) or [(1.0, 13.89, "v")]
            mov_signal.append(s)
            mov_from.append(frm)
            mov_to.append(to)
            mov_turn.append(turn)
            mov_lanes.append(len(lanes))
            mov_sat.append(sat_veh_h / 3600.0)
            mov_speed.append(max(ln[1] for ln in el))
            mov_prot.append(protected)
            mov_links.append([base + li for li in links])
            mov_in_lanes.append(tuple(dict.fromkeys(a["from_lane_id"] for a in cs)))
            mov_out_lanes.append(tuple(dict.fromkeys(f"{a['to']}_{a['toLane']}" for a in cs)))
            akey = (sid, frm)
            if akey not in approach_index:
                approach_index[akey] = len(appr_signal)
                appr_signal.append(s)
                appr_edge.append(frm)
                vlanes = [ln for ln in el if ln[2] == "v"] or el
                appr_len.append(vlanes[0][0])
                appr_lanes.append(len(vlanes))
                appr_storage.append(sum(ln[0] for ln in vlanes) / JAM_SPACING_M)
                edge_signal[frm] = s
        for li in range(n_links):
            link_signal_l.append(s)
            link_movement_l.append(int(link_mov[li]))
            link_crossing_l.append(int(link_cross[li]))
            link_min_l.append(int(spec.min_green_s[li]))
            link_yel_l.append(int(spec.yellow_s[li]))
            link_ra_l.append(int(spec.redamber_s[li]))
            foe_lists.append([base + int(f) for f in np.flatnonzero(spec.conflicts[li])])
            path_foe_lists.append([base + int(f) for f in np.flatnonzero(foes[li])])

    mov_approach = [approach_index[(signal_ids[s], f)] for s, f in zip(mov_signal, mov_from, strict=True)]

    # --- graph: movement -> downstream approaches through unsignalised junctions
    def edge_len_speed(eid: str) -> tuple[float, float]:
        lanes = edge_lanes.get(eid) or [(0.0, 13.89, "v")]
        return lanes[0][0], max(1e-3, max(ln[1] for ln in lanes))

    down_ptr = [0]
    down_appr, down_tt, down_dist, down_share = [], [], [], []
    for m in range(len(mov_signal)):
        acc: dict[int, list[float]] = {}
        stack = [(mov_to[m], 0.0, 0.0, 1.0, 0, (mov_to[m],))]
        while stack:
            e, dist, tt, share, depth, seen = stack.pop()
            length, speed = edge_len_speed(e)
            dist2, tt2 = dist + length, tt + length / speed
            if e in edge_signal:
                a = approach_index[(signal_ids[edge_signal[e]], e)]
                rec = acc.setdefault(a, [0.0, 0.0, 0.0])
                rec[0] += share
                rec[1] += share * tt2
                rec[2] += share * dist2
                continue
            succ = [x for x in edge_succ.get(e, ()) if x not in seen]
            if not succ or depth >= 12 or dist2 > 3000.0:
                continue
            for x in succ:
                stack.append((x, dist2, tt2, share / len(succ), depth + 1, seen + (x,)))
        for a, (sh, tts, ds) in sorted(acc.items()):
            down_appr.append(a)
            down_share.append(sh)
            down_tt.append(tts / sh)
            down_dist.append(ds / sh)
        down_ptr.append(len(down_appr))

    stale = sorted(set(sat.overrides) - set(movement_index))
    if stale:
        raise ScenarioError(f"saturation-flow override for {stale[0]} names no signalised movement", net_path)
    foe_ptr, foe_flat = csr(foe_lists)
    path_foe_ptr, path_foe_flat = csr(path_foe_lists)
    ml_ptr, ml_flat = csr(mov_links)
    edge_length = {e: v[0][0] for e, v in edge_lanes.items() if v and edge_function.get(e) == "normal"}
    edge_speed = {e: max(ln[1] for ln in v) for e, v in edge_lanes.items() if v and edge_function.get(e) == "normal"}
    f64, i32 = np.float64, np.int32
    return Network(
        source=str(net_path),
        signal_ids=signal_ids,
        signal_program_ids=tuple(sig_prog),
        signal_junctions=tuple(sig_junctions),
        signal_offset_s=np.array(sig_offset, f64),
        signal_cycle_s=np.array(sig_cycle, f64),
        signal_phase_ptr=np.array(sig_phase_ptr, i32),
        signal_link_ptr=np.array(sig_link_ptr, i32),
        signal_allred_s=np.array(sig_allred, i32),
        signal_is_actuated=np.array(sig_actuated, bool),
        phase_signal=np.array(ph_signal, i32),
        phase_duration_s=np.array(ph_dur, f64),
        phase_min_s=np.array(ph_min, f64),
        phase_max_s=np.array(ph_max, f64),
        phase_kind=np.array(ph_kind, np.int8),
        phase_code_ptr=np.array(ph_code_ptr, i32),
        phase_code=np.concatenate(ph_code_parts).astype(np.int8),
        phase_states=tuple(ph_states),
        link_signal=np.array(link_signal_l, i32),
        link_movement=np.array(link_movement_l, i32),
        link_crossing=np.array(link_crossing_l, i32),
        link_min_green_s=np.array(link_min_l, i32),
        link_yellow_s=np.array(link_yel_l, i32),
        link_redamber_s=np.array(link_ra_l, i32),
        link_foe_ptr=foe_ptr,
        link_foe=foe_flat,
        link_path_foe_ptr=path_foe_ptr,
        link_path_foe=path_foe_flat,
        mov_signal=np.array(mov_signal, i32),
        mov_approach=np.array(mov_approach, i32),
        mov_from_edge=tuple(mov_from),
        mov_to_edge=tuple(mov_to),
        mov_turn=np.array(mov_turn, np.int8),
        mov_n_lanes=np.array(mov_lanes, np.int16),
        mov_sat_flow_veh_s=np.array(mov_sat, f64),
        mov_speed_m_s=np.array(mov_speed, f64),
        mov_protected=np.array(mov_prot, bool),
        mov_link_ptr=ml_ptr,
        mov_link=ml_flat,
        appr_signal=np.array(appr_signal, i32),
        appr_edge=tuple(appr_edge),
        appr_length_m=np.array(appr_len, f64),
        appr_n_lanes=np.array(appr_lanes, np.int16),
        appr_storage_veh=np.array(appr_storage, f64),
        down_ptr=np.array(down_ptr, i32),
        down_approach=np.array(down_appr, i32),
        down_travel_s=np.array(down_tt, f64),
        down_dist_m=np.array(down_dist, f64),
        down_share=np.array(down_share, f64),
        crossing_ids=tuple(crossing_ids),
        crossing_signal=np.array(crossing_signal, i32),
        crossing_length_m=np.array(crossing_len, f64),
        signal_index=signal_index,
        movement_index=movement_index,
        approach_index=approach_index,
        edge_length_m=edge_length,
        edge_speed_m_s=edge_speed,
        mov_in_lanes=tuple(mov_in_lanes),
        mov_out_lanes=tuple(mov_out_lanes),
        lane_length_m=lane_length,
        sat_flow_notes=(
            f"base {sat.base_veh_h_lane:g} veh/h/lane; right x{sat.right_factor:g}, left x{sat.left_protected_factor:g}"
            f" (permissive x{sat.left_permissive_factor:g}), U-turn x{sat.uturn_factor:g};"
            f" {len(sat.overrides)} overrides"
        ),
    )


def free_flow_time_s(net: Network, edges: list[str]) -> float:
    """Free-flow travel time along a list of edges (lengths / speed limits), s."""
    return math.fsum(net.edge_length_m.get(e, 0.0) / max(net.edge_speed_m_s.get(e, 13.89), 1e-3) for e in edges)
