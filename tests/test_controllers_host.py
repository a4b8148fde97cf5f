"""AgentHost: bounded batches, ticks only when something is due, the sweep for lost wake-ups, GC settings."""

from __future__ import annotations

import gc
import threading
import time

import pytest
import zmq

from controllers import host as host_module
from controllers.agent import FALLBACK_KEY, DayClock
from controllers.config import spec_from_fallback
from controllers.host import SERVICE_GC_THRESHOLDS, AgentHost, LoopGC, quiet_gc
from controllers.signal import PlanRunner
from tests.test_controllers_support import Harness, four_phase, wait_for


def test_one_agent_per_iteration_still_delivers_every_plan_once(tmp_path):
    ids = ("c1", "c2", "c3", "c4")
    with Harness(tmp_path, ids) as h:
        h.start_engine()
        h.start_agents(batch=1)  # the others' messages wait for the next iterations
        wait_for(lambda: all(a.engine_epoch for a in h.agents.values()), 5, what="WELCOME")
        refs = h.publish(*(four_phase(cid, 20 + i, 25 - i, i) for i, cid in enumerate(ids)))
        for cid, ref in zip(ids, refs, strict=True):
            wait_for(lambda cid=cid, ref=ref: h.agents[cid].running_ref == ref and
                     h.summary(cid).get("status") == "applied", 8, what=f"{cid} applying {ref.short()}")
        refs2 = h.publish(*(four_phase(cid, 18 + i, 27 - i, i) for i, cid in enumerate(ids)))
        for cid, ref in zip(ids, refs2, strict=True):
            wait_for(lambda cid=cid, ref=ref: h.agents[cid].running_ref == ref and
                     h.summary(cid).get("status") == "applied", 8, what=f"{cid} applying {ref.short()}")
        for cid, r1, r2 in zip(ids, refs, refs2, strict=True):
            assert h.applied(cid) == [r1, r2]
            assert h.summary(cid)["acks"].get((r2.epoch, r2.seq, "accepted")) == 1


def test_quiet_gc_freezes_and_raises_the_full_collection_threshold():
    before = gc.get_threshold()
    try:
        quiet_gc()
        assert gc.get_threshold() == SERVICE_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_loop_gc_collects_on_its_schedule_and_restores_the_collector():
    assert gc.isenabled()
    lgc = LoopGC(young_s=0.02, full_s=1.0)
    try:
        lgc.start(now=100.0)
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0
        seen = []
        gc.callbacks.append(cb := lambda phase, info: phase == "start" and seen.append(info["generation"]))
        try:
            assert lgc.step(100.01) == -1  # nothing due yet
            assert lgc.step(100.02) == 1  # young and middle generations together
            assert lgc.step(100.03) == -1
            assert lgc.step(100.05) == 1
            assert lgc.step(101.0) == 2  # the full collection is due
            assert lgc.step(101.01) == -1
        finally:
            gc.callbacks.remove(cb)
        assert seen == [1, 1, 2]
        assert lgc.collections == [0, 2, 1]
        # a cycle made meanwhile is reclaimed by the next young collection
        import weakref

        class Node:
            pass
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None  # the automatic collector is off
        assert lgc.step(102.0) in (1, 2)
        assert gone() is None
    finally:
        lgc.stop()
        gc.unfreeze()
    assert gc.isenabled()


def test_a_host_with_freeze_gc_collects_in_its_loop(tmp_path):
    with Harness(tmp_path, ("c1",)) as h:
        h.start_engine()
        h.start_agents(freeze_gc=True)
        try:
            wait_for(lambda: h.agents["c1"].engine_epoch, 5, what="WELCOME")
            assert not gc.isenabled()
            wait_for(lambda: sum(h.host.gc.collections) >= 3, 5, what="the host's young collections")
            ref = h.publish(four_phase("c1", 22, 24, 3))[0]
            wait_for(lambda: h.agents["c1"].running_ref == ref, 8, what="the plan applied")
        finally:
            h.stop_agents()
        assert gc.isenabled()
    gc.unfreeze()


