"""The engineer's baselines behind the harness's one controller interface, and the registry of controller names.

* ``fixed``: the scenario's own programs, untouched.
* ``plan``: a plan file (SUMO additional file with tlLogic programs, or a gronvag JSON plan) loaded before the run.
* ``webster`` / ``webster-coord``: SUMO's tlsCycleAdaptation.py (then tlsCoordinator.py) run on the scenario.
* ``actuated``: SUMO's gap-based actuated control on the scenario's phases.
* ``remote``: the plan (or the scenario's own programs) served over the ZeroMQ controller link to one controller
  agent per traffic light, whose plan runners drive SUMO (controllers.virtual).
* ``max-pressure``: from detector data, a decision every 5 s: the pressure of a green phase is the sum over its
  signal groups of (vehicles on the incoming lane's last 150 m - vehicles on the outgoing lane's first 100 m);
  minimum green (10 s; ``max-pressure:S`` sets S), yellow, all-red and red-amber through the harness's sequencer,
  and a maximum red time (fairness bound, 120 s) for phases with vehicles waiting. Why 10 s: with 5 s minimum
  greens it switches so often that clearances eat the cycle on a coordinated corridor (stockholm-corridor seed 1:
  mean time loss 305 s at 5 s, 158 s at 10 s, 138 s at 15 s; cologne1 seeds 1-2: 48-53 s at 5 s, 29-30 s at 10 s;
  grid4x4 seeds 1-2 gets worse, 33-35 s at 5 s against 49-50 s at 10 s). Counting halting vehicles upstream
  instead collapses the served phase's pressure the moment its queue starts moving and makes it flip every
  minimum green (measured on cologne1 at 5 s: 75-86 s against 48-53 s delay with vehicle counts, seeds 1-3).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.errors import GronvagError
from engine.plan import read_planset
from sim.harness import Controller, Detectors, Observation
from sim.planio import additional_to_planset, atomic_write, planset_to_additional

CONTROLLERS = ("fixed", "webster", "webster-coord", "actuated", "max-pressure", "plan", "remote")


class FixedController(Controller):
    name = "fixed"


class PlanController(Controller):
    """Loads a plan file; SUMO activates the last program loaded for each traffic light."""

    def __init__(self, plan_file: str | Path, name: str = "plan"):
        self.plan_file = Path(plan_file)
        self.name = name
        if not self.plan_file.is_file():
            raise GronvagError("plan file not found", self.plan_file)

    def additional_files(self, scenario, net, workdir: Path) -> list[Path]:
        if self.plan_file.suffix == ".json":
            ps = read_planset(self.plan_file)
            _check_planset_against(net, ps, self.plan_file)
            out = workdir / "plan.add.xml"
            atomic_write(out, planset_to_additional(ps))
            return [out]
        _check_planset_against(net, additional_to_planset(self.plan_file), self.plan_file)
        return [self.plan_file.resolve()]


def _check_planset_against(net, ps, path: Path) -> None:
    """Every plan names a signal of the network and passes its safety rules; otherwise nothing runs."""
    from engine.safety import check_plan

    for plan in ps.plans:
        s = net.signal_index.get(plan.signal_id)
        if s is None:
            raise GronvagError(f"plan for unknown traffic light {plan.signal_id!r}", path)
        if plan.n_links != len(net.links_of(s)):
            raise GronvagError(
                f"plan for {plan.signal_id!r} has {plan.n_links} signal groups, the network {len(net.links_of(s))}",
                path,
            )
        errs = check_plan(plan, net.signal_spec(s))
        if errs:
            raise GronvagError(f"unsafe plan: {errs[0]}" + (f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""),
                               path)


class WebsterController(Controller):
    def __init__(self, coordinate: bool = False):
        self.coordinate = coordinate
        self.name = "webster-coord" if coordinate else "webster"

    def additional_files(self, scenario, net, workdir: Path) -> list[Path]:
        """The tools' plan depends on the scenario only, not on the seed: made once per sweep folder, then reused."""
        import shutil

        from sim.baselines import webster_plan

        cached = Path(workdir).parent / "_baseline_plans" / f"{scenario.name}.{self.name}.add.xml"
        if not cached.is_file():
            made = webster_plan(scenario, workdir, coordinate=self.coordinate)
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
            shutil.copyfile(made, tmp)
            os.replace(tmp, cached)  # concurrent sweeps may race here: both write the same plan, whole
        return [cached]


