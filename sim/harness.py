"""The SUMO validation harness: run a scenario with one controller and one seed, measure KPIs.

Every controller (baselines, optimised plans, adaptive and remote controllers) implements :class:`Controller`. The
harness

* builds SUMO's command line from the scenario's files (never loading the .sumocfg itself, whose outputs would be
  written into the scenario folder), with an explicit seed and the scenario's window;
* adds its own detectors: a lane-area detector over the last ``DETECTOR_LENGTH_M`` of every signalised approach
  lane and over the first part of every lane leaving a signal, and an induction loop at each stop line;
* steps SUMO in process (libsumo) or over TraCI (for sumo-gui), reading detectors through subscriptions only;
* turns the controller's wishes into legal signal sequences through ``engine.transitions.Sequencer``;
* writes tripinfo (with emissions), a summary series and detector output, and returns a JSON-ready run record.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import GronvagError
from engine.transitions import Sequencer, green_phase_states
from models.network import Network, csr
from sim import sumo
from sim.planio import atomic_write
from sim.scenario import Scenario

DETECTOR_LENGTH_M = 150.0
OUT_DETECTOR_LENGTH_M = 100.0
DETECTOR_PERIOD_S = 60
MIN_GREEN_FLOOR_S = 5.0  # adaptive controllers hold every green at least this long (engineering practice)


@dataclass
class Detectors:
    """The detectors the harness placed: ids and which movement/signal they belong to.

    ``in_ids``: lane-area detectors on incoming lanes; ``in_lane_signal``: signal index of each; ``mov_in_ptr`` /
    ``mov_in``: CSR movement -> incoming detectors (indices into in_ids); ``mov_out_ptr`` / ``mov_out``: CSR
    movement -> outgoing detectors (indices into out_ids); ``loop_ids``: stop-line induction loops (one per in lane).
    """

    in_ids: list[str]
    in_lane_signal: np.ndarray
    out_ids: list[str]
    loop_ids: list[str]
    mov_in_ptr: np.ndarray
    mov_in: np.ndarray
    mov_out_ptr: np.ndarray
    mov_out: np.ndarray
    in_share: np.ndarray  # float64 per (movement, in detector) entry: 1/k for a lane shared by k movements


@dataclass
class Observation:
    """What a controller may see at time ``t_s``: detector readings, no vehicle ids or positions.

    in_vehicles / in_halting / in_occupancy_pct: per incoming lane-area detector (Detectors.in_ids);
    out_vehicles / out_halting: per outgoing detector; loop_count: vehicles over each stop-line loop in the last step.
    """

    t_s: float
    in_vehicles: np.ndarray
    in_halting: np.ndarray
    in_occupancy_pct: np.ndarray
    out_vehicles: np.ndarray
    out_halting: np.ndarray
    loop_count: np.ndarray


class Controller:
    """The one controller interface. Subclasses override what they need.

    ``decision_interval_s`` = 0: the controller never acts (SUMO runs the loaded programs: fixed plans, SUMO's own
    actuated control); the harness then advances SUMO to the end in one call.
    """

    name = "controller"
    decision_interval_s: float = 0.0
    min_green_s: float = MIN_GREEN_FLOOR_S  # the sequencer holds every green at least this long
    observes_loops: bool = False  # stop-line induction loops are placed and read only for controllers that use them

    def additional_files(self, scenario: Scenario, net: Network, workdir: Path) -> list[Path]:
        """Extra SUMO additional files (programs to load) before the run starts."""
        return []

    def reset(self, net: Network, detectors: Detectors, sequencers: list[Sequencer]) -> None:
        """Called once after SUMO has started."""

    def act(self, obs: Observation) -> dict[int, int]:
        """Wishes: signal index -> index of the wanted green phase (into that signal's Sequencer.greens)."""
        return {}

    # Controllers that run a validated signal program of their own (remote intersection controllers that apply plans
    # received over the ZeroMQ link, whose runner enforces the safety rules) set ``drives_states`` and report, every
    # second, the state each of their signals shows during the next second. The harness shows it as it is.
    drives_states: bool = False

    def signal_states(self, t_s: float) -> dict[int, str]:
        """Signal index -> SUMO state string for the second starting at ``t_s`` (only with ``drives_states``)."""
        return {}

    def close(self) -> None:
        """Called once after the run, also when it failed: release sockets, threads, processes."""


@dataclass
class RunConfig:
    seed: int = 1
    protocol: str = "default"  # 'resco': --time-to-teleport -1 and unfinished trips in tripinfo
    backend: str = "libsumo"  # or 'traci' (needed for --gui)
    gui: bool = False
    sumo_args: tuple[str, ...] = ()
    controlled_signals: tuple[str, ...] | None = None  # None: all signals the controller acts on
    keep_outputs: bool = True
    extra: dict = field(default_factory=dict)


def write_detectors(net: Network, workdir: Path, observe: bool = True, loops: bool = True) -> Detectors:
    """Place the harness's detectors (see module docstring) and write them as a SUMO additional file.

    The approach detectors always exist (they give the per-signal KPIs); the stop-line loops and the detectors on
    outgoing lanes only when a controller observes (``observe``), so that fixed-plan runs cost SUMO no more.
    """
    in_ids, in_sig, out_ids, loop_ids = [], [], [], []
    in_index: dict[str, int] = {}
    out_index: dict[str, int] = {}
    mov_in, mov_out, share = [], [], []
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<additional>"]
    lane_movs: dict[str, int] = {}
    for m in range(net.n_movements):
        for ln in net.mov_in_lanes[m]:
            lane_movs[ln] = lane_movs.get(ln, 0) + 1
    for m in range(net.n_movements):
        ins, outs = net.mov_in_lanes[m], net.mov_out_lanes[m]
        row_in, row_out, row_share = [], [], []
        for ln in ins:
            if ln not in in_index:
                length = net.lane_length_m[ln]
                pos = max(0.0, length - DETECTOR_LENGTH_M)
                did = f"gv_in_{ln}"
                in_index[ln] = len(in_ids)
                in_ids.append(did)
                in_sig.append(int(net.mov_signal[m]))
                lines.append(
                    f'    <laneAreaDetector id="{did}" lane="{ln}" pos="{pos:.2f}" endPos="{length - 0.1:.2f}" '
                    f'period="{DETECTOR_PERIOD_S}" file="e2_in.xml"/>'
                )
                lid = f"gv_loop_{ln}"
                if observe and loops:
                    loop_ids.append(lid)
                    lines.append(f'    <inductionLoop id="{lid}" lane="{ln}" pos="{max(0.1, length - 1.0):.2f}" '
                                 f'period="3600" file="NUL"/>')
            row_in.append(in_index[ln])
            row_share.append(1.0 / lane_movs[ln])
        for ln in outs:
            if ln not in out_index:
                length = net.lane_length_m[ln]
                did = f"gv_out_{ln}"
                out_index[ln] = len(out_ids)
                out_ids.append(did)
                if observe:
                    lines.append(f'    <laneAreaDetector id="{did}" lane="{ln}" pos="0.00" '
                                 f'endPos="{min(length, OUT_DETECTOR_LENGTH_M) - 0.1:.2f}" period="3600" file="NUL"/>')
            row_out.append(out_index[ln])
        mov_in.append(row_in)
        mov_out.append(row_out)
        share.append(row_share)
    lines.append("</additional>")
    atomic_write(workdir / "gronvag_detectors.add.xml", "\n".join(lines) + "\n")

    ip, iv = csr(mov_in, np.int64)
    op, ov = csr(mov_out, np.int64)
    return Detectors(in_ids, np.array(in_sig, np.int64), out_ids, loop_ids, ip, iv, op, ov,
                     np.array([v for r in share for v in r], np.float64))


def sumo_command(scenario: Scenario, cfg: RunConfig, workdir: Path, additional: list[Path]) -> list[str]:
    adds = [*scenario.additional_files, *additional]
    cmd = [
        sumo.binary("sumo-gui" if cfg.gui else "sumo"),
        "-n", str(scenario.net_file),
        "--begin", f"{scenario.begin_s:g}", "--end", f"{scenario.end_s:g}",
        "--seed", str(int(cfg.seed)),
        "--tripinfo-output", str(workdir / "tripinfo.xml"),
        "--tripinfo-output.write-unfinished", "true",
        "--device.emissions.probability", "1",
        "--summary-output", str(workdir / "summary.xml"),
        "--statistic-output", str(workdir / "statistics.xml"),
        "--log", str(workdir / "sumo.log"),
        "--no-step-log", "true",
        "--duration-log.disable", "true",
        "--output-prefix", "",
    ]
    if scenario.route_files:
        cmd += ["-r", ",".join(str(r) for r in scenario.route_files)]
    if adds:
        cmd += ["-a", ",".join(str(a) for a in adds)]
    own = {"time-to-teleport"} if cfg.protocol == "resco" else set()
    for name, value in scenario.sumo_options:  # the configuration's own processing/routing options
        if name not in own:
            cmd += [f"--{name}", value]
    if cfg.protocol == "resco":
        cmd += ["--time-to-teleport", "-1"]
    elif cfg.protocol != "default":
        raise GronvagError(f"unknown protocol {cfg.protocol!r} (default or resco)")
    cmd += list(cfg.sumo_args)
    return cmd


def run(scenario: Scenario, net: Network, controller: Controller, cfg: RunConfig, workdir: Path) -> dict:
    """One SUMO run. Returns the run record (see sim.kpi.run_record); writes outputs into ``workdir``."""
    from sim.kpi import run_record

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t_wall = time.perf_counter()
    dets = write_detectors(net, workdir,
                           observe=controller.decision_interval_s > 0 or controller.drives_states,
                           loops=controller.observes_loops)
    adds = controller.additional_files(scenario, net, workdir) + [workdir / "gronvag_detectors.add.xml"]
    cmd = sumo_command(scenario, cfg, workdir, adds)
    atomic_write(workdir / "sumo_command.json", json.dumps(cmd, indent=1))
    conn_mod = sumo.connection_module("traci" if (cfg.gui or cfg.backend == "traci") else "libsumo")
    try:
        conn_mod.start(cmd)
    except Exception as exc:  # SUMO refuses the input: say which run and why
        logf = workdir / "sumo.log"
        log = logf.read_text(errors="replace").strip().splitlines() if logf.exists() else []
        raise GronvagError(f"SUMO failed to start: {log[-1] if log else exc}", workdir / "sumo.log") from None
    pending: list[str] = []
    try:
        sequencers: list[Sequencer] = []
        if controller.decision_interval_s > 0 and not controller.drives_states:
            sequencers = _make_sequencers(net, conn_mod, controller.min_green_s)
        controller.reset(net, dets, sequencers)
        if controller.decision_interval_s <= 0 and not controller.drives_states:
            conn_mod.simulationStep(scenario.end_s)
        else:
            _controlled_loop(scenario, net, controller, dets, sequencers, conn_mod, cfg)
        pending = list(conn_mod.simulation.getPendingVehicles())
    finally:
        conn_mod.close()
        controller.close()
    rec = run_record(scenario, controller.name, cfg, workdir, net, pending)
    rec["wall_s"] = time.perf_counter() - t_wall
    return rec


def _make_sequencers(net: Network, conn_mod, min_green_s: float) -> list[Sequencer]:
    seqs = []
    for s, sid in enumerate(net.signal_ids):
        states = [net.phase_states[p] for p in net.phases_of(s)]
        greens = green_phase_states(states, [float(net.phase_duration_s[p]) for p in net.phases_of(s)])
        # start from the green phase SUMO shows now (or the first)
        cur = conn_mod.trafficlight.getRedYellowGreenState(sid)
        start = greens.index(cur) if cur in greens else 0
        # a maximum green where the program declares one (maxDur above the duration), per green phase
        max_g = {}
        for p in net.phases_of(s):
            if net.phase_max_s[p] > net.phase_duration_s[p]:
                max_g[net.phase_states[p]] = max(max_g.get(net.phase_states[p], 0.0), float(net.phase_max_s[p]))
        seq = Sequencer(net.signal_spec(s), greens, start_phase=start, min_green_floor_s=min_green_s,
                        max_green_s=[max_g.get(g, 0.0) for g in greens])
        seqs.append(seq)
    return seqs


def _controlled_loop(scenario, net, controller, dets, sequencers, conn_mod, cfg) -> None:
    from sim.sumo import constants

    tc = constants(conn_mod)
    e2_vars = [tc.LAST_STEP_VEHICLE_NUMBER, tc.LAST_STEP_VEHICLE_HALTING_NUMBER, tc.LAST_STEP_OCCUPANCY]
    for d in dets.in_ids + dets.out_ids:
        conn_mod.lanearea.subscribe(d, e2_vars)
    for d in dets.loop_ids:
        conn_mod.inductionloop.subscribe(d, [tc.LAST_STEP_VEHICLE_NUMBER])
    n_in, n_out = len(dets.in_ids), len(dets.out_ids)
    in_idx = {d: i for i, d in enumerate(dets.in_ids)}
    out_idx = {d: i for i, d in enumerate(dets.out_ids)}
    loop_idx = {d: i for i, d in enumerate(dets.loop_ids)}
    controlled = set(range(net.n_signals))
    if cfg.controlled_signals is not None:
        controlled = {net.signal_index[s] for s in cfg.controlled_signals}
    shown = [None] * net.n_signals
    t = float(scenario.begin_s)
    next_decision = t
    interval = float(controller.decision_interval_s) or 1.0
    while t < scenario.end_s - 1e-9:
        if t >= next_decision - 1e-9:
            res = conn_mod.lanearea.getAllSubscriptionResults()
            loops = conn_mod.inductionloop.getAllSubscriptionResults()
            obs = Observation(
                t_s=t,
                in_vehicles=np.zeros(n_in), in_halting=np.zeros(n_in), in_occupancy_pct=np.zeros(n_in),
                out_vehicles=np.zeros(n_out), out_halting=np.zeros(n_out), loop_count=np.zeros(len(loop_idx)),
            )
            for d, vals in res.items():
                if d in in_idx:
                    i = in_idx[d]
                    obs.in_vehicles[i] = vals[e2_vars[0]]
                    obs.in_halting[i] = vals[e2_vars[1]]
                    obs.in_occupancy_pct[i] = vals[e2_vars[2]]
                elif d in out_idx:
                    i = out_idx[d]
                    obs.out_vehicles[i] = vals[e2_vars[0]]
                    obs.out_halting[i] = vals[e2_vars[1]]
            for d, vals in loops.items():
                obs.loop_count[loop_idx[d]] = vals[tc.LAST_STEP_VEHICLE_NUMBER]
            for s, phase in controller.act(obs).items():
                if s in controlled:
                    sequencers[s].request(int(phase))
            next_decision += interval
        if controller.drives_states:
            for s, state in controller.signal_states(t).items():
                if s in controlled and state != shown[s]:
                    conn_mod.trafficlight.setRedYellowGreenState(net.signal_ids[s], state)
                    shown[s] = state
        else:
            for s in controlled:
                state = sequencers[s].step(1.0) if shown[s] is not None else sequencers[s].state
                if state != shown[s]:
                    conn_mod.trafficlight.setRedYellowGreenState(net.signal_ids[s], state)
                    shown[s] = state
        conn_mod.simulationStep()
        t += 1.0
