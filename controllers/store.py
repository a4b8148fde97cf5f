"""The engine's durable state: epoch, the desired plan per controller and the log of issued plans (SQLite, WAL).

Everything the engine sends as a PLAN is committed here first (``synchronous=FULL``: the WAL is fsynced on commit),
so after a crash the engine knows exactly which (epoch, seq, sha256) it may have sent. Writes are grouped: the engine
commits once per loop iteration, then sends. One engine per state directory, enforced with an exclusive lock file.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
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


class EngineStore:
    """SQLite store in ``state_dir/engine.sqlite``; not thread-safe: used by the engine loop thread only."""

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
        self.epoch = 0

    def close(self) -> None:
        try:
            self.db.close()
        finally:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str, default: str | None = None) -> str | None:
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
        now = time.time()
        rows = list(self._pending_desired.values())
        statuses = self._pending_status
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT OR REPLACE INTO desired VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(r.controller_id, r.epoch, r.seq, r.sha256, r.plan, r.act_kind, r.act_at, r.lease_s, r.status,
                  r.reason, now) for r in rows])
            self.db.executemany(
                "INSERT OR REPLACE INTO issued VALUES (?,?,?,?,?,?,?)",
                [(r.controller_id, r.epoch, r.seq, r.sha256, now, r.status, r.reason) for r in rows])
            self.db.executemany(
                "UPDATE desired SET status=?, reason=?, updated=" + repr(now) +
                " WHERE controller_id=? AND sha256=? AND epoch=? AND seq=?", statuses)
            self.db.executemany(
                "UPDATE issued SET status=?, reason=? WHERE controller_id=? AND sha256=? AND epoch=? AND seq=?",
                statuses)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self._pending_desired.clear()
        self._pending_status = []
        return len(rows)

    def issued_count(self, controller_id: str | None = None) -> int:
        if controller_id is None:
            return self.db.execute("SELECT COUNT(*) FROM issued").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM issued WHERE controller_id=?", (controller_id,)).fetchone()[0]