# ---------------------------------------------------------------------------------------------- ticks when due
def test_next_switch_is_a_lower_bound_of_the_switch_time():
    """Stepping second by second, no switch ever comes before what next_switch_s() said, whatever the activation, and
    the switch comes exactly at one of the times it names."""
    spec = spec_from_fallback(four_phase("s", 20, 20))
    cases = [(four_phase("s", 20, 20), four_phase("s", 30, 12, 7), "asap", 0),
             (four_phase("s", 25, 18, 3), four_phase("s", 15, 30, 11), "next_cycle", 0),
             (four_phase("s", 20, 20), four_phase("s", 22, 22, 40), "at", 137),
             (four_phase("s", 12, 40, 5), four_phase("s", 20, 20), "asap", 0)]
    for old, new, kind, at_s in cases:
        for t0 in range(0, 60, 7):
            for lead in (0, 3, 11, 50):  # the runner has run a while before the request
                r = PlanRunner(old, spec, t0)
                r.advance_to(t0 + lead)
                r.request(new, key="new", activation=kind, at_s=at_s)
                bounds = []
                switched = None
                for _ in range(400):
                    bound = r.next_switch_s()
                    assert bound is not None and bound > r.t_s
                    bounds.append(bound)
                    sw = r.step()
                    if sw is not None:
                        switched = sw.t_s
                        break
                assert switched is not None, (kind, t0, lead)
                assert all(switched >= b for b in bounds)  # never earlier than said at any second before
                assert bounds[-1] == switched  # and said exactly, the second before
                assert r.next_switch_s() is None  # nothing pending any more


def test_runner_skipping_to_the_named_time_switches_as_second_by_second():
    spec = spec_from_fallback(four_phase("s", 20, 20))
    old, new = four_phase("s", 20, 20), four_phase("s", 30, 12, 7)
    a, b = PlanRunner(old, spec, 5), PlanRunner(old, spec, 5)
    for r in (a, b):
        r.advance_to(17)
        r.request(new, key="new", activation="asap")
    sw_a = []
    while not sw_a:
        sw_a = a.advance_to(a.next_switch_s())  # only the times a host would wake at
    sw_b = []
    while not sw_b:
        sw_b = [s for s in [b.step()] if s is not None]
    assert sw_a == sw_b and a.t_s == b.t_s


def test_day_clock_says_when_its_seconds_begin():
    c = DayClock(25.0, start_s=100.0)
    at = c.monotonic_at(130.0)
    assert abs(at - (time.monotonic() + 30.0 / 25.0)) < 0.05
    time.sleep(max(0.0, at - time.monotonic()) + 0.002)
    assert c() >= 130.0


def test_an_idle_host_ticks_only_when_something_is_due(tmp_path):
    ids = tuple(f"c{i}" for i in range(8))
    with Harness(tmp_path, ids) as h:
        h.start_engine()
        h.start_agents()  # tick_s 0.01: the old host ticked every agent 100 times a second
        wait_for(lambda: all(a.engine_epoch for a in h.agents.values()), 5, what="WELCOME")
        t0, ticks0 = time.monotonic(), h.host.ticks
        time.sleep(1.5)
        ticks = h.host.ticks - ticks0
        wall = time.monotonic() - t0
        # fallback mode, nothing pending, pings every 0.2 s: only the 1 s STATUS is due (about 1.5 per agent)
        assert ticks <= 4 * len(ids) * wall, ticks
        assert all(a.mode == "fallback" for a in h.agents.values())


def test_a_plan_is_applied_and_the_lease_expires_on_time_with_ticks_when_due(tmp_path):
    with Harness(tmp_path, ("c1",), lease_s=1.0) as h:
        h.start_engine()
        h.start_agents()
        a = h.agents["c1"]
        wait_for(lambda: a.engine_epoch, 5, what="WELCOME")
        (ref,) = h.publish(four_phase("c1", 30, 15))
        wait_for(lambda: a.running_ref == ref, 8, what="plan applied")
        late: list[float] = []
        expire = a._expire_lease

        def timed_expire() -> None:
            late.append(time.monotonic() - a._lease_deadline)
            expire()

        a._expire_lease = timed_expire
        h.stop_engine()  # silence: no PLAN, no PING
        wait_for(lambda: a.mode == "fallback", 5, what="lease expiry")
        wait_for(lambda: a.runner.key == FALLBACK_KEY, 8, what="fallback plan running")
        assert len(late) == 1 and 0.0 <= late[0] < 0.25, late  # the deadline is a due time (the old host: a tick)
        # the switch back was made at a safe point: the fallback runs from the end of a green of the central plan
        assert a.applied_log == [(ref, a.applied_log[0][1])]


