"""GVCP/1, the Grönvåg controller protocol: the one module that knows the bytes on the wire.

Every ZeroMQ message is three frames (the engine's ROUTER sees the peer's routing id in front of them)::

    [b"GVCP/1"] [message type, e.g. b"PLAN"] [body: msgpack map, decoded into the type's msgspec Struct]

Bodies are typed and validated on decode (field types, ranges, string patterns, unknown fields refused); nothing is
ever unpickled. A plan travels as its canonical JSON bytes (:func:`engine.plan.encode_plan`) inside the PLAN body, and
``sha256`` is the hex digest of exactly those bytes, so both ends hash the same thing.

:func:`decode` raises :class:`WireError` for anything that is not a well-formed message; callers log it and either drop
the message or answer with an ERROR. Frame and body sizes are bounded here and by the sockets' ``MAXMSGSIZE``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

PROTOCOL = b"GVCP/1"
MAX_BODY_BYTES = 64 * 1024  # one plan is a few kB; generous but bounded
MAX_PLAN_BYTES = 60 * 1024
MAX_FRAME_BYTES = MAX_BODY_BYTES + 1024  # socket MAXMSGSIZE: a larger frame makes libzmq drop the connection
MAX_TEXT = 4000

ControllerId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
MsgId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Epoch = Annotated[int, Meta(ge=1, le=2**63 - 1)]
Seq = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Seconds = Annotated[float, Meta(ge=0.0, le=1e10)]
LeaseSeconds = Annotated[float, Meta(ge=0.05, le=7 * 86400.0)]
Text = Annotated[str, Meta(max_length=MAX_TEXT)]
Code = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Z][A-Z0-9_]*$")]
Mode = Literal["central", "fallback"]
AckStatus = Literal["accepted", "applied", "rejected", "duplicate", "superseded"]


class WireError(ValueError):
    """A message that is not valid GVCP/1. ``code`` is a short machine-readable reason (sent back in ERROR)."""

    def __init__(self, code: str, text: str):
        self.code = code
        self.text = text[:MAX_TEXT]
        super().__init__(f"{code}: {self.text}")


class _Body(Struct, frozen=True, forbid_unknown_fields=True):
    pass


class PlanRef(_Body):
    """Identity of one issued plan: ordered by (epoch, seq); sha256 of its canonical JSON body."""

    epoch: Epoch
    seq: Seq
    sha256: Sha256Hex

    def key(self) -> tuple[int, int]:
        return (self.epoch, self.seq)

    def short(self) -> str:
        return f"{self.epoch}/{self.seq}/{self.sha256[:12]}"


class Activation(_Body):
    """When the controller may switch: ``asap``, ``next_cycle`` (of the running plan) or ``at`` ``at_s`` (signal time,
    i.e. day or simulation seconds). The switch itself always happens at a safe transition point at or after that."""

    kind: Literal["asap", "next_cycle", "at"] = "next_cycle"
    at_s: Annotated[float, Meta(ge=0.0, le=1e10)] = 0.0


class Hello(_Body):
    controller_id: ControllerId
    boot_id: MsgId
    mode: Mode
    signal_id: Annotated[str, Meta(max_length=128)] = ""
    last_accepted: PlanRef | None = None
    running: PlanRef | None = None


class Welcome(_Body):
    epoch: Epoch
    heartbeat_s: Annotated[float, Meta(gt=0.0, le=3600.0)]
    server_time: Seconds


class PlanMsg(_Body):
    msg_id: MsgId
    controller_id: ControllerId
    ref: PlanRef
    activation: Activation
    lease_s: LeaseSeconds
    plan: Annotated[bytes, Meta(min_length=2, max_length=MAX_PLAN_BYTES)]


class Ack(_Body):
    msg_id: MsgId
    ack_of: MsgId
    controller_id: ControllerId
    ref: PlanRef
    status: AckStatus
    mode: Mode
    reason: Text = ""
    last_accepted: PlanRef | None = None
    running: PlanRef | None = None
    at_s: Annotated[float, Meta(ge=0.0, le=1e10)] = 0.0


class Status(_Body):
    controller_id: ControllerId
    mode: Mode
    running: PlanRef | None = None
    pending: PlanRef | None = None
    last_accepted: PlanRef | None = None
    phase_index: Annotated[int, Meta(ge=0, le=10_000)] = 0
    state: Annotated[str, Meta(max_length=512)] = ""
    program_s: Annotated[int, Meta(ge=0, le=10**9)] = 0
    lease_remaining_s: Annotated[float, Meta(ge=0.0, le=1e10)] = 0.0
    alarms: Annotated[tuple[Code, ...], Meta(max_length=32)] = ()


class Alarm(_Body):
    controller_id: ControllerId
    code: Code
    active: bool
    event_ts: Seconds
    text: Text = ""


class Ping(_Body):
    nonce: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    ts: Seconds


class Pong(_Body):
    nonce: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    ts: Seconds
    mode: Mode | None = None
    last_accepted: PlanRef | None = None
    running: PlanRef | None = None


class Error(_Body):
    code: Code
    text: Text = ""


Message = Hello | Welcome | PlanMsg | Ack | Status | Alarm | Ping | Pong | Error

TYPES: dict[bytes, type[Struct]] = {
    b"HELLO": Hello,
    b"WELCOME": Welcome,
    b"PLAN": PlanMsg,
    b"ACK": Ack,
    b"STATUS": Status,
    b"ALARM": Alarm,
    b"PING": Ping,
    b"PONG": Pong,
    b"ERROR": Error,
}
NAMES: dict[type[Struct], bytes] = {cls: name for name, cls in TYPES.items()}
#: what each side may receive
TO_ENGINE = frozenset({b"HELLO", b"ACK", b"STATUS", b"ALARM", b"PING", b"PONG", b"ERROR"})
TO_CONTROLLER = frozenset({b"WELCOME", b"PLAN", b"PING", b"PONG", b"ERROR"})

_encoder = msgspec.msgpack.Encoder()
_decoders = {name: msgspec.msgpack.Decoder(cls) for name, cls in TYPES.items()}


def encode(msg: Message) -> list[bytes]:
    """Frames [protocol, type, body] of one message (the ROUTER adds the routing id in front)."""
    body = _encoder.encode(msg)
    if len(body) > MAX_BODY_BYTES:
        raise WireError("TOO_LARGE", f"{NAMES[type(msg)].decode()} body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    return [PROTOCOL, NAMES[type(msg)], body]


def decode(frames: list[bytes], allowed: frozenset[bytes] | None = None) -> Message:
    """Validate and decode the three frames of one message; raise :class:`WireError` for anything else."""
    if len(frames) != 3:
        raise WireError("BAD_FRAMING", f"expected 3 frames, got {len(frames)}")
    proto, kind, body = frames
    if proto != PROTOCOL:
        raise WireError("BAD_PROTOCOL", f"unsupported protocol {bytes(proto[:32])!r}, expected {PROTOCOL!r}")
    decoder = _decoders.get(kind)
    if decoder is None:
        raise WireError("UNKNOWN_TYPE", f"unknown message type {bytes(kind[:32])!r}")
    if allowed is not None and kind not in allowed:
        raise WireError("UNEXPECTED_TYPE", f"message type {kind.decode()} is not accepted in this direction")
    if len(body) > MAX_BODY_BYTES:
        raise WireError("TOO_LARGE", f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise WireError("INVALID", f"{kind.decode()}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise WireError("MALFORMED", f"{kind.decode()}: {exc}") from None


def plan_digest(plan_bytes: bytes) -> str:
    """Hex sha256 of a plan's canonical JSON bytes."""
    return hashlib.sha256(plan_bytes).hexdigest()


_ID_PREFIX = os.urandom(8).hex()  # random per process: ids never repeat across restarts (2**-64 aside)
_id_counter = itertools.count(1)


def _new_id_prefix() -> None:
    global _ID_PREFIX, _id_counter
    _ID_PREFIX, _id_counter = os.urandom(8).hex(), itertools.count(1)


os.register_at_fork(after_in_child=_new_id_prefix)  # a forked process must not repeat its parent's ids


def new_msg_id() -> str:
    """A fresh message id (new for every message, resends included): this process's random prefix and a counter."""
    return f"{_ID_PREFIX}.{next(_id_counter)}"


def ref_or_none(ref: PlanRef | None) -> str:
    return ref.short() if ref is not None else "-"
