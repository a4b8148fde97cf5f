"""The engine's durable state: epoch, the desired plan per controller and the log of issued plans (SQLite, WAL).

Everything the engine sends as a PLAN is committed here first (``synchronous=FULL``: the WAL is fsynced on commit),
so after a crash the engine knows exactly which (epoch, seq, sha256) it may have sent. Writes are grouped: the engine
takes what its loop staged (:meth:`EngineStore.take`), writes it in one transaction (:meth:`EngineStore.write`, which
may run on another thread while the loop goes on) and sends those plans only once that returned. One engine per state
directory, enforced with an exclusive lock file.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import GronvagError

ISSUED_KEPT = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS desired (
    controller_id TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL, seq INTEGER NOT NULL, sha256 TEXT NOT NULL, plan BLOB NOT NULL,
    act_kind TEXT NOT NULL, act_at REAL NOT NULL, lease_s REAL NOT NULL,
    status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS issued (
    controller_id TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL, sha256 TEXT NOT NULL,
    created REAL NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (controller_id, seq)
);
"""


# an upsert rewrites a controller's row in place; INSERT OR REPLACE deleted it and inserted it anew (new rowid, index
# entry removed and added), which dirtied more pages per commit
_DESIRED_COLUMNS = ("controller_id", "epoch", "seq", "sha256", "plan", "act_kind", "act_at", "lease_s", "status",
                    "reason", "updated")
_UPSERT_DESIRED = (f"INSERT INTO desired ({', '.join(_DESIRED_COLUMNS)}) VALUES ({', '.join('?' * 11)}) "
                   "ON CONFLICT (controller_id) DO UPDATE SET " +
                   ", ".join(f"{c} = excluded.{c}" for c in _DESIRED_COLUMNS[1:]))


@dataclass
class DesiredRow:
    controller_id: str
    epoch: int
    seq: int
    sha256: str
    plan: bytes
    act_kind: str
    act_at: float
    lease_s: float
    status: str  # issued | accepted | applied | rejected
    reason: str = ""


@dataclass
class StagedGroup:
    """What :meth:`EngineStore.take` took: the desired rows (the engine's live objects), their values as taken, and
    the status updates (status, reason, controller_id, sha256, epoch, seq)."""

    rows: list[DesiredRow]
    values: list[tuple]
    statuses: list[tuple[str, str, str, str, int, int]]


