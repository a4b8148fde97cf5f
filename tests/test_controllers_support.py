"""Helpers for the controller-link tests (no tests here): plans, keys, an engine and agents on loopback threads.

Everything binds 127.0.0.1 on random ports, uses short timeouts, and is torn down in ``finally``/``__exit__``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from controllers.agent import AgentConfig, ControllerAgent, DayClock
from controllers.config import spec_from_fallback
from controllers.engine import Engine, EngineConfig
from controllers.host import AgentHost
from controllers.security import ENGINE_ID, create_keypair, load_keypair
from controllers.state import StateDB
from controllers.wire import Activation
from engine.plan import Phase, SignalPlan, make_plan

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def four_phase(sid: str, g1: int = 20, g2: int = 20, offset_s: int = 0, yellow: int = 3,
               allred: int = 2) -> SignalPlan:
    """Two-stage plan over 4 links (0,1 together; 2,3 together) with yellow, all-red and a 1 s red-amber."""
    phases = [Phase("GGrr", g1), Phase("yyrr", yellow, kind="yellow"), Phase("rrrr", allred, kind="allred"),
              Phase("rruu", 1, kind="redamber"), Phase("rrGG", g2), Phase("rryy", yellow, kind="yellow"),
              Phase("rrrr", allred, kind="allred"), Phase("uurr", 1, kind="redamber")]
    return make_plan(sid, phases, offset_s=offset_s)


def wait_for(pred: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        val = pred()
        if val:
            return val
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or pred}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Keys:
    """tmp/keys: engine + controllers (the allow-list excludes 'intruder'); tmp/other: another engine's pair."""

    def __init__(self, root: Path, controllers: tuple[str, ...]):
        self.dir = root / "keys"
        self.allow = root / "allow"
        self.allow.mkdir(parents=True, exist_ok=True)
        create_keypair(self.dir, ENGINE_ID)
        for cid in controllers:
            create_keypair(self.dir, cid)
            shutil.copy(self.dir / f"{cid}.key", self.allow / f"{cid}.key")
        create_keypair(self.dir, "intruder")
        create_keypair(root / "other", ENGINE_ID)
        self.engine = load_keypair(self.dir / f"{ENGINE_ID}.key_secret")
        self.other_engine = load_keypair(root / "other" / f"{ENGINE_ID}.key_secret")

    def pair(self, cid: str):
        return load_keypair(self.dir / f"{cid}.key_secret")


class Harness:
    """An engine thread and an agent-host thread on loopback, with fast timings."""

    def __init__(self, root: Path, controllers: tuple[str, ...] = ("c1",), *, scale: float = 50.0,
                 lease_s: float = 1.5, heartbeat_s: float = 0.2):
        self.root = root
        self.ids = controllers
        self.keys = Keys(root, controllers)
        self.scale = scale
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.engine: Engine | None = None
        self._engine_thread: threading.Thread | None = None
        self._engine_stop = threading.Event()
        self.agents: dict[str, ControllerAgent] = {}
        self.host: AgentHost | None = None
        self._host_thread: threading.Thread | None = None
        self._host_stop = threading.Event()
        self.agent_ctx = zmq.Context()

    # ---------------------------------------------------------------- engine
    def start_engine(self, **overrides) -> Engine:
        kw = dict(endpoint=self.endpoint, state_dir=self.root / "engine-state", keys=self.keys.engine,
                  allow_dir=self.keys.allow, heartbeat_s=self.heartbeat_s, offline_after_s=2.0,
                  retry_initial_s=0.2, retry_max_s=1.0, lease_s=self.lease_s, activation=Activation(kind="asap"))
        kw.update(overrides)
        eng = Engine(EngineConfig(**kw))
        eng.start()
        self.engine = eng
        self._engine_stop = threading.Event()
        self._engine_thread = threading.Thread(target=eng.run, args=(self._engine_stop,), daemon=True)
        self._engine_thread.start()
        return eng

    def stop_engine(self) -> None:
        if self._engine_thread is not None:
            self._engine_stop.set()
            self._engine_thread.join(timeout=10)
            self._engine_thread = None
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def publish(self, *plans: SignalPlan, **kw):
        return self.engine.call(lambda e: e.publish(plans, **kw))

    def summary(self, cid: str) -> dict:
        return self.engine.call(lambda e: e.summary().get(cid, {}))

    # ---------------------------------------------------------------- agents
    def agent_config(self, cid: str, **overrides) -> AgentConfig:
        fallback = four_phase(cid, 20, 20)
        kw = dict(controller_id=cid, endpoint=self.endpoint, keys=self.keys.pair(cid),
                  engine_public=self.keys.engine.public, state_dir=self.root / "ctl-state", fallback=fallback,
                  spec=spec_from_fallback(fallback), clock=DayClock(self.scale, start_s=0.0), hello_after_s=0.5,
                  status_interval_s=1.0, reconnect_ivl_ms=100, reconnect_ivl_max_ms=500, fsync=True)
        kw.update(overrides)
        return AgentConfig(**kw)

    def start_agents(self, configs: list[AgentConfig] | None = None, *,
                     before_run: Callable[[AgentHost], None] | None = None, **host_kw) -> dict[str, ControllerAgent]:
        """Agents in one AgentHost on a thread; ``before_run(host)`` is called after the host's start()."""
        configs = configs if configs is not None else [self.agent_config(cid) for cid in self.ids]
        self.db = StateDB(self.root / "ctl-state" / f"host-{len(configs)}-{time.monotonic_ns()}.sqlite")
        agents = [ControllerAgent(cfg, self.agent_ctx, db=self.db) for cfg in configs]
        self.agents = {a.id: a for a in agents}
        host_kw.setdefault("tick_s", 0.01)
        self.host = AgentHost(agents, db=self.db, **host_kw)
        self.host.start()
        if before_run is not None:
            before_run(self.host)
        self._host_stop = threading.Event()
        self._host_thread = threading.Thread(target=self.host.run, args=(self._host_stop,), daemon=True)
        self._host_thread.start()
        return self.agents

    def stop_agents(self) -> None:
        if self._host_thread is not None:
            self._host_stop.set()
            self._host_thread.join(timeout=10)
            self._host_thread = None
        if self.host is not None:
            self.host.close()
            self.host = None
            self.db.close()

    def applied(self, cid: str) -> list:
        return [ref for ref, _ in list(self.agents[cid].applied_log)]

    # ---------------------------------------------------------------- teardown
    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop_agents()
        finally:
            try:
                self.stop_engine()
            finally:
                self.agent_ctx.destroy(linger=0)


class Proc:
    """A `python -m controllers ...` subprocess with its output in a log file; killed on exit."""

    def __init__(self, args: list[str], log_path: Path):
        self.log_path = log_path
        self._fh = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.p = subprocess.Popen([PY, "-m", "controllers", *args], cwd=REPO, stdout=self._fh,
                                  stderr=subprocess.STDOUT, env=env)

    def kill9(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(timeout=10)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._fh.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def quiet_logs() -> None:
    logging.getLogger("controllers").setLevel(logging.INFO)