@pytest.mark.parametrize("poll_fails", [False, True])
def test_a_lost_wake_up_is_bounded_by_the_sweep(tmp_path, monkeypatch, poll_fails):
    """With the DEALER's and its monitor's file descriptors out of the selector (every wake-up lost), the periodic
    sweep still reads the sockets: the handshake is seen (HELLO, WELCOME), plans are accepted and applied, within a few
    sweeps. The sweep reads all sockets of a slice with one zmq_poll; when that fails it reads them one by one."""
    def deaf(host: AgentHost) -> None:
        for a in host.agents:
            host._sel.unregister(a.sock.getsockopt(zmq.FD))
            host._sel.unregister(a.monitor.sock.getsockopt(zmq.FD))

    if poll_fails:
        def failing_poll(items, timeout=-1):
            raise zmq.ZMQError(zmq.ENOTSOCK)

        monkeypatch.setattr(host_module.zmq, "zmq_poll", failing_poll)
    with Harness(tmp_path, ("c1",)) as h:
        h.start_engine()
        h.start_agents(before_run=deaf, sweep_s=0.2)
        a = h.agents["c1"]
        wait_for(lambda: a.engine_epoch, 5, what="WELCOME via the sweep")
        t0 = time.monotonic()
        (ref,) = h.publish(four_phase("c1", 30, 15))
        wait_for(lambda: h.summary("c1").get("status") in ("accepted", "applied"), 5, what="ACK accepted")
        assert time.monotonic() - t0 < 0.2 + 0.5  # one sweep, plus the engine's commit and the test's polling
        wait_for(lambda: a.running_ref == ref, 8, what="plan applied")


def test_agents_with_a_clock_of_unknown_pace_are_ticked_every_tick_s(tmp_path):
    class Clock:  # no monotonic_at: the host cannot know when its seconds begin
        def __init__(self) -> None:
            self.t0 = time.monotonic()

        def __call__(self) -> float:
            return (time.monotonic() - self.t0) * 50.0

    with Harness(tmp_path, ("c1",)) as h:
        h.start_engine()
        cfg = h.agent_config("c1", clock=Clock())
        h.start_agents([cfg], tick_s=0.02)
        a = h.agents["c1"]
        assert a.next_due() is None
        wait_for(lambda: a.engine_epoch, 5, what="WELCOME")
        (ref,) = h.publish(four_phase("c1", 30, 15))
        wait_for(lambda: a.running_ref == ref, 8, what="plan applied")
        t = a.runner.t_s
        time.sleep(0.3)
        assert a.runner.t_s >= t + 10  # advanced by ticks alone (50 signal s per second)


def test_agent_commits_on_a_helper_thread_still_answer_only_durable_states(tmp_path):
    """commit_thread: the loop goes on while the COMMIT runs; an ACK leaves only after the state it follows is durable,
    and every plan is still accepted and applied once."""
    ids = ("c1", "c2", "c3")
    with Harness(tmp_path, ids) as h:
        h.start_engine()
        gate = threading.Event()
        held: list[int] = []

        def slow_commits(host: AgentHost) -> None:
            end = host.db.end_commit

            def end_commit() -> None:  # on the committer thread
                if not gate.is_set() and b'"accepted_status":"accepted"' in host.db._writing.get("c1", b""):
                    held.append(1)
                    gate.wait(10)
                end()

            host.db.end_commit = end_commit

        h.start_agents(before_run=slow_commits, commit_thread=True, batch=2)
        wait_for(lambda: all(a.engine_epoch for a in h.agents.values()), 5, what="WELCOME")
        (ref,) = h.publish(four_phase("c1", 30, 15))
        wait_for(lambda: held, 5, what="c1's state being committed")
        time.sleep(0.3)
        assert h.agents["c1"].last_accepted == ref  # accepted and staged ...
        assert h.summary("c1").get("status") == "issued"  # ... but no ACK before the state is durable
        refs = h.publish(*(four_phase(cid, 22, 24, 3) for cid in ("c2", "c3")))  # the loop goes on meanwhile
        wait_for(lambda: all(h.agents[c].last_accepted == r for c, r in zip(("c2", "c3"), refs, strict=True)), 5,
                 what="c2, c3 handled while c1's commit waits")
        gate.set()
        for cid, r in zip(ids, (ref, *refs), strict=True):
            wait_for(lambda cid=cid, r=r: h.agents[cid].running_ref == r and h.summary(cid).get("status") == "applied",
                     8, what=f"{cid} applied")
            assert h.applied(cid) == [r]
            assert h.summary(cid)["acks"].get((r.epoch, r.seq, "accepted")) == 1