class EngineStore:
    """SQLite store in ``state_dir/engine.sqlite``. Staging is for the engine loop thread only; :meth:`write` may run on
    one other thread (a lock keeps every use of the connection apart)."""

    def __init__(self, state_dir: str | Path):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.dir / "engine.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise GronvagError("another engine is running with this state directory", self.dir) from None
        self.db = sqlite3.connect(self.dir / "engine.sqlite", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # checkpoints (copying the WAL back into the database, in the committing thread) every ~40 MB rather than
        # every 4 MB: rows are rewritten often, so a rarer checkpoint copies each page once for many commits
        self.db.execute("PRAGMA wal_autocheckpoint=10000")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        # the log of issued plans keeps the latest ISSUED_KEPT per controller
        self.db.execute("DELETE FROM issued WHERE seq <= (SELECT MAX(i.seq) FROM issued i WHERE "
                        "i.controller_id = issued.controller_id) - ?", (ISSUED_KEPT,))
        self._pending_desired: dict[str, DesiredRow] = {}
        self._pending_status: list[tuple[str, str, str, str, int, int]] = []
        self._db_lock = threading.Lock()
        self.epoch = 0

    def close(self) -> None:
        try:
            with self._db_lock:
                self.db.close()
        finally:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._db_lock:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def begin_epoch(self, meta: dict[str, str] | None = None) -> int:
        """Start a new engine epoch: strictly greater than every earlier one and not below the Unix time in seconds,
        so that even a lost store gives an epoch newer than any a controller has seen (with a sane clock)."""
        prev = int(self.get_meta("epoch", "0") or 0)
        self.epoch = max(prev + 1, int(time.time()))
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (str(self.epoch),))
            for k, v in (meta or {}).items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return self.epoch

    # ------------------------------------------------------------------ desired plans
    def load_desired(self) -> dict[str, DesiredRow]:
        rows = self.db.execute("SELECT controller_id, epoch, seq, sha256, plan, act_kind, act_at, lease_s, status, "
                               "reason FROM desired").fetchall()
        return {r[0]: DesiredRow(*r) for r in rows}

    def last_seqs(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT controller_id, MAX(seq) FROM issued GROUP BY controller_id").fetchall())

    def stage_desired(self, row: DesiredRow) -> None:
        """Queue a new desired plan; durable after :meth:`commit`."""
        self._pending_desired[row.controller_id] = row

    def stage_status(self, controller_id: str, epoch: int, seq: int, sha256: str, status: str,
                     reason: str = "") -> None:
        self._pending_status.append((status, reason[:2000], controller_id, sha256, epoch, seq))

    @property
    def dirty(self) -> bool:
        return bool(self._pending_desired or self._pending_status)

    def commit(self) -> int:
        """Write everything staged in one transaction (fsynced). Returns the number of new desired plans."""
        if not self.dirty:
            return 0
        group = self.take()
        try:
            self.write(group)
        except BaseException:
            self.restage(group)
            raise
        return len(group.rows)

    def take(self) -> StagedGroup:
        """Everything staged so far, as one group for :meth:`write` (the rows' values as they are now); staging starts
        afresh."""
        rows = list(self._pending_desired.values())
        group = StagedGroup(rows, [(r.controller_id, r.epoch, r.seq, r.sha256, r.plan, r.act_kind, r.act_at, r.lease_s,
                                    r.status, r.reason) for r in rows], self._pending_status)
        self._pending_desired = {}
        self._pending_status = []
        return group

    def restage(self, group: StagedGroup) -> None:
        """Put back a group whose write failed (rows staged since then are newer and win)."""
        for r in group.rows:
            self._pending_desired.setdefault(r.controller_id, r)
        self._pending_status = group.statuses + self._pending_status

    def write(self, group: StagedGroup) -> None:
        """One transaction (fsynced on commit) with a group from :meth:`take`; on any error it is rolled back and the
        error raised."""
        self.begin_write(group)
        self.end_write()

    def begin_write(self, group: StagedGroup) -> None:
        """The first part of :meth:`write`: the statements of the transaction, not yet committed. :meth:`end_write`
        (the commit, i.e. the fsync) must follow and may run on another thread; until it returned the store is not
        used otherwise (a lock, held from here to there, makes sure of it)."""
        self._db_lock.acquire()
        try:
            now = time.time()
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(_UPSERT_DESIRED, [v + (now,) for v in group.values])
            self.db.executemany("INSERT OR REPLACE INTO issued VALUES (?,?,?,?,?,?,?)",
                                [(v[0], v[1], v[2], v[3], now, v[8], v[9]) for v in group.values])
            # a status of a plan whose controller's desired row this transaction has just replaced by a newer plan
            # matches no desired row: that UPDATE is left out (at a high rate the ACK of one plan and the next plan
            # of the same controller often share a group)
            replaced = {v[0]: (v[3], v[1], v[2]) for v in group.values}
            self.db.executemany(
                "UPDATE desired SET status=?, reason=?, updated=" + repr(now) +
                " WHERE controller_id=? AND sha256=? AND epoch=? AND seq=?",
                [u for u in group.statuses if replaced.get(u[2], u[3:]) == u[3:]] if replaced else group.statuses)
            self.db.executemany(
                "UPDATE issued SET status=?, reason=? WHERE controller_id=? AND sha256=? AND epoch=? AND seq=?",
                group.statuses)
        except BaseException:
            try:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
            finally:
                self._db_lock.release()
            raise

    def end_write(self) -> None:
        """Commit the transaction :meth:`begin_write` opened (rolled back and the error raised if that fails)."""
        try:
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        finally:
            self._db_lock.release()

    def issued_count(self, controller_id: str | None = None) -> int:
        with self._db_lock:
            if controller_id is None:
                return self.db.execute("SELECT COUNT(*) FROM issued").fetchone()[0]
            return self.db.execute("SELECT COUNT(*) FROM issued WHERE controller_id=?",
                                   (controller_id,)).fetchone()[0]
