"""A virtual controller network: the SUMO harness drives every traffic light through the real controller link.

``SUMO -> engine -> ZeroMQ -> controllers -> SUMO``: :class:`VirtualNetwork` is a :class:`sim.harness.Controller`
(``drives_states``, name ``remote``). When the harness resets it, it starts on loopback, with CURVE key pairs made
in a temporary folder,

* the engine side (:class:`controllers.engine.Engine`, its own thread) serving a plan set (``gronvag.plan/1``), and
* one :class:`controllers.agent.ControllerAgent` per SUMO traffic light in one :class:`controllers.host.AgentHost`,
  its fallback plan the scenario's own program for that light, its safety spec the network's
  (:meth:`models.network.Network.signal_spec`), its signal clock the *simulation* time.

Every simulated second the harness asks :meth:`VirtualNetwork.signal_states`; the network sets the agents' clock to
that second, lets the host handle what arrived over the link (plans, pings) and tick the agents (their
:class:`~controllers.signal.PlanRunner` advances, switches happen at safe points, acknowledgements go out), and
returns each agent's signal state, which the harness shows as is. There is no per-second round trip: as in the field,
the link carries plans, acknowledgements and status, and each controller runs its plan itself.

**Start-up, exact.** With activation ``asap`` the served plans are in force from the window's first second, so a run
gives the same KPIs as SUMO running the plans in process (:class:`sim.controllers.PlanController`):

1. the controllers boot on their fallback programs at a signal time before the window, receive the plans (PLAN, ACK
   accepted), switch at their next safe point while their clock runs on second by second, and acknowledge
   ``applied``; the network waits until the engine holds ``applied`` from every controller;
2. then they restart (sockets closed, state kept in their state database), each at the start of the phase its plan
   shows at the window's begin, resume their persisted central plan (the documented restart path) and reconnect; by the
   first simulated second every controller shows, phase and second, what SUMO would show running the plan.

With ``next_cycle`` or ``at:S`` the controllers start the window on their fallback programs and switch live. Plans
can also be sent during the run (``updates``): at the given simulation second the engine publishes them and the network
waits until every controller concerned has accepted them; the switches then follow at the runners' safe points.

:meth:`VirtualNetwork.close` stops everything (engine thread joined, sockets and contexts closed, the temporary
folder removed) and writes ``controller_link.json`` (acknowledgements, switches, counters) into the run's folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import msgspec
import zmq

from controllers import wire
from controllers.agent import AgentConfig, ControllerAgent
from controllers.engine import Engine, EngineConfig
from controllers.host import AgentHost
from controllers.security import ENGINE_ID, check_id, create_keypair
from controllers.signal import program_state
from controllers.state import StateDB
from controllers.wire import Activation
from engine.errors import GronvagError
from engine.plan import Phase, PlanSet, SignalPlan, encode_plan, make_plan, phase_kind, read_planset
from engine.safety import check_plan
from sim.harness import Controller

log = logging.getLogger(__name__)

PlanSource = str | Path | PlanSet | Sequence[SignalPlan]
IO_INTERVAL_S = 0.01  # wall time between two looks at the controllers' sockets during the run


def sumo_state(plan: SignalPlan, t_s: int) -> tuple[int, int, str]:
    """(phase index, seconds into that phase, state) SUMO shows during [t_s, t_s + 1) running ``plan``: program time
    is (t - offset) mod cycle, the convention the controllers' plan runner follows too."""
    k, pt, state = program_state(plan, t_s)
    return k, pt - sum(ph.duration_s for ph in plan.phases[:k]), state


def parse_activation(value: str | Activation) -> Activation:
    """``asap`` | ``next_cycle`` | ``at:SECONDS`` (simulation time) or an Activation."""
    if isinstance(value, Activation):
        return value
    if value in ("asap", "next_cycle"):
        return Activation(kind=value)
    if isinstance(value, str) and value.startswith("at:"):
        try:
            return Activation(kind="at", at_s=float(value[3:]))
        except (ValueError, msgspec.ValidationError):
            pass
    raise GronvagError(f"bad activation {value!r}: asap, next_cycle or at:SECONDS")


