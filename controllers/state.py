"""A controller agent's durable state: the last accepted central plan, its status, the mode and the lease.

One JSON file per controller (``state_dir/<id>.state.json``), replaced atomically: write a temporary file, fsync it,
``os.replace`` it over the old one, fsync the directory. A crash at any moment leaves either the old or the new state.
The agent writes it *before* it acknowledges a plan, so an ACCEPTED answer is never forgotten.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Literal

import msgspec

from controllers.wire import Activation, Mode, PlanRef

log = logging.getLogger(__name__)

STATE_SCHEMA = "gronvag.controller-state/1"
HISTORY = 32


class StoredPlan(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ref: PlanRef
    plan: bytes  # canonical JSON (engine.plan.encode_plan); sha256 == ref.sha256
    activation: Activation
    lease_s: float
    msg_id: str


class ControllerState(msgspec.Struct, forbid_unknown_fields=True):
    controller_id: str
    schema: str = STATE_SCHEMA
    #: last accepted central plan; kept in fallback too (it orders what may come next)
    accepted: StoredPlan | None = None
    accepted_status: Literal["", "accepted", "applied"] = ""
    #: central: the accepted plan is in force (pending or running); fallback: the local plan is
    mode: Mode = "fallback"
    lease_expires_unix: float = 0.0
    rejected: PlanRef | None = None
    rejected_reason: str = ""
    applied: tuple[PlanRef, ...] = ()  # most recent first, at most HISTORY
    boots: int = 0


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(ControllerState)


class StateFile:
    def __init__(self, state_dir: str | Path, controller_id: str, *, fsync: bool = True):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{controller_id}.state.json"
        self.controller_id = controller_id
        self.fsync = fsync
        self.writes = 0

    def load(self) -> ControllerState:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return ControllerState(controller_id=self.controller_id)
        try:
            st = _dec.decode(raw)
            if st.schema != STATE_SCHEMA or st.controller_id != self.controller_id:
                raise msgspec.ValidationError(f"state is {st.schema!r} of {st.controller_id!r}")
            return st
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            log.error("%s: unreadable controller state (%s); moved to %s, starting in fallback", self.path, exc,
                      aside.name)
            return ControllerState(controller_id=self.controller_id)

    def save(self, st: ControllerState) -> None:
        data = _enc.encode(st)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        if self.fsync:
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self.writes += 1
