"""Run one or many controller agents in one thread (a controller process, or a gateway serving many controllers)."""

from __future__ import annotations

import gc
import heapq
import logging
import math
import os
import selectors
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

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


class LoopGC:
    """Cyclic garbage collection at times a service loop chooses, instead of Python's allocation counter.

    Why: CPython starts a young collection when tracked allocations minus *all* tracked deallocations pass the first
    threshold. An agent host frees about as many old objects (plans, bitsets and verdicts leaving the controllers'
    caches) as it makes new ones, so that count hardly grows while the young generation does: measured in the
    benchmark's agent processes at 1000-5000 plans/s, "young" collections over up to 70 thousand objects, up to 46 ms
    of CPU each (113 ms of wall time on the shared machine), every plan in flight to that process waiting behind them.

    Here the automatic collector is off and :meth:`step` (called by the loop after it has sent its answers) collects
    the two younger generations together every ``young_s`` and everything every ``full_s``. A young collection then
    covers only what the loop made in ``young_s`` (about 1-2 ms of CPU at 2500 plans/s per process), and each object
    is looked at once before it moves to the oldest generation, where reference counting frees it as before (the
    benchmark's young collections freed 1-3 objects each; those that survive one wait for the full collection).

    :meth:`start` collects, freezes the survivors (:func:`gc.freeze`: start-up objects live as long as the process)
    and disables the automatic collector; :meth:`stop` enables it again."""

    def __init__(self, young_s: float = 0.02, full_s: float = 300.0):
        self.young_s = young_s
        self.full_s = full_s
        self.collections = [0, 0, 0]  # made by step(), per generation collected
        self._next_young = self._next_full = 0.0
        self._was_enabled = False

    def start(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        gc.collect()
        gc.freeze()
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._next_young = now + self.young_s
        self._next_full = now + self.full_s

    def stop(self) -> None:
        if self._was_enabled:
            gc.enable()
            self._was_enabled = False

    def step(self, now: float) -> int:
        """Make the collection due at ``now``, if any; returns the oldest generation collected (-1: none was due)."""
        if now < self._next_young:
            return -1
        self._next_young = now + self.young_s
        gen = 1
        if now >= self._next_full:
            gen = 2
            self._next_full = now + self.full_s
        gc.collect(gen)
        self.collections[gen] += 1
        return gen


class AgentHost:
    """Runs any number of agents in one thread: one selector over their sockets, ticks when something is due.

    The selector watches each DEALER's and each monitor socket's ``zmq.FD`` (cost per wake-up independent of the number
    of agents). That file descriptor only says "look at the socket": the host then drains it until EAGAIN; as ZeroMQ
    documents, a send can consume the notification, so after sending the host checks ``EVENTS`` itself, and every
    ``sweep_s`` it looks at each socket once more (``EVENTS``, no failed recv; monitors every second sweep), which
    bounds any lost wake-up to ``sweep_s`` (``2 * sweep_s`` for a monitor). No lost wake-up has been seen (every path
    that touches a socket reads ``EVENTS`` afterwards); the sweep is the bound should one happen, and its cost per
    second does not depend on the load (0.25 s rather than 0.1 s: see bench/results/controller_bench.md, tenth look).

    Ticks: an agent whose clock says when its seconds begin (:meth:`ControllerAgent.next_due`, e.g. a
    :class:`controllers.agent.DayClock`) is ticked when something is due: its lease runs out, its running plan reaches a
    point where it may switch to a pending plan, a HELLO or a STATUS is due. The host keeps those times in a heap and
    asks the agent again after handling its messages (a new plan or lease changes them), so an idle controller costs
    nothing between its events and every event is handled when it is due (late only by the loop iteration in
    progress), not up to a tick later. Agents with other clocks are ticked every ``tick_s``.

    ``freeze_gc``: for a process that exists to host agents (a gateway), move the objects existing at start-up out of
    the garbage collector's reach and collect on the loop's schedule (:class:`LoopGC`: short young collections every
    20 ms after the answers have gone out, a full one every 5 minutes) instead of Python's allocation counter; the
    automatic collector is off from :meth:`start` to :meth:`close`.

    ``batch``: at most this many agents' messages are handled per loop iteration before the group commit and the sends
    (the others wait for the next iteration, which does not sleep), so a burst (after a pause, or at a high rate) is
    answered in bounded slices rather than held behind one long batch; at most ``2 * batch`` due ticks likewise.

    Agents whose store is the host's shared :class:`StateDB` are group-committed: per loop iteration the host handles
    the received messages and the ticks, commits all state changes in one transaction, then sends the answers. With
    ``commit_thread`` the loop writes the transaction's statements and a helper thread its COMMIT (the fsync): the loop
    goes on handling messages meanwhile (their states and answers form the next group), and a group's answers are
    sent once its COMMIT has returned."""

    #: a tick found with nothing to do (a clock's float rounding at a second's boundary) is retried this much later
    MIN_GAP_S = 0.001

    def __init__(self, agents: list[ControllerAgent], tick_s: float = 0.02, db: StateDB | None = None, *,
                 freeze_gc: bool = False, batch: int = 64, sweep_s: float = 0.25, commit_thread: bool = False):
        self.agents = agents
        self.tick_s = tick_s
        self.sweep_s = sweep_s
        self.db = db
        self.freeze_gc = freeze_gc
        self.gc: LoopGC | None = None  # made by start() with freeze_gc
        self.batch = max(1, int(batch))
        self.ticks = 0  # agent ticks made by run()
        self._sel: selectors.BaseSelector | None = None
        self._touched: list[ControllerAgent] = []
        self._more: list[ControllerAgent] = []
        self._index = {id(a): i for i, a in enumerate(agents)}
        self._due = [math.inf] * len(agents)  # per agent: the earliest time it is in the heap for
        self._heap: list[tuple[float, int]] = []
        self.commit_thread = commit_thread and db is not None
        self._committer: ThreadPoolExecutor | None = None
        self._inflight: Future | None = None
        self._inflight_out: list[tuple[ControllerAgent, list]] = []
        self._wake_r = self._wake_w = -1

    def start(self) -> None:
        self._sel = selectors.DefaultSelector()
        for a in self.agents:
            if self.db is not None and a.store.db is self.db:
                a.defer_sends(self._touched.append)
            if a.sock is None:
                a.start()
            self._sel.register(a.sock.getsockopt(zmq.FD), selectors.EVENT_READ, a)
            self._sel.register(a.monitor.sock.getsockopt(zmq.FD), selectors.EVENT_READ, a.monitor)
        if self.commit_thread:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            self._sel.register(self._wake_r, selectors.EVENT_READ, None)
            self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gronvag-agents-commit")
        now = time.monotonic()
        for a in self.agents:
            self._schedule(a, now)
        if self.freeze_gc:
            # a process serving many controllers: their start-up objects live as long as the process, so keep them out
            # of every later collection, and collect what the loop makes on its own schedule (LoopGC says why)
            self.gc = LoopGC()
            self.gc.start()

    def _schedule(self, agent: ControllerAgent, now: float) -> None:
        """Make sure ``agent`` is in the heap for its next due time (entries only ever move earlier here; a stale later
        entry is skipped when it comes up)."""
        i = self._index[id(agent)]
        try:
            due = agent.next_due()
        except Exception:  # noqa: BLE001 - tick it regularly rather than lose it
            log.exception("%s: next due time failed", agent.id)
            due = None
        due = now + self.tick_s if due is None else max(due, now + self.MIN_GAP_S)
        if due < self._due[i]:
            self._due[i] = due
            heapq.heappush(self._heap, (due, i))

    def _tick_due(self, now: float) -> None:
        """Tick the agents whose due time has come (at most 2 * batch; the rest in the next iteration)."""
        heap, dues, agents = self._heap, self._due, self.agents
        budget = 2 * self.batch
        while heap and heap[0][0] <= now and budget:
            due, i = heapq.heappop(heap)
            if due != dues[i]:
                continue  # superseded by an earlier entry, already handled
            dues[i] = math.inf
            a = agents[i]
            try:
                real = a.next_due()
            except Exception:  # noqa: BLE001
                real = None
            if real is not None and real > now:  # moved later meanwhile (lease renewed, messages received)
                self._schedule(a, now)
                continue
            budget -= 1
            self.ticks += 1
            try:
                a.tick(now)
            except Exception:  # noqa: BLE001 - one agent's bug must not stop the others
                log.exception("%s: agent tick failed", a.id)
            self._schedule(a, now)

    def run(self, stop: threading.Event, until: float | None = None) -> None:
        if self._sel is None:
            self.start()
        # every socket is looked at once per sweep_s, a slice at a time (bounds a lost wake-up)
        n = len(self.agents)
        slices = max(1, min(n, 10))
        per = -(-n // slices)
        slice_s = self.sweep_s / slices
        idx = rounds = 0
        next_slice = 0.0
        heap = self._heap
        loop_gc = self.gc
        while not stop.is_set() and (until is None or time.monotonic() < until):
            if self._more:
                timeout = 0.0
            else:
                wake = min(next_slice, heap[0][0]) if heap else next_slice
                timeout = max(0.0, wake - time.monotonic())
            self.poll_once(timeout)
            now = time.monotonic()
            if heap and heap[0][0] <= now:
                self._tick_due(now)
            if now >= next_slice:
                # monitors wake the selector; this only bounds a lost wake-up
                self._sweep(self.agents[idx: idx + per], rounds % 2 == 0, now)
                idx = 0 if idx + per >= n else idx + per
                rounds += idx == 0
                next_slice = now + slice_s
            self.commit_and_flush()
            if loop_gc is not None:  # after the answers have gone out (a loop asleep makes no garbage: no wake-up)
                loop_gc.step(time.monotonic())

    def _sweep(self, agents: list[ControllerAgent], drain_monitors: bool, now: float) -> None:
        """Look once at the sockets of ``agents`` (and at their monitors if ``drain_monitors``) and handle what waits
        there. One ``zmq_poll`` with a zero timeout reads every socket's ``EVENTS`` inside libzmq, as
        ``sock.get(EVENTS)`` would one by one (about 0.5 against 1.2 us a socket; the sweep looks at every socket
        every ``sweep_s``, which was most of an idle host's CPU); if it fails (a socket closed under it), each socket is
        looked at on its own."""
        items: list[tuple[zmq.Socket, int]] = []
        owner: dict[zmq.Socket, ControllerAgent | MonitorLog] = {}
        for a in agents:
            if drain_monitors:
                items.append((a.monitor.sock, POLLIN))
                owner[a.monitor.sock] = a.monitor
            if a.sock is not None:
                items.append((a.sock, POLLIN))
                owner[a.sock] = a
        try:
            ready = [owner[sock] for sock, _ in zmq.zmq_poll(items, 0)]
        except zmq.ZMQError:
            ready = None
        for a in agents if ready is None else ready:
            try:
                if isinstance(a, MonitorLog):
                    a.drain()
                    continue
                if ready is None:  # looked at one by one
                    if drain_monitors:
                        a.monitor.drain()
                    if a.sock is None or not a.sock.get(EVENTS) & POLLIN:
                        continue
                if a.on_readable(recv_first=True):  # EVENTS (zmq_poll's, or the look above) said POLLIN
                    self._more.append(a)
                self._schedule(a, now)
            except Exception:  # noqa: BLE001 - one agent's bug must not stop the others
                log.exception("%s: agent failed", a.name if isinstance(a, MonitorLog) else a.id)

    def commit_and_flush(self) -> None:
        """Make the staged states durable, then send what the agents said meanwhile (with ``commit_thread``: start the
        commit of the staged states if none is running, and send the answers of a commit that has returned)."""
        if self._committer is None:
            if self.db is not None:
                self.db.commit()
            self._send_outs(self._take_outboxes())
            return
        if self._inflight is not None:
            if not self._inflight.done():
                return  # what is staged meanwhile forms the next group
            self._finish_commit()
        if self.db.dirty:
            outs = self._take_outboxes()  # these answers follow states staged up to now
            try:
                self.db.begin_commit()
            except BaseException:
                self._put_back(outs)
                raise
            self._inflight_out = outs
            self._inflight = self._committer.submit(self.db.end_commit)
            self._inflight.add_done_callback(self._wake)
        else:
            self._send_outs(self._take_outboxes())  # every staged state is durable: nothing to wait for

    def _wake(self, _fut: Future) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # closed, or full of wake-ups already
            pass

    def _finish_commit(self) -> None:
        fut, outs = self._inflight, self._inflight_out
        self._inflight, self._inflight_out = None, []
        try:
            fut.result()
        except BaseException:
            self.db.restage()
            self._put_back(outs)
            raise
        self._send_outs(outs)

    def _take_outboxes(self) -> list[tuple[ControllerAgent, list]]:
        touched = self._touched[:]
        self._touched.clear()
        return [(a, a.take_outbox()) for a in touched]

    def _put_back(self, outs: list[tuple[ControllerAgent, list]]) -> None:
        for a, out in outs:
            if out:
                if not a._outbox:
                    self._touched.append(a)
                a._outbox[:0] = out

    def _send_outs(self, outs: list[tuple[ControllerAgent, list]]) -> None:
        for a, out in outs:
            a.send_out(out)
        # a send may have consumed a socket's wake-up: look whether messages wait, for all of them in one zmq_poll
        # (as in _sweep)
        owner = {a.sock: a for a, _ in outs if a.sock is not None}
        if not owner:
            return
        try:
            ready = zmq.zmq_poll([(sock, POLLIN) for sock in owner], 0)
        except zmq.ZMQError:
            self._more.extend(a for a in owner.values() if a.sock is not None and a.sock.get(EVENTS) & POLLIN)
            return
        self._more.extend(owner[sock] for sock, _ in ready)

    def poll_once(self, timeout_s: float) -> None:
        ready = []
        for key, _ in self._sel.select(timeout_s):
            if key.data is None:  # the committer's wake-up
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            elif isinstance(key.data, MonitorLog):
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
        now = time.monotonic()
        # without a commit thread, the answers go out in this iteration and the host then looks at their sockets
        until_answer = self._committer is None
        for agent in todo:
            try:
                # the selector (or a look at EVENTS) reported these sockets: receive before reading EVENTS again
                if agent.on_readable(until_answer=until_answer, recv_first=True):
                    self._more.append(agent)
                self._schedule(agent, now)
            except Exception:  # noqa: BLE001 - log and keep serving the other controllers
                log.exception("%s: message handling failed", agent.id)

    def close(self) -> None:
        try:
            if self._inflight is not None:
                self._inflight.exception()  # wait for it
                self._finish_commit()
            if self._committer is not None:
                self._committer.shutdown(wait=True)
                self._committer = None
            self.commit_and_flush()
        except Exception:  # noqa: BLE001 - closing anyway
            log.exception("agent host: final commit failed")
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        for a in self.agents:
            a.close()
        if self.gc is not None:
            self.gc.stop()
