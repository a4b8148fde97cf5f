"""A controller agent's durable state: the last accepted central plan, its status, the mode and the lease.

States live in SQLite (WAL, ``synchronous=FULL``): one row per controller, replaced in a transaction, so a crash at any
moment leaves either the old or the new state. A standalone agent has its own database
(``state_dir/<id>.state.sqlite``) and commits on every save. Agents run by :class:`controllers.agent.AgentHost` (one
process serving one or several controllers, e.g. a gateway) share one database and *group-commit*: the host commits
once per loop iteration and only then sends the acknowledgements produced in it. Either way a state is durable before
any message that depends on it (ACK accepted/applied) leaves the process.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Literal

import msgspec

from controllers.wire import Activation, Mode, PlanRef

log = logging.getLogger(__name__)

STATE_SCHEMA = "gronvag.controller-state/1"


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
    #: the last applied plans, written by earlier versions (up to 32 on every save, ~3.5 kB); still read so such a
    #: state loads, no longer written: nothing reads it, and encoding and writing it cost CPU on every plan
    applied: tuple[PlanRef, ...] = ()
    boots: int = 0


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(ControllerState)


class StateDB:
    """One SQLite file holding the states of one or more controllers."""

    def __init__(self, path: str | Path, *, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.commits = 0
        self._staged: dict[str, bytes] = {}
        self._writing: dict[str, bytes] = {}  # taken by begin_commit, durable once end_commit returned
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # held from begin_commit to end_commit (which may run on another thread)

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = self._connect()
            except sqlite3.DatabaseError as exc:
                self._set_aside(exc)
                self._db = self._connect()
        return self._db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # checkpoints (copying the WAL back into the database, in the committing thread) every ~40 MB rather than
            # every 4 MB: rows are rewritten often, so a rarer checkpoint copies each page once for many commits
            db.execute("PRAGMA wal_autocheckpoint=10000")
            db.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'OFF'}")
            db.execute("CREATE TABLE IF NOT EXISTS state (controller_id TEXT PRIMARY KEY, data BLOB NOT NULL)")
            db.execute("SELECT COUNT(*) FROM state").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _set_aside(self, why: object) -> None:
        stamp = int(time.time())
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                os.replace(p, p.with_name(f"{p.name}.corrupt-{stamp}"))
        log.error("%s: unreadable controller state database (%s); set aside, starting afresh", self.path, why)

    def get(self, controller_id: str) -> bytes | None:
        if controller_id in self._staged:
            return self._staged[controller_id]
        if controller_id in self._writing:
            return self._writing[controller_id]
        with self._lock:
            row = self._open().execute("SELECT data FROM state WHERE controller_id = ?",
                                       (controller_id,)).fetchone()
        return row[0] if row else None

    def put(self, controller_id: str, data: bytes) -> None:
        """Stage a state; durable after :meth:`commit`."""
        self._staged[controller_id] = data

    @property
    def dirty(self) -> bool:
        """States staged and not yet taken by a commit."""
        return bool(self._staged)

    def commit(self) -> None:
        if not self._staged:
            return
        self.begin_commit()
        try:
            self.end_commit()
        except BaseException:
            self.restage()
            raise

    def begin_commit(self) -> None:
        """The first part of :meth:`commit`: take the staged states and write them in a transaction, not yet committed.
        :meth:`end_commit` (the COMMIT, i.e. the fsync) must follow; it may run on another thread, and until it has
        returned no other commit begins (a lock is held from here to there). States staged meanwhile form the next
        group. On an error the states are staged again and the error raised."""
        self._lock.acquire()
        try:
            db = self._open()
            rows, self._writing, self._staged = list(self._staged.items()), self._staged, {}
            db.execute("BEGIN IMMEDIATE")
            # an upsert rewrites the row in place; INSERT OR REPLACE deleted it and inserted it anew (new rowid, index
            # entry removed and added), which dirtied more pages per commit
            db.executemany("INSERT INTO state (controller_id, data) VALUES (?, ?) "
                           "ON CONFLICT (controller_id) DO UPDATE SET data = excluded.data", rows)
        except BaseException:
            try:
                self._rollback()
                self.restage()
            finally:
                self._lock.release()
            raise

    def end_commit(self) -> None:
        """COMMIT the transaction of :meth:`begin_commit`: its states are durable when this returns. On an error it is
        rolled back and the error raised; the caller then calls :meth:`restage` (on the staging thread)."""
        try:
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        else:
            self._writing = {}
            self.commits += 1
        finally:
            self._lock.release()

    def restage(self) -> None:
        """Stage again the states of a commit that failed (under any newer states of the same controllers)."""
        writing, self._writing = self._writing, {}
        for cid, data in writing.items():
            self._staged.setdefault(cid, data)

    def _rollback(self) -> None:
        if self._db is not None and self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        if self._db is not None:
            try:
                self.commit()
            finally:
                self._db.close()
                self._db = None


class StateFile:
    """One controller's state in a :class:`StateDB`: its own (committing on every save) or a shared one."""

    def __init__(self, state_dir: str | Path, controller_id: str, *, fsync: bool = True, db: StateDB | None = None):
        self.controller_id = controller_id
        self.grouped = db is not None
        self.db = db if db is not None else StateDB(Path(state_dir) / f"{controller_id}.state.sqlite", fsync=fsync)
        self.writes = 0

    def load(self) -> ControllerState:
        raw = self.db.get(self.controller_id)
        if raw is None:
            return ControllerState(controller_id=self.controller_id)
        try:
            st = _dec.decode(raw)
            if st.schema != STATE_SCHEMA or st.controller_id != self.controller_id:
                raise msgspec.ValidationError(f"state is {st.schema!r} of {st.controller_id!r}")
            return st
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            log.error("%s: unreadable state of %s (%s); starting in fallback", self.db.path, self.controller_id, exc)
            return ControllerState(controller_id=self.controller_id)

    def save(self, st: ControllerState) -> None:
        """Replace the stored state: committed now (own database) or with the host's next group commit."""
        self.db.put(self.controller_id, _enc.encode(st))
        self.writes += 1
        if not self.grouped:
            self.db.commit()

    def close(self) -> None:
        if not self.grouped:
            self.db.close()
