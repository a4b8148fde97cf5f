"""Run one or many controller agents in one thread (a controller process, or a gateway serving many controllers)."""

from __future__ import annotations

import gc
import logging
import selectors
import threading
import time

import zmq

from controllers.agent import ControllerAgent
from controllers.security import EVENTS, POLLIN, MonitorLog
from controllers.state import StateDB

log = logging.getLogger(__name__)

#: :func:`quiet_gc`'s thresholds: Python's defaults for the young generations (their collections take about a
#: millisecond), a full collection only after 1000 middle-generation ones rather than 10. Measured in the benchmark's
#: agent processes: with the defaults a full collection came every 2-3 s and stopped the loop for 35-100 ms (20-60 ms of
#: CPU over 30-76k live objects), and those pauses set the plan round-trip p99 at 3000-5000 plans/s; now one comes
#: every few minutes.
SERVICE_GC_THRESHOLDS = (700, 10, 1000)


def quiet_gc(thresholds: tuple[int, int, int] = SERVICE_GC_THRESHOLDS) -> None:
    """For a long-running service process (an agent host, the engine) once its start-up objects exist: collect, move
    the survivors out of every later collection (:func:`gc.freeze`) and raise the thresholds, so that full collections
    (which pause the loop in proportion to the live objects) become rare. Reference counting frees almost everything;
    the young-generation collections still reclaim fresh reference cycles."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


class AgentHost:
    """Runs any number of agents in one thread: one selector over their sockets, a common tick.

    The selector watches each DEALER's and each monitor socket's ``zmq.FD`` (cost per wake-up independent of the number
    of agents). That file descriptor only says "look at the socket": the host then drains it until EAGAIN; as ZeroMQ
    documents, a send can consume the notification, so after sending the host checks ``EVENTS`` itself, and every tick
    looks at each socket once more (``EVENTS``, no failed recv), which bounds any lost wake-up to ``tick_s``; monitors
    are looked at again every 5 ticks.

    ``freeze_gc``: for a process that exists to host agents (a gateway), move the objects existing at start-up out of
    the garbage collector's reach and make full collections rare (:func:`quiet_gc`).

    ``batch``: at most this many agents' messages are handled per loop iteration before the group commit and the sends
    (the others wait for the next iteration, which does not sleep), so a burst (after a pause, or at a high rate) is
    answered in bounded slices rather than held behind one long batch.

    Agents whose store is the host's shared :class:`StateDB` are group-committed: per loop iteration the host handles
    the received messages and the ticks, commits all state changes in one transaction, then sends the answers."""

    def __init__(self, agents: list[ControllerAgent], tick_s: float = 0.02, db: StateDB | None = None, *,
                 freeze_gc: bool = False, batch: int = 64):
        self.agents = agents
        self.tick_s = tick_s
        self.db = db
        self.freeze_gc = freeze_gc
        self.batch = max(1, int(batch))
        self._sel: selectors.BaseSelector | None = None
        self._touched: list[ControllerAgent] = []
        self._more: list[ControllerAgent] = []

    def start(self) -> None:
        self._sel = selectors.DefaultSelector()
        for a in self.agents:
            if self.db is not None and a.store.db is self.db:
                a.defer_sends(self._touched.append)
            if a.sock is None:
                a.start()
            self._sel.register(a.sock.getsockopt(zmq.FD), selectors.EVENT_READ, a)
            self._sel.register(a.monitor.sock.getsockopt(zmq.FD), selectors.EVENT_READ, a.monitor)
        if self.freeze_gc:
            # a process serving many controllers: their start-up objects live as long as the process, so keep them out
            # of every later full collection (each one would otherwise pause the loop for tens of milliseconds)
            quiet_gc()

    def run(self, stop: threading.Event, until: float | None = None) -> None:
        if self._sel is None:
            self.start()
        # every agent is ticked once per tick_s, a slice at a time, so that messages never wait for a whole round
        n = len(self.agents)
        slices = max(1, min(n, 10))
        per = -(-n // slices)
        slice_s = self.tick_s / slices
        idx = rounds = 0
        next_slice = 0.0
        while not stop.is_set() and (until is None or time.monotonic() < until):
            self.poll_once(0.0 if self._more else max(0.0, next_slice - time.monotonic()))
            now = time.monotonic()
            if now >= next_slice:
                drain_monitors = rounds % 5 == 0  # monitors wake the selector; this only bounds a lost wake-up
                for a in self.agents[idx: idx + per]:
                    try:
                        if drain_monitors:
                            a.monitor.drain()
                        if a.on_readable():
                            self._more.append(a)
                    except Exception:  # noqa: BLE001 - one agent's bug must not stop the others
                        log.exception("%s: agent failed", a.id)
                    try:
                        a.tick(now)
                    except Exception:  # noqa: BLE001
                        log.exception("%s: agent tick failed", a.id)
                idx = 0 if idx + per >= n else idx + per
                rounds += idx == 0
                next_slice = now + slice_s
            self.commit_and_flush()

    def commit_and_flush(self) -> None:
        """Make the staged states durable, then send what the agents said meanwhile."""
        if self.db is not None:
            self.db.commit()
        touched = self._touched[:]
        self._touched.clear()
        for a in touched:
            a.flush()
            if a.sock is not None and a.sock.get(EVENTS) & POLLIN:
                self._more.append(a)

    def poll_once(self, timeout_s: float) -> None:
        ready = []
        for key, _ in self._sel.select(timeout_s):
            if isinstance(key.data, MonitorLog):
                try:
                    key.data.drain()
                except Exception:  # noqa: BLE001 - a monitor callback's bug must not stop the others
                    log.exception("%s: monitor handling failed", key.data.name)
            else:
                ready.append(key.data)
        more, self._more = self._more, []
        todo = list(dict.fromkeys(more + ready))  # those left over from the last iteration first
        if len(todo) > self.batch:
            todo, self._more = todo[: self.batch], todo[self.batch:]
        for agent in todo:
            try:
                if agent.on_readable():
                    self._more.append(agent)
            except Exception:  # noqa: BLE001 - log and keep serving the other controllers
                log.exception("%s: message handling failed", agent.id)

    def close(self) -> None:
        try:
            self.commit_and_flush()
        except Exception:  # noqa: BLE001 - closing anyway
            log.exception("agent host: final commit failed")
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        for a in self.agents:
            a.close()
