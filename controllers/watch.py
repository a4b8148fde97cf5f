"""Files that feed a running engine: the plan set (re-published when it changes) and the allow-list directory.

Both are engine timers (``engine.timers.append((period_s, watcher))``), so they run on the engine's loop thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

from controllers.engine import Engine
from controllers.wire import Activation
from engine.errors import GronvagError
from engine.plan import read_planset

log = logging.getLogger(__name__)


class PlanFileSource:
    """Re-reads a plan-set file when it changes and publishes it (a timer of the engine loop)."""

    def __init__(self, path: str | Path, *, activation: Activation | None = None, lease_s: float | None = None):
        self.path = Path(path)
        self.activation = activation
        self.lease_s = lease_s
        self._stamp: tuple[int, int, int] | None = None

    def __call__(self, engine: Engine) -> None:
        try:
            st = self.path.stat()
        except OSError as exc:
            if self._stamp != (-1, -1, -1):  # once per disappearance, not every second
                log.error("plan file %s: %s; keeping the current plans", self.path, exc.strerror)
                self._stamp = (-1, -1, -1)
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            ps = read_planset(self.path)
        except GronvagError as exc:
            log.error("plan file not loaded, keeping the current plans: %s", exc)
            return
        ids = [p.signal_id for p in ps.plans]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            log.error("plan file %s has several plans for %s; not loaded", self.path, dup)
            return
        refs = engine.publish(ps.plans, activation=self.activation, lease_s=self.lease_s)
        log.info("plan file %s: %d plans, %d new or changed", self.path, len(ps.plans), len(refs))


class AllowListWatcher:
    """Reloads the engine's allow-list when the directory's listing or any key file changes (an engine timer)."""

    def __init__(self, allow_dir: str | Path):
        self.dir = Path(allow_dir)
        self._stamp = self._scan()

    def _scan(self) -> tuple:
        try:
            return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in self.dir.glob("*.key")))
        except OSError:
            return ()

    def __call__(self, engine: Engine) -> None:
        stamp = self._scan()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                n = engine.reload_allow_list()
            except GronvagError as exc:
                log.error("allow-list not reloaded: %s", exc)
                return
            log.info("allow-list reloaded: %d controllers", n)
