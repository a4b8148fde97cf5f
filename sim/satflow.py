"""Saturation flows measured in SUMO, per signalised movement: `gronvag satflow SCENARIO --out FILE`.

The method is the field survey of queue discharge headways (HCM's saturation-flow survey), with SUMO as the field:

* At every green onset of a stop-line lane (one of its links turns green), the vehicles halting on the lane form the
  queue of that green; ``H`` of them.
* The lane's stop-line crossings in that green are numbered in order; a crossing is a vehicle leaving the lane for
  the junction (a lane change to a neighbouring lane is not one). Vehicle ``k`` crossed ``h_k`` seconds after
  vehicle ``k - 1``.
* Headways of the queued vehicles from the fifth on (``5 <= k <= H``; the first four carry the start-up loss, which
  the models count separately) are saturation headways, when both vehicles crossed on a protected green ('G') of
  the lane while it stayed green. A vehicle crossing on a permissive 'g' gives way; the models' gap acceptance
  (models.yielding) accounts for that, so those headways are left out and not counted twice.
* A headway counts for the movement of the vehicle that follows (its link's to-edge). A movement's saturation flow
  per lane is 3600 / (mean headway); for the movement as a whole it is multiplied by the movement's lane share, as
  the compiler does with its default flows (sim.netcompile.SatFlowConfig).

* Lost times (:func:`lost_times`, written as ``lost_times`` for the record; the models take them as
  ``--params '{"levels": {"startup_lost_s": ..., "end_gain_s": ...}}'``): HCM's start-up lost time, from the green
  onset to the crossing of the fourth queued vehicle less four saturation headways, and the end gain, the crossings
  in the yellow after greens that ended on a queue. A green shown from a step was shown during it (vehicles moved on
  it), and a crossing counts at the end of the step it happened in. Measured with SUMO's default drivers (seeds
  2001-2002): start-up lost time 0.43 s on the bundled corridor, 0.07 s on cologne3 (with ``--min-headways 10``),
  end gain 0.06 and 0.0 s: they move off at once and stop for the yellow, where the models' defaults (HCM's 2 s and
  2 s) assume a slower start and a yellow partly used. The models keep those defaults: with the measured values
  they rank cologne3's plans worse, the one scenario tried (bench/results/models_fidelity.md, session 11).

Runs use the scenario's own programs (or a plan file) and SUMO seeds distinct from the proof seeds. Movements with
fewer than ``min_headways`` saturation headways keep the compiler's default (with ``--base``, the base flow per lane
becomes the median of the measured through movements, so the defaults of unmeasured movements move too). The
output is a saturation-flow file (``--sat-flow`` of info, predict, optimise and calibrate).

What it does to the models, measured on the bundled corridor (bench/results/models_fidelity_satflow.md): the
measured flows are 1380-1850 veh/h per lane where the compiler assumes 1800 x turn factor; over the fidelity
benchmark's 50 random plans the models' MAPE against SUMO's time loss falls (cyclic 8.9 -> 6.4 %, queue 11.3 -> 7.7 %)
but so does their rank correlation (0.913 -> 0.837, 0.901 -> 0.807): the flows fix the level of delay, not the order
of plans. The optimiser ranks plans, so it keeps the compiler's flows unless given ``--sat-flow``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SCHEMA = "gronvag.sat-flow/1"
QUEUE_SKIP = 4  # the first four queued vehicles carry the start-up loss


@dataclass
class _LaneState:
    edge: str  # the lane's edge (the movement's from-edge)
    links: list[tuple[str, int, str]]  # (signal id, link index, to-edge), one per link of the lane
    via_to: dict[str, str]  # junction-internal lane or out lane -> to-edge
    prev_ids: tuple[str, ...] = ()
    green: bool = False
    queue: int = 0  # vehicles halting at the green onset
    k: int = 0  # crossings in this green
    last_t: float = -1.0
    last_protected: bool = False
    halting: int = 0
    onset_t: float = 0.0  # time of the green onset
    head_ok: bool = True  # the crossings of this green so far were all on a protected green
    in_yellow: bool = False  # the lane's yellow after a green that ended with vehicles halting on the lane


@dataclass
class Tally:
    """Saturation headways per movement key (signal, from-edge, to-edge): their sum (s) and number."""

    sum_s: dict[tuple[str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    n: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    greens: int = 0
    # per movement key: time from the green onset to the stop-line crossing of the fourth queued vehicle (greens with
    # a queue of more than four, the first four on a protected green): their sum (s) and number
    head_sum_s: dict[tuple[str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    head_n: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    # greens that ended with vehicles halting on the lane, and the stop-line crossings in the yellow after them
    queued_ends: int = 0
    yellow_crossings: int = 0

    def add(self, other: Tally) -> None:
        for mine, theirs in ((self.sum_s, other.sum_s), (self.n, other.n), (self.head_sum_s, other.head_sum_s),
                             (self.head_n, other.head_n)):
            for k, v in theirs.items():
                mine[k] += v
        self.greens += other.greens
        self.queued_ends += other.queued_ends
        self.yellow_crossings += other.yellow_crossings


def measure_run(scenario, seed: int, workdir: Path, additional: tuple[Path, ...] = (),
                backend: str = "libsumo") -> Tally:
    """One SUMO run of the scenario (its programs, or those of ``additional``); saturation headways per movement."""
    from sim.harness import RunConfig, sumo_command
    from sim.sumo import connection_module, constants

    tc = constants()
    conn = connection_module(backend)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = sumo_command(scenario, RunConfig(seed=seed), workdir, list(additional))
    cmd += ["--no-warnings", "true"]
    conn.start(cmd)
    tally = Tally()
    try:
        lanes: dict[str, _LaneState] = {}
        for sid in conn.trafficlight.getIDList():
            for li, group in enumerate(conn.trafficlight.getControlledLinks(sid)):
                for in_lane, out_lane, via in group:
                    if not in_lane or in_lane.startswith(":"):
                        continue
                    st = lanes.setdefault(in_lane, _LaneState(in_lane.rsplit("_", 1)[0], [], {}))
                    to_edge = out_lane.rsplit("_", 1)[0]
                    st.links.append((sid, li, to_edge))
                    st.via_to[out_lane] = to_edge
                    if via:
                        st.via_to[via] = to_edge
            conn.trafficlight.subscribe(sid, [tc.TL_RED_YELLOW_GREEN_STATE])
        for ln in lanes:
            conn.lane.subscribe(ln, [tc.LAST_STEP_VEHICLE_ID_LIST, tc.LAST_STEP_VEHICLE_HALTING_NUMBER])
        end = float(scenario.end_s)
        dt = float(conn.simulation.getDeltaT())
        while conn.simulation.getTime() < end - 1e-9:
            conn.simulationStep()
            t = conn.simulation.getTime()
            states = {sid: r[tc.TL_RED_YELLOW_GREEN_STATE]
                      for sid, r in conn.trafficlight.getAllSubscriptionResults().items()}
            lane_res = conn.lane.getAllSubscriptionResults()
            for ln, st in lanes.items():
                res = lane_res.get(ln)
                if res is None:
                    continue
                ids = res[tc.LAST_STEP_VEHICLE_ID_LIST]
                chars = {to: states[sid][li] for sid, li, to in st.links}
                green_now = any(c in "Gg" for c in chars.values())
                yellow_now = not green_now and any(c in "yY" for c in chars.values())
                if green_now and not st.green:  # green onset: the queue is what halted on the lane a step ago
                    st.queue, st.k, st.last_t = st.halting, 0, -1.0
                    # the new state has shown since the start of the step just run, in which vehicles moved on it;
                    # a crossing counts at the end of the step it happened in
                    st.onset_t, st.head_ok = t - dt, True
                    tally.greens += 1
                if st.green and not green_now and yellow_now and st.halting > 0:
                    st.in_yellow = True
                    tally.queued_ends += 1
                st.in_yellow = st.in_yellow and yellow_now
                st.green = green_now
                if st.prev_ids:
                    now = set(ids)
                    for vid in st.prev_ids:
                        if vid in now:
                            continue
                        try:
                            where = conn.vehicle.getLaneID(vid)
                        except Exception:  # arrived or teleported: not a stop-line crossing to count
                            continue
                        to_edge = st.via_to.get(where)
                        if to_edge is None:
                            if where.rsplit("_", 1)[0] == st.edge:
                                continue  # changed lane
                            # further into the junction (a later internal lane) or beyond: the route's next edge
                            route, idx = conn.vehicle.getRoute(vid), conn.vehicle.getRouteIndex(vid)
                            nxt = route[idx + 1] if where.startswith(":") and 0 <= idx < len(route) - 1 else \
                                where.rsplit("_", 1)[0]
                            if nxt not in st.via_to.values():
                                continue
                            to_edge = nxt
                        if not green_now:
                            tally.yellow_crossings += st.in_yellow
                            continue
                        st.k += 1
                        protected = chars.get(to_edge, "r") == "G"
                        st.head_ok = st.head_ok and protected
                        if st.k == QUEUE_SKIP and st.queue > QUEUE_SKIP and st.head_ok:
                            key = (st.links[0][0], st.edge, to_edge)
                            tally.head_sum_s[key] += t - st.onset_t
                            tally.head_n[key] += 1
                        if (QUEUE_SKIP < st.k <= st.queue and st.last_t >= 0 and protected
                                and st.last_protected):
                            key = (st.links[0][0], st.edge, to_edge)
                            tally.sum_s[key] += t - st.last_t
                            tally.n[key] += 1
                        st.last_t, st.last_protected = t, protected
                st.prev_ids = ids
                st.halting = int(res[tc.LAST_STEP_VEHICLE_HALTING_NUMBER])
    finally:
        conn.close()
    return tally


def _run_worker(args) -> Tally:
    scenario, seed, workdir, additional = args
    return measure_run(scenario, seed, Path(workdir), tuple(additional))


def measure(comp, seeds, workdir: Path, additional: tuple[Path, ...] = (), jobs: int = 2, log=print) -> Tally:
    """Saturation headways over SUMO runs of ``seeds`` (a process per run: libsumo runs one simulation per process)."""
    import multiprocessing as mp

    total = Tally()
    tasks = [(comp.scenario, int(s), str(Path(workdir) / f"seed{s}"), [str(a) for a in additional]) for s in seeds]
    with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(tasks))), mp_context=mp.get_context("spawn")) as ex:
        for (_, s, _, _), t in zip(tasks, ex.map(_run_worker, tasks), strict=True):
            log(f"seed {s}: {sum(t.n.values())} saturation headways in {t.greens} lane greens")
            total.add(t)
    return total


def lost_times(tally: Tally, min_count: int = 20) -> dict | None:
    """The ends of a green as SUMO's drivers use them (the models' ``levels``: startup_lost_s, end_gain_s).

    Start-up lost time as HCM defines it: the time from the green onset to the stop-line crossing of the fourth
    queued vehicle, less four saturation headways of its movement; per movement with at least ``min_count`` such
    greens and saturation headways, the figure their mean weighted by greens. End gain: the stop-line crossings in
    the yellow after greens that ended with vehicles halting on the lane, per such green, times the mean saturation
    headway. None when no movement qualifies."""
    rows = []
    for key, n in tally.head_n.items():
        if n < min_count or tally.n.get(key, 0) < min_count:
            continue
        headway = tally.sum_s[key] / tally.n[key]
        rows.append((n, tally.head_sum_s[key] / n - QUEUE_SKIP * headway))
    if not rows:
        return None
    greens = sum(n for n, _ in rows)
    out = {"startup_lost_s": round(sum(n * lost for n, lost in rows) / greens, 2), "greens": greens,
           "movements": len(rows), "per_movement_min_s": round(min(lost for _, lost in rows), 2),
           "per_movement_max_s": round(max(lost for _, lost in rows), 2)}
    if tally.queued_ends:
        headway = sum(tally.sum_s.values()) / sum(tally.n.values())
        out["end_gain_s"] = round(tally.yellow_crossings / tally.queued_ends * headway, 2)
        out["queued_green_ends"] = tally.queued_ends
    return out


def sat_flow_file(comp, tally: Tally, min_headways: int = 20, set_base: bool = False) -> dict:
    """The saturation-flow file from measured headways: overrides for the movements with enough of them; with
    ``set_base`` the base flow per lane from the measured through movements (median); turn factors as default."""
    from models.network import TURN_STRAIGHT
    from sim.netcompile import SatFlowConfig

    net = comp.net
    default = SatFlowConfig()
    sig_ids = list(net.signal_ids)
    overrides, through = [], []
    for m in range(net.n_movements):
        sid = sig_ids[int(net.mov_signal[m])]
        key = (sid, net.mov_from_edge[m], net.mov_to_edge[m])
        n = tally.n.get(key, 0)
        if n < min_headways:
            continue
        headway = tally.sum_s[key] / n
        lane_veh_h = 3600.0 / headway
        # the movement's lane share, as the compiler computed it for its default flow
        default_veh_h = float(net.mov_sat_flow_veh_s[m]) * 3600.0
        share = default_veh_h / (default.base_veh_h_lane * default.factor(int(net.mov_turn[m]),
                                                                          bool(net.mov_protected[m])))
        overrides.append({"signal": sid, "from": key[1], "to": key[2], "veh_h": round(lane_veh_h * share, 1),
                          "veh_h_lane": round(lane_veh_h, 1), "headways": int(n),
                          "default_veh_h": round(default_veh_h, 1)})
        if int(net.mov_turn[m]) == TURN_STRAIGHT:
            through.append(lane_veh_h)
    out = {"schema": SCHEMA}
    if through and set_base:
        out["base_veh_h_lane"] = round(float(np.median(through)), 1)
    out["overrides"] = overrides
    lost = lost_times(tally, min_headways)
    if lost is not None:  # a measurement for the record (the models' levels), not read by --sat-flow
        out["lost_times"] = lost
    return out


def main(argv: list[str]) -> int:
    """`gronvag satflow SCENARIO --out FILE [--seeds 2001-2003] [--plan FILE] [--min-headways N] [--jobs J]`."""
    from engine.cli import _compile, _scenario_args
    from engine.errors import GronvagError
    from sim.evaluate import parse_seeds
    from sim.planio import atomic_write

    ap = argparse.ArgumentParser(prog="gronvag satflow",
                                 description="measure saturation flows per signalised movement in SUMO "
                                             "(queue discharge headways at the stop line)")
    _scenario_args(ap)
    ap.add_argument("--out", required=True, help="saturation-flow file to write (JSON; --sat-flow of other commands)")
    ap.add_argument("--seeds", default="2001-2003", help="SUMO seeds (default 2001-2003, apart from proof seeds)")
    ap.add_argument("--plan", help="programs to run: a JSON plan or a SUMO additional file with tlLogic programs "
                                   "(default: the scenario's own)")
    ap.add_argument("--min-headways", type=int, default=20,
                    help="saturation headways a movement needs to be measured (default 20)")
    ap.add_argument("--base", action="store_true",
                    help="also set the base flow per lane (median of the measured through movements)")
    ap.add_argument("--jobs", type=int, default=2, help="SUMO runs in parallel (default 2)")
    ap.add_argument("--workdir", help="keep SUMO's outputs in this folder (default: a temporary one)")
    args = ap.parse_args(argv)
    if args.sat_flow:
        raise GronvagError("satflow measures saturation flows; it does not take --sat-flow")
    seeds = parse_seeds(args.seeds)
    if args.min_headways < 1:
        raise GronvagError("--min-headways must be at least 1")
    comp = _compile(args)
    out = Path(args.out)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gronvag-satflow-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        plan: tuple[Path, ...] = ()
        if args.plan:  # a JSON plan or a SUMO additional file, checked and written as SUMO programs
            from models.cli_predict import load_plans
            from sim.planio import planset_to_additional

            workdir.mkdir(parents=True, exist_ok=True)
            plan = (workdir / "plan.add.xml",)
            atomic_write(plan[0], planset_to_additional(load_plans(args.plan)))
        tally = measure(comp, seeds, workdir, plan, args.jobs)
    rec = sat_flow_file(comp, tally, args.min_headways, args.base)
    rec_meta = {"scenario": comp.scenario.name, "sumo_seeds": seeds, "plan": str(args.plan or "scenario programs"),
                "min_headways": args.min_headways, "lane_greens": tally.greens}
    rec["measured_on"] = rec_meta
    atomic_write(out, json.dumps(rec, indent=1) + "\n")
    n_mov = comp.net.n_movements
    print(f"{len(rec['overrides'])} of {n_mov} movements measured ({sum(tally.n.values())} saturation headways, "
          f"{time.perf_counter() - t0:.0f} s); base {rec.get('base_veh_h_lane', 'default')} veh/h/lane; "
          f"wrote {out}")
    lost = rec.get("lost_times")
    print(f"start-up lost time {lost['startup_lost_s']:g} s ({lost['movements']} movements, {lost['greens']} greens), "
          f"end gain {lost.get('end_gain_s', 'not measured')} s" if lost else
          "lost times: too few greens with a queue of five or more")
    return 0