def load_plans(source: PlanSource) -> tuple[SignalPlan, ...]:
    """Plans from a plan-set JSON file, a SUMO additional file with tlLogic programs, a PlanSet or plans."""
    if isinstance(source, PlanSet):
        return tuple(source.plans)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise GronvagError("plan file not found", path)
        if path.suffix == ".json":
            return tuple(read_planset(path).plans)
        from sim.planio import additional_to_planset

        return tuple(additional_to_planset(path).plans)
    return tuple(source)


def own_program(net, s: int) -> SignalPlan:
    """The scenario's own program of signal ``s`` as a plan (SUMO offset semantics, like every plan file)."""
    phases = []
    for p in net.phases_of(s):
        d = float(net.phase_duration_s[p])
        if d != round(d) or d < 1:
            raise GronvagError(f"{net.signal_ids[s]}: phase {p} lasts {d:g} s; the controllers run whole seconds")
        st = net.phase_states[p]
        phases.append(Phase(st, int(round(d)), kind=phase_kind(st)))
    off = float(net.signal_offset_s[s])
    return make_plan(net.signal_ids[s], phases, int(round(off)), program_id="fallback")


def controller_ids(signal_ids: Sequence[str]) -> list[str]:
    """A controller id per signal, all distinct: the signal id where it is a valid controller id, else ``tls<index>``
    (with a suffix if that is taken)."""
    valid = []
    for sid in signal_ids:
        try:
            valid.append(check_id(sid))
        except GronvagError:
            valid.append(None)
    taken = {v for v in valid if v is not None}
    out = []
    for s, v in enumerate(valid):
        if v is None:
            v = f"tls{s}"
            while v in taken:
                v += "_"
            taken.add(v)
        out.append(v)
    return out