class _QueueSocket:
    """Stands in for a DEALER with messages waiting: EVENTS says POLLIN while any frame is queued."""

    class _Frame:
        def __init__(self, data: bytes, more: bool):
            self.bytes, self.more = data, more

    def __init__(self, messages: list[list[bytes]]):
        self.frames = [self._Frame(f, i < len(m) - 1) for m in messages for i, f in enumerate(m)]

    def get(self, option: int) -> int:
        return zmq.POLLIN if self.frames else 0

    def recv(self, flags: int = 0, copy: bool = True):
        if not self.frames:
            raise zmq.Again()
        return self.frames.pop(0)


def _plan_frames(seq: int, g1: int) -> list[bytes]:
    """The frames of a PLAN for controller c1 (epoch 5, sequence ``seq``, first green ``g1`` s, applied at once)."""
    from controllers import wire
    from controllers.wire import Activation, PlanMsg, PlanRef
    from engine.plan import encode_plan

    body = encode_plan(four_phase("c1", g1, 20))
    return wire.encode(PlanMsg(msg_id=f"m{seq}", controller_id="c1",
                               ref=PlanRef(epoch=5, seq=seq, sha256=wire.plan_digest(body)),
                               activation=Activation(kind="asap"), lease_s=60.0, plan=body))


def _deferred_agent(tmp_path, tag: str):
    """(agent, its state DB): controller c1 with a state DB of its own and its sends deferred (take_outbox reads
    them)."""
    from controllers.agent import ControllerAgent
    from controllers.state import StateDB
    from tests.test_controllers_support import Harness

    h = Harness(tmp_path / tag, ("c1",))
    db = StateDB(tmp_path / f"s-{tag}.sqlite")
    agent = ControllerAgent(h.agent_config("c1"), None, db=db)
    agent.defer_sends(lambda a: None)
    return agent, db


def test_until_answer_stops_after_a_message_with_an_answer_and_the_rest_waits(tmp_path):
    """ControllerAgent.on_readable(until_answer=True), as AgentHost calls it when it sends the answers and looks at the
    socket in the same iteration: one PLAN handled, its ACK in the outbox, the next message left for the next look;
    without it both are handled. Either way the same ACKs come out."""
    answers = {}
    for until_answer in (True, False):
        a, db = _deferred_agent(tmp_path, str(until_answer))
        a.sock = _QueueSocket([_plan_frames(1, 22), _plan_frames(2, 24)])
        acks = []
        while True:
            more = a.on_readable(until_answer=until_answer)
            acks += [(m.ref.seq, m.status) for m, _ in a.take_outbox()]
            if not more and not a.sock.frames:
                break
            if until_answer:
                assert not more and len(acks) == 1 and a.sock.frames  # one message, its answer, the rest waits
        answers[until_answer] = acks
        a.sock = None
        db.close()
    assert answers[True] == answers[False] == [(1, "accepted"), (2, "accepted")]


def test_recv_first_receives_without_reading_events_first_and_an_empty_socket_is_no_error(tmp_path):
    """ControllerAgent.on_readable(recv_first=True), as AgentHost calls it for sockets its selector (or a zmq_poll)
    reported: the first message is received without an EVENTS read before it; a socket with nothing waiting (a stale
    wake-up) makes the receive raise zmq.Again, which is caught (False, nothing handled). The ACKs are those of the
    plain call."""

    class CountingSocket(_QueueSocket):
        events_reads = 0

        def get(self, option: int) -> int:
            self.events_reads += 1
            return super().get(option)

    answers = {}
    for recv_first in (True, False):
        a, db = _deferred_agent(tmp_path, str(recv_first))
        a.sock = CountingSocket([])
        assert a.on_readable(until_answer=True, recv_first=recv_first) is False  # nothing waiting: no error
        a.sock = sock = CountingSocket([_plan_frames(1, 22)])
        assert a.on_readable(until_answer=True, recv_first=recv_first) is False
        assert sock.events_reads == (0 if recv_first else 1) and not sock.frames
        answers[recv_first] = [(m.ref.seq, m.status) for m, _ in a.take_outbox()]
        a.sock = None
        db.close()
    assert answers[True] == answers[False] == [(1, "accepted")]