class ActuatedController(Controller):
    name = "actuated"

    def additional_files(self, scenario, net, workdir: Path) -> list[Path]:
        from sim.baselines import actuated_programs

        return [actuated_programs(scenario.net_file, scenario.additional_files, workdir)]


class MaxPressureController(Controller):
    """Max-pressure (Varaiya) on detector data: serve the green phase with the largest sum over its movements of
    (queued vehicles upstream - vehicles downstream), within minimum green and clearances, and with a maximum red."""

    name = "max-pressure"

    def __init__(self, decision_interval_s: float = 5.0, max_red_s: float = 120.0, min_green_s: float = 10.0):
        self.decision_interval_s = decision_interval_s
        self.max_red_s = max_red_s
        self.min_green_s = float(min_green_s)
        if min_green_s != 10.0:
            self.name = f"max-pressure:{min_green_s:g}"

    def reset(self, net, detectors: Detectors, sequencers) -> None:
        self.net = net
        self.det = detectors
        self.seqs = sequencers
        # per signal: incidence (green phases x the signal's movements) of movements with green in each phase
        self.movs: list[np.ndarray] = []
        self.inc: list[np.ndarray] = []
        for s, seq in enumerate(sequencers):
            base = int(net.signal_link_ptr[s])
            movs = net.movements_of(s)
            inc = np.zeros((len(seq.greens), len(movs)))
            for k, st in enumerate(seq.greens):
                for j, m in enumerate(movs):
                    links = net.mov_link[net.mov_link_ptr[m]:net.mov_link_ptr[m + 1]] - base
                    inc[k, j] = any(st[li] in "Gg" for li in links)
            self.movs.append(movs)
            self.inc.append(inc)
        self.red_since = [np.zeros(len(seq.greens)) for seq in sequencers]
        self.t0 = None

    def _movement_pressure(self, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        """Per movement: vehicles upstream minus vehicles downstream, and vehicles upstream (one term per lane)."""
        d = self.det
        M = self.net.n_movements
        if not hasattr(self, "_in_mov"):
            self._in_mov = np.repeat(np.arange(M), np.diff(d.mov_in_ptr))
            self._out_mov = np.repeat(np.arange(M), np.diff(d.mov_out_ptr))
        up = np.bincount(self._in_mov, weights=obs.in_vehicles[d.mov_in], minlength=M)
        down = np.bincount(self._out_mov, weights=obs.out_vehicles[d.mov_out], minlength=M)
        return up - down, up

    def act(self, obs: Observation) -> dict[int, int]:
        pressure, up = self._movement_pressure(obs)
        if self.t0 is None:  # red clocks start when control starts, not at time 0
            self.t0 = obs.t_s
            for r in self.red_since:
                r[:] = obs.t_s
        wishes = {}
        for s, seq in enumerate(self.seqs):
            inc, movs, red = self.inc[s], self.movs[s], self.red_since[s]
            red[seq.current] = obs.t_s
            has_movs = inc.any(axis=1)
            p = np.where(has_movs, inc @ pressure[movs], -np.inf)
            waiting = inc @ up[movs]
            # fairness: a phase with vehicles waiting that has been red longer than max_red is served next
            starving = has_movs & (waiting > 0) & (obs.t_s - red > self.max_red_s)
            starving[seq.current] = False
            if starving.any():
                wishes[s] = int(np.flatnonzero(starving)[np.argmin(red[starving])])
            else:
                wishes[s] = int(np.argmax(p)) if np.isfinite(p).any() else seq.current
        return wishes


def make_controller(name: str, plan: str | Path | None = None) -> Controller:
    if name == "fixed":
        return FixedController()
    if name == "plan":
        if plan is None:
            raise GronvagError("controller 'plan' needs --plan FILE")
        return PlanController(plan)
    if name == "remote":
        from controllers.virtual import VirtualNetwork

        return VirtualNetwork(plan)
    if name == "webster":
        return WebsterController(False)
    if name == "webster-coord":
        return WebsterController(True)
    if name == "actuated":
        return ActuatedController()
    if name == "max-pressure":
        return MaxPressureController()
    if name.startswith("max-pressure:"):
        try:
            return MaxPressureController(min_green_s=float(name.split(":", 1)[1]))
        except ValueError:
            raise GronvagError(f"bad controller {name!r}: use max-pressure:SECONDS (minimum green)") from None
    raise GronvagError(f"unknown controller {name!r} (one of {', '.join(CONTROLLERS)})")
