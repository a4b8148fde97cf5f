"""Malformed frames and random bytes never crash either side: they are dropped or answered with ERROR, and logged."""

from __future__ import annotations

import logging

import msgspec
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controllers import wire
from controllers.agent import ControllerAgent
from controllers.wire import Activation, PlanMsg, PlanRef
from engine.plan import encode_plan
from tests.test_controllers_support import Harness, four_phase, wait_for

frames_st = st.lists(st.binary(max_size=200), min_size=1, max_size=5)
typed_garbage = st.tuples(st.sampled_from(sorted(wire.TYPES)),
                          st.dictionaries(st.sampled_from(["controller_id", "ref", "epoch", "seq", "plan", "msg_id",
                                                           "status", "mode", "nonce", "ts", "x"]),
                                          st.none() | st.integers(-5, 2**64) | st.text(max_size=10)
                                          | st.binary(max_size=10) | st.dictionaries(st.text(max_size=6),
                                                                                      st.integers(), max_size=3),
                                          max_size=6))


def _frames(data) -> list[bytes]:
    if isinstance(data, tuple):
        kind, body = data
        try:
            return [wire.PROTOCOL, kind, msgspec.msgpack.encode(body)]
        except OverflowError:
            return [wire.PROTOCOL, kind, b"\xc1"]
    return data


def _dealer(h: Harness, cid: str) -> zmq.Socket:
    kp = h.keys.pair(cid)
    s = h.agent_ctx.socket(zmq.DEALER)
    s.linger = 0
    s.routing_id = cid.encode()
    s.curve_publickey, s.curve_secretkey, s.curve_serverkey = kp.public, kp.secret, h.keys.engine.public
    s.connect(h.endpoint)
    return s


def _hello_welcomed(s: zmq.Socket, cid: str) -> bool:
    hello = wire.encode(wire.Hello(controller_id=cid, boot_id="probe", mode="fallback"))
    for _ in range(50):
        try:
            s.send_multipart(hello, flags=zmq.NOBLOCK)
        except zmq.Again:
            s.poll(100)
            continue
        while s.poll(300):
            parts = s.recv_multipart()
            if parts[1] == b"WELCOME":
                return True
    return False


def test_engine_survives_random_frames_from_an_authenticated_peer(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    with Harness(tmp_path, ("c1",)) as h:
        h.start_engine()
        s = _dealer(h, "c1")
        try:
            assert _hello_welcomed(s, "c1")

            @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
            @given(frames_st | typed_garbage)
            def send_garbage(data):
                s.send_multipart(_frames(data))
                while s.poll(0):
                    s.recv_multipart()

            send_garbage()
            # an oversized frame: libzmq drops the connection (MAXMSGSIZE); the DEALER reconnects by itself
            s.send_multipart([wire.PROTOCOL, b"PING", b"\x00" * (wire.MAX_FRAME_BYTES + 10)])
            assert _hello_welcomed(s, "c1"), "engine no longer answers after garbage"
            counts = h.engine.call(lambda e: dict(e.counts))
            assert counts.get("malformed", 0) > 10
            assert "dropped malformed message" in caplog.text
        finally:
            s.close(linger=0)


def test_controller_survives_random_frames_from_the_engine(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    with Harness(tmp_path, ("c1",)) as h:
        eng = h.start_engine()
        h.start_agents()
        a = h.agents["c1"]
        wait_for(lambda: a.engine_epoch, 5, what="WELCOME")

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(frames_st | typed_garbage)
        def push_garbage(data):
            eng.call(lambda e: e.sock.send_multipart([b"c1", *_frames(data)]))

        push_garbage()
        wait_for(lambda: a.counts.get("malformed", 0) > 5, 5, what="agent counting malformed messages")
        # still serving: a real plan is accepted and applied
        (ref,) = h.publish(four_phase("c1", 30, 15))
        wait_for(lambda: a.running_ref == ref, 8, what="plan applied after garbage")
        assert "dropped malformed message from the engine" in caplog.text
        assert "controller reports error" in caplog.text  # the agent answered with ERROR


def test_agent_handle_never_raises(tmp_path):
    h = Harness(tmp_path, ("c1",))
    try:
        a = ControllerAgent(h.agent_config("c1"), h.agent_ctx)
        answers: list = []
        a._send = lambda msg, keep=False: answers.append(msg) or True
        before = (a.mode, a.running_ref, a.last_accepted)

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(frames_st | typed_garbage)
        def feed(data):
            a.handle(_frames(data))
            a.tick()
            assert (a.mode, a.running_ref, a.last_accepted) == before  # garbage changes nothing

        feed()
        assert answers and all(isinstance(m, wire.Error | wire.Ack | wire.Pong | wire.Hello | wire.Status)
                               for m in answers)
        a.close()
    finally:
        h.agent_ctx.destroy(linger=0)


def test_plan_with_wrong_hash_or_foreign_signal_is_rejected(tmp_path):
    h = Harness(tmp_path, ("c1",))
    try:
        a = ControllerAgent(h.agent_config("c1"), h.agent_ctx)
        sent: list = []
        a._send = lambda msg, keep=False: sent.append(msg) or True
        body = encode_plan(four_phase("c1", 30, 15))
        cases = [
            (body, "ab" * 32, "sha256 does not match"),
            (encode_plan(four_phase("c2", 30, 15)), None, "this controller runs 'c1'"),
            (b'{"not": "a plan"}', None, "is not a c1 plan"),
            (body.replace(b'"cycle_s"', b' "cycle_s"'), None, "canonical"),
        ]
        for seq, (plan, sha, expect) in enumerate(cases, start=1):
            m = PlanMsg(msg_id=f"m{seq}", controller_id="c1",
                        ref=PlanRef(epoch=3, seq=seq, sha256=sha or wire.plan_digest(plan)),
                        activation=Activation(), lease_s=10.0, plan=plan)
            a.handle(wire.encode(m))
            assert sent[-1].status == "rejected" and expect in sent[-1].reason, (expect, sent[-1].reason)
        assert a.mode == "fallback" and a.last_accepted is None
        a.close()
    finally:
        h.agent_ctx.destroy(linger=0)
