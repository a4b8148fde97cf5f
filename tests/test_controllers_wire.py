"""GVCP/1 codec: round trips, validation, and random bytes that must only ever raise WireError."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controllers import wire
from controllers.wire import Activation, PlanRef, WireError
from engine.plan import encode_plan
from tests.test_controllers_support import four_phase

SHA = "ab" * 32


def _samples() -> list:
    ref = PlanRef(epoch=7, seq=3, sha256=SHA)
    body = encode_plan(four_phase("J1"))
    return [
        wire.Hello(controller_id="J1", boot_id="b1", mode="fallback", signal_id="J1", last_accepted=ref),
        wire.Welcome(epoch=7, heartbeat_s=5.0, server_time=1.0),
        wire.PlanMsg(msg_id="m1", controller_id="J1", ref=PlanRef(epoch=7, seq=3, sha256=wire.plan_digest(body)),
                     activation=Activation(kind="at", at_s=3600.0), lease_s=30.0, plan=body),
        wire.Ack(msg_id="m2", ack_of="m1", controller_id="J1", ref=ref, status="rejected", mode="central",
                 reason="group 0 green 3 s is shorter than its minimum 5 s", running=ref),
        wire.Status(controller_id="J1", mode="central", running=ref, state="GGrr", alarms=("LEASE_EXPIRED",)),
        wire.Alarm(controller_id="J1", code="LEASE_EXPIRED", active=True, event_ts=2.0, text="silence"),
        wire.Ping(nonce=1, ts=3.0),
        wire.Pong(nonce=1, ts=3.0, mode="fallback"),
        wire.Error(code="MALFORMED", text="x"),
    ]


@pytest.mark.parametrize("msg", _samples(), ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    frames = wire.encode(msg)
    assert frames[0] == wire.PROTOCOL and frames[1] == wire.NAMES[type(msg)]
    assert wire.decode(frames) == msg


def test_plan_hash_is_over_the_canonical_body():
    plan = four_phase("J1", 25, 15, 4)
    body = encode_plan(plan)
    assert wire.plan_digest(body) == wire.plan_digest(encode_plan(msgspec.json.decode(body, type=type(plan))))


@pytest.mark.parametrize("frames, code", [
    ([b"GVCP/1", b"PING"], "BAD_FRAMING"),
    ([b"GVCP/1", b"PING", b"", b""], "BAD_FRAMING"),
    ([b"GVCP/2", b"PING", b"\x80"], "BAD_PROTOCOL"),
    ([b"GVCP/1", b"NOPE", b"\x80"], "UNKNOWN_TYPE"),
    ([b"GVCP/1", b"PING", b"\xc1"], "MALFORMED"),
    ([b"GVCP/1", b"PING", msgspec.msgpack.encode({"nonce": -1, "ts": 0.0})], "INVALID"),
    ([b"GVCP/1", b"PING", msgspec.msgpack.encode({"nonce": 1, "ts": 0.0, "extra": 1})], "INVALID"),
    ([b"GVCP/1", b"PING", b"\x00" * (wire.MAX_BODY_BYTES + 1)], "TOO_LARGE"),
    ([b"GVCP/1", b"ACK", msgspec.msgpack.encode({"msg_id": "m", "ack_of": "m", "controller_id": "J1",
                                                  "ref": {"epoch": 1, "seq": 1, "sha256": "xyz"},
                                                  "status": "accepted", "mode": "central"})], "INVALID"),
    ([b"GVCP/1", b"HELLO", msgspec.msgpack.encode({"controller_id": "bad id!", "boot_id": "b",
                                                    "mode": "central"})], "INVALID"),
])
def test_invalid_messages_are_refused(frames, code):
    with pytest.raises(WireError) as err:
        wire.decode(frames)
    assert err.value.code == code


def test_direction_is_enforced():
    frames = wire.encode(wire.Welcome(epoch=1, heartbeat_s=1.0, server_time=0.0))
    with pytest.raises(WireError) as err:
        wire.decode(frames, wire.TO_ENGINE)
    assert err.value.code == "UNEXPECTED_TYPE"
    assert isinstance(wire.decode(frames, wire.TO_CONTROLLER), wire.Welcome)


def test_encode_refuses_oversized_bodies():
    big = wire.Error(code="X", text="a" * 10)
    assert wire.encode(big)
    with pytest.raises(msgspec.ValidationError):  # the schema bounds the plan size too
        msgspec.msgpack.decode(msgspec.msgpack.encode({"msg_id": "m", "controller_id": "J1",
                                                       "ref": {"epoch": 1, "seq": 1, "sha256": SHA},
                                                       "activation": {}, "lease_s": 1.0,
                                                       "plan": b"x" * (wire.MAX_PLAN_BYTES + 1)}),
                               type=wire.PlanMsg)


frame = st.binary(max_size=300)
kinds = st.sampled_from(sorted(wire.TYPES) + [b"", b"PLANX", b"\xff"])
json_like = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frame, min_size=0, max_size=5))
def test_random_frames_only_raise_wire_error(frames):
    try:
        wire.decode(frames)
    except WireError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kinds, json_like)
def test_structured_garbage_only_raises_wire_error(kind, body):
    try:
        raw = msgspec.msgpack.encode(body)
    except (OverflowError, TypeError):
        return
    try:
        msg = wire.decode([wire.PROTOCOL, kind, raw])
    except WireError:
        return
    assert type(msg) is wire.TYPES[kind]