class VirtualNetwork(Controller):
    """Every traffic light driven by a controller agent that gets its plans from the engine over ZeroMQ (CURVE).

    ``plan``: plans to serve (file, PlanSet or plans; None: the controllers run their fallback, i.e. the scenario's
    programs). ``activation``: ``asap`` (in force from the first second, exact start-up; see the module docstring),
    ``next_cycle`` or ``at:S``. ``updates``: ``(t_s, plans[, activation])`` sent during the run at simulation second
    ``t_s``. ``ready_timeout_s``: wall-clock bound of every wait for the link. ``record_trace``: keep the states shown
    (:attr:`trace`).
    """

    name = "remote"
    drives_states = True
    decision_interval_s = 0.0

    def __init__(self, plan: PlanSource | None = None, *, activation: str | Activation = "asap",
                 updates: Iterable[tuple] = (), lease_s: float = 30.0, heartbeat_s: float = 2.0,
                 ready_timeout_s: float = 10.0, record_trace: bool = True):
        self.plan_source = plan
        self.plans = load_plans(plan) if plan is not None else ()
        self.activation = parse_activation(activation)
        self.updates: list[tuple[int, tuple[SignalPlan, ...], Activation]] = []
        for u in updates:
            t_u, src = int(u[0]), u[1]
            act = parse_activation(u[2]) if len(u) > 2 else Activation(kind="asap")
            self.updates.append((t_u, load_plans(src), act))
        self.updates.sort(key=lambda u: u[0])
        if heartbeat_s * 3 > lease_s:
            raise GronvagError(f"heartbeat {heartbeat_s} s must be at most a third of the lease {lease_s} s")
        self.lease_s = float(lease_s)
        self.heartbeat_s = float(heartbeat_s)
        self.ready_timeout_s = float(ready_timeout_s)
        self.record_trace = record_trace
        self.begin_s = 0
        self.workdir: Path | None = None
        self.scenario_name = ""
        #: per signal index: [(t_s, state)] whenever the state shown changes
        self.trace: dict[int, list[tuple[int, str]]] = {}
        #: what happened on the link (also written to controller_link.json): acks, switches, counters, timings
        self.report: dict = {}
        self._now = 0.0  # the agents' signal clock: simulation seconds
        self._tmp: Path | None = None
        self._ctx: zmq.Context | None = None
        self._db: StateDB | None = None
        self._host: AgentHost | None = None
        self._agents: list[ControllerAgent] = []
        self._engine: Engine | None = None
        self._engine_thread: threading.Thread | None = None
        self._engine_stop = threading.Event()
        self._closed = False
        self._next_update = 0
        self._wanted: dict[str, set[str]] = {}  # controller id -> sha256 of the plans it is waiting for
        self._expected: list[SignalPlan] = []
        self._last_io = 0.0

    # ------------------------------------------------------------------ harness interface
    def additional_files(self, scenario, net, workdir: Path) -> list[Path]:
        """Nothing to load (the controllers drive the signals); remembers the window and the run folder."""
        self.begin_s = int(scenario.begin_s)
        if self.begin_s != scenario.begin_s:
            raise GronvagError(f"the controllers run whole seconds; the window begins at {scenario.begin_s:g} s")
        self.workdir = Path(workdir)
        self.scenario_name = scenario.name
        return []

    def reset(self, net, detectors, sequencers) -> None:
        t_wall = time.perf_counter()
        self.net = net
        self._cids = controller_ids(net.signal_ids)
        self._specs = [dataclasses.replace(net.signal_spec(s), signal_id=self._cids[s]) for s in range(net.n_signals)]
        self._fallbacks = [self._as_controller_plan(own_program(net, s), s) for s in range(net.n_signals)]
        for s, fb in enumerate(self._fallbacks):
            errs = check_plan(fb, self._specs[s])
            if errs:
                raise GronvagError(f"{net.signal_ids[s]}: the scenario's own program breaks its safety spec: {errs[0]}")
        self._served = self._check_plans(self.plans, "plan")
        self._update_plans = [(t, self._check_plans(p, f"update at t={t}"), act) for t, p, act in self.updates]
        self.trace = {s: [] for s in range(net.n_signals)}
        self._shown: list[str | None] = [None] * net.n_signals
        self._start_link()
        exact = bool(self._served) and self.activation.kind == "asap"
        if exact:
            self._preapply()
            self._boot(lambda s: self._served.get(s, self._fallbacks[s]))
            self._wait(self._all_connected, "the controllers to reconnect after their restart")
            self._check_aligned()
        else:
            self._boot(lambda s: self._fallbacks[s])
            self._check_aligned()
            self._wait(self._all_connected, "the controllers to connect")
            if self._served:
                self._publish(self._served, self.activation, at=self.begin_s)
        self._next_update = 0
        self.report.update(startup_wall_s=round(time.perf_counter() - t_wall, 3), exact_start=exact,
                           activation=self.activation.kind)
        log.info("virtual network: %d controllers ready in %.2f s (engine %s, epoch %d)", len(self._agents),
                 time.perf_counter() - t_wall, self._engine.bound_endpoint, self._engine.epoch)

    def signal_states(self, t_s: float) -> dict[int, str]:
        t = int(t_s)
        while self._next_update < len(self._update_plans) and self._update_plans[self._next_update][0] <= t:
            _, plans, act = self._update_plans[self._next_update]
            self._next_update += 1
            self._now = t
            self._publish(plans, act, at=t)
        self._now = t
        # the runners advance every second; the sockets are looked at every IO_INTERVAL_S of wall time (a SUMO step
        # of a small network takes a few ms: reading nine idle sockets every step would cost more than the step)
        self._pump(0.0, io=time.monotonic() - self._last_io >= IO_INTERVAL_S)
        out = {}
        for s, a in enumerate(self._agents):
            st = a.runner.state
            out[s] = st
            if st != self._shown[s]:
                self._shown[s] = st
                if self.record_trace:
                    self.trace[s].append((t, st))
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._settle()
        except Exception:  # noqa: BLE001 - settling is best effort; the tear-down must go on
            log.exception("virtual network: could not settle the link before the report")
        try:
            self._collect_report()
        except Exception:  # noqa: BLE001 - the report must not stop the tear-down
            log.exception("virtual network: could not collect the link report")
        try:
            self._stop_agents()
        finally:
            try:
                self._stop_engine()
            finally:
                if self._ctx is not None:
                    self._ctx.destroy(linger=0)
                    self._ctx = None
                if self._tmp is not None:
                    shutil.rmtree(self._tmp, ignore_errors=True)
                    self._tmp = None
        if self.workdir is not None and self.report:
            try:
                from sim.planio import atomic_write

                atomic_write(self.workdir / "controller_link.json", json.dumps(self.report, indent=1, default=str))
            except OSError as exc:
                log.warning("virtual network: cannot write controller_link.json: %s", exc)

    # ------------------------------------------------------------------ plans
    def _as_controller_plan(self, plan: SignalPlan, s: int) -> SignalPlan:
        if plan.signal_id != self._cids[s]:
            plan = msgspec.structs.replace(plan, signal_id=self._cids[s])
        return plan

    def _check_plans(self, plans: Sequence[SignalPlan], what: str) -> dict[int, SignalPlan]:
        """Signal index -> the plan as its controller gets it; every plan checked against the network first."""
        net = self.net
        out: dict[int, SignalPlan] = {}
        for plan in plans:
            s = net.signal_index.get(plan.signal_id)
            if s is None:
                raise GronvagError(f"{what}: plan for unknown traffic light {plan.signal_id!r}")
            if s in out:
                raise GronvagError(f"{what}: more than one plan for {plan.signal_id!r} (validity periods are not "
                                   f"served by the virtual network; send later plans as updates)")
            if plan.n_links != len(net.links_of(s)):
                raise GronvagError(f"{what}: plan for {plan.signal_id!r} has {plan.n_links} signal groups, the network "
                                   f"{len(net.links_of(s))}")
            errs = check_plan(plan, net.signal_spec(s))
            if errs:
                raise GronvagError(f"{what}: unsafe plan: {errs[0]}"
                                   + (f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""))
            out[s] = self._as_controller_plan(plan, s)
        return out

    @staticmethod
    def _sha(plan: SignalPlan) -> str:
        return wire.plan_digest(encode_plan(plan))

    # ------------------------------------------------------------------ link
    def _start_link(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="gronvag-vnet-"))
        keys_dir = self._tmp / "keys"
        engine_keys = create_keypair(keys_dir, ENGINE_ID)
        self._keys = {cid: create_keypair(keys_dir, cid) for cid in self._cids}
        allow = {kp.public: cid for cid, kp in self._keys.items()}
        cfg = EngineConfig(endpoint="tcp://127.0.0.1:0", state_dir=self._tmp / "engine", keys=engine_keys,
                           allow=allow, heartbeat_s=self.heartbeat_s,
                           offline_after_s=max(3 * self.heartbeat_s, 10.0), retry_initial_s=0.2, retry_max_s=2.0,
                           lease_s=self.lease_s, activation=self.activation,
                           meta={"scenario": self.scenario_name, "plan": str(self.plan_source or "")})
        self._engine = Engine(cfg)
        self._engine.start()
        self._engine_stop = threading.Event()
        self._engine_thread = threading.Thread(target=self._engine.run, args=(self._engine_stop,),
                                               name="gronvag-vnet-engine", daemon=True)
        self._engine_thread.start()
        self._engine_public = engine_keys.public
        self._ctx = zmq.Context()
        self._db = StateDB(self._tmp / "controllers" / "host.state.sqlite", fsync=False)

    def _agent(self, s: int) -> ControllerAgent:
        cid = self._cids[s]
        cfg = AgentConfig(controller_id=cid, endpoint=self._engine.bound_endpoint, keys=self._keys[cid],
                          engine_public=self._engine_public, state_dir=self._tmp / "controllers",
                          fallback=self._fallbacks[s], spec=self._specs[s], signal_id=cid, clock=self._clock,
                          hello_after_s=3.0, status_interval_s=10.0, reconnect_ivl_ms=100, reconnect_ivl_max_ms=1000,
                          fsync=False, hold_until_valid=False)
        # no holding: SUMO in process runs a served program from before the window, whatever its valid_from_s, and
        # the controllers switch to it in the pre-roll (negative signal time) to reproduce that run exactly
        return ControllerAgent(cfg, self._ctx, db=self._db)

    def _clock(self) -> float:
        return self._now

    def _start_host(self, agents: list[ControllerAgent]) -> None:
        self._agents = agents
        self._host = AgentHost(agents, db=self._db)
        self._host.start()

    def _stop_agents(self) -> None:
        if self._host is not None:
            try:
                self._host.close()  # commits, then closes every agent's socket
            finally:
                self._host = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def _stop_engine(self) -> None:
        if self._engine_thread is not None:
            self._engine_stop.set()
            self._engine_thread.join(timeout=10)
            if self._engine_thread.is_alive():
                log.error("virtual network: the engine thread did not stop within 10 s")
            self._engine_thread = None
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def _pump(self, timeout_s: float, io: bool = True) -> None:
        """One round of the agents: received messages (with ``io``), a tick at the current signal time (the runners
        advance; switches acknowledge), commit, sends."""
        host = self._host
        now = time.monotonic()
        if io:
            self._last_io = now
            host.poll_once(timeout_s)
            for a in self._agents:
                a.monitor.drain()
                for _ in range(16):
                    if not a.on_readable():
                        break
        for a in self._agents:
            a.tick(now)
        host.commit_and_flush()

    def _wait(self, pred: Callable[[], object], what: str, *, step_clock_to: int | None = None) -> None:
        """Pump until ``pred()`` holds, at most ready_timeout_s of wall time. With ``step_clock_to`` the signal
        clock advances one second per round up to that second (the controllers' own time runs on)."""
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            self._pump(0.005)
            self._raise_rejections()
            if pred():
                return
            if step_clock_to is not None:
                if self._now >= step_clock_to:
                    raise GronvagError(f"virtual network: signal time reached {step_clock_to} s before {what}")
                self._now += 1
            elif time.monotonic() > deadline:
                raise GronvagError(f"virtual network: timed out after {self.ready_timeout_s:g} s waiting for {what}"
                                   f" ({self._progress()})")

    def _raise_rejections(self) -> None:
        for a in self._agents:
            rej = a.state.rejected
            if rej is not None and rej.sha256 in self._wanted.get(a.id, ()):
                raise GronvagError(f"controller {a.id} rejected its plan: {a.state.rejected_reason}")

    def _progress(self) -> str:
        modes = {}
        for a in self._agents:
            st = a.state.accepted_status or "no plan"
            key = f"{a.mode}/{st}/{'connected' if a.engine_epoch is not None else 'not connected'}"
            modes[key] = modes.get(key, 0) + 1
        return ", ".join(f"{n} {k}" for k, n in sorted(modes.items()))

    def _all_connected(self) -> bool:
        return all(a.engine_epoch is not None for a in self._agents)

    def _engine_statuses(self) -> dict[str, str | None]:
        return self._engine.call(lambda e: {cid: (p.desired.status if p.desired else None)
                                            for cid, p in e.peers.items()})

    def _publish(self, plans: dict[int, SignalPlan], act: Activation, at: int) -> None:
        """The engine publishes; wait until every controller concerned has accepted (the clock stands still)."""
        want = {self._cids[s]: self._sha(p) for s, p in plans.items()}
        self._wanted = {cid: {sha} for cid, sha in want.items()}
        t0 = time.perf_counter()
        body = list(plans.values())
        self._engine.call(lambda e: e.publish(body, activation=act, lease_s=self.lease_s))
        by_id = {a.id: a for a in self._agents}

        def accepted() -> bool:
            return all(by_id[cid].last_accepted is not None and by_id[cid].last_accepted.sha256 == sha
                       for cid, sha in want.items())

        self._wait(accepted, f"the controllers to accept the plans sent at t={at}")
        self.report.setdefault("published", []).append(
            {"t_s": at, "activation": act.kind, "at_s": act.at_s, "controllers": len(want),
             "accepted_wall_s": round(time.perf_counter() - t0, 4)})

    def _preapply(self) -> None:
        """Boot on the fallback before the window, receive the plans, switch, ack applied; the engine confirms."""
        cycles = [p.cycle_s for p in self._fallbacks] + [p.cycle_s for p in self._served.values()]
        longest_phase = max(ph.duration_s for p in (*self._fallbacks, *self._served.values()) for ph in p.phases)
        t_end = self.begin_s - longest_phase - 1  # the first boot ends before any restart time
        self._now = t_end - 3 * max(cycles) - 10
        t_boot = self._now
        self._start_host([self._agent(s) for s in range(self.net.n_signals)])
        self._wait(self._all_connected, "the controllers to connect")
        self._publish(self._served, Activation(kind="asap"), at=int(self._now))
        want = {self._cids[s]: self._sha(p) for s, p in self._served.items()}

        def switched() -> bool:
            return all(isinstance(a.runner.key, wire.PlanRef) and a.runner.key.sha256 == want[a.id]
                       for a in self._agents if a.id in want)

        self._wait(switched, "the controllers to switch to their plans", step_clock_to=t_end)
        t_switched = self._now

        def engine_applied() -> bool:
            st = self._engine_statuses()
            return all(st.get(cid) == "applied" for cid in want)

        self._wait(engine_applied, "the engine to receive every ACK applied")
        self.report["preapply"] = {"boot_s": int(t_boot), "all_switched_s": int(t_switched),
                                   "switches": {a.id: [(ref.short(), t) for ref, t in a.applied_log]
                                                for a in self._agents if a.applied_log}}
        self._stop_agents()
        self._db = StateDB(self._tmp / "controllers" / "host.state.sqlite", fsync=False)

    def _boot(self, running: Callable[[int], SignalPlan]) -> None:
        """Start every controller so that at the window's begin it shows ``running(s)`` (its served plan or its
        fallback, as the controller holds it) exactly as SUMO would: each boots at the start of the phase SUMO shows
        at the begin (a fresh runner starts at a phase start), then all run on to the begin."""
        agents = []
        self._expected = [running(s) for s in range(self.net.n_signals)]
        for s, plan in enumerate(self._expected):
            _, into, _ = sumo_state(plan, self.begin_s)
            self._now = self.begin_s - into
            agents.append(self._agent(s))
        self._now = self.begin_s
        self._start_host(agents)
        self._pump(0.0)

    def _check_aligned(self) -> None:
        """Every controller runs the plan it should, in phase and second with SUMO running that plan."""
        bad = []
        for s, a in enumerate(self._agents):
            plan = self._expected[s]
            k, into, _ = sumo_state(plan, self.begin_s)
            if a.runner.plan != plan or (a.runner.phase, a.runner.elapsed_s) != (k, into):
                bad.append(f"{a.id}: runs {a.runner.key} phase {a.runner.phase}+{a.runner.elapsed_s} s, SUMO runs "
                           f"{plan.program_id} phase {k}+{into} s")
        if bad:
            raise GronvagError("virtual network: controllers not in step with their plans at the window's begin: "
                               + "; ".join(bad[:3]))

    # ------------------------------------------------------------------ report
    def _settle(self, wall_s: float = 0.3) -> None:
        """Let acknowledgements already on their way arrive before the report is taken (a short run can end with an
        applied switch whose ACK is still in a socket); the signal clock does not move."""
        if self._host is None or not self._agents:
            return
        end = time.monotonic() + wall_s
        while time.monotonic() < end:
            self._pump(0.01)

    def _collect_report(self) -> None:
        rep = self.report
        rep["scenario"] = self.scenario_name
        rep["controllers"] = len(self._agents)
        rep["applied"] = {a.id: [(ref.short(), t) for ref, t in a.applied_log] for a in self._agents}
        rep["modes"] = {a.id: a.mode for a in self._agents}
        rep["agent_counts"] = {}
        for a in self._agents:
            for k, v in a.counts.items():
                rep["agent_counts"][k] = rep["agent_counts"].get(k, 0) + v
        if self._engine is not None and self._engine_thread is not None and self._engine_thread.is_alive():
            try:
                rep["engine"] = self._engine.call(lambda e: {
                    "endpoint": e.bound_endpoint, "epoch": e.epoch, "counts": dict(e.counts),
                    "status": {cid: (p.desired.status if p.desired else None) for cid, p in e.peers.items()}})
            except Exception as exc:  # noqa: BLE001 - report what we can
                rep["engine"] = {"error": str(exc)}
