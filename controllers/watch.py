"""Files that feed a running engine: the plan set (re-published when it changes) and the allow-list directory.

Both are engine timers (``engine.timers.append((period_s, watcher))``), so they run on the engine's loop thread.

Time-of-day plan sets (``gronvag optimise --periods``: several plans per signal with validity periods that do not
overlap, in seconds of the day) are served period by period: for each signal the engine publishes the plan of the
period under way, and the next period's plan ``lead_s`` before that period begins. The controller holds a plan
whose period has not begun and switches to it at the first safe point from its ``valid_from_s`` on (controllers.agent),
so the switch happens on the controller's clock, not when the message arrives. Before a signal's first period of
the day its first plan is published (and held); after the last, the last plan stays.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from controllers.engine import Engine
from controllers.wire import Activation
from engine.errors import GronvagError
from engine.plan import SignalPlan, read_planset

log = logging.getLogger(__name__)


DAY_S = 86400.0


def periods_by_signal(plans) -> dict[str, list[SignalPlan]]:
    """Each signal's plans in order of their validity periods; a GronvagError names the first signal whose plans'
    periods overlap (two plans cannot both be the one to run)."""
    out: dict[str, list[SignalPlan]] = {}
    for p in plans:
        out.setdefault(p.signal_id, []).append(p)
    for sid, ps in out.items():
        ps.sort(key=lambda p: p.valid_from_s)
        for a, b in zip(ps, ps[1:], strict=False):
            if b.valid_from_s < a.valid_to_s:
                raise GronvagError(f"signal {sid!r}: plans valid [{a.valid_from_s:g}, {a.valid_to_s:g}) and "
                                   f"[{b.valid_from_s:g}, {b.valid_to_s:g}) s overlap")
    return out


def plan_due(plans: list[SignalPlan], now_s: float, lead_s: float) -> SignalPlan:
    """The plan to publish at ``now_s`` (seconds of the day) from one signal's plans in period order: the last one
    whose period begins within ``lead_s`` from now or has begun; before the first period, the first."""
    t = now_s % DAY_S
    due = plans[0]
    for p in plans:
        if p.valid_from_s - lead_s <= t:
            due = p
    return due


class PlanFileSource:
    """Re-reads a plan-set file when it changes and publishes it (a timer of the engine loop); a time-of-day plan
    set is published period by period (module docstring). ``clock``: seconds of the day (default: UTC wall clock)."""

    def __init__(self, path: str | Path, *, activation: Activation | None = None, lease_s: float | None = None,
                 lead_s: float = 60.0, clock=None):
        self.path = Path(path)
        self.activation = activation
        self.lease_s = lease_s
        self.lead_s = float(lead_s)
        self.clock = clock or (lambda: time.time() % DAY_S)
        self._stamp: tuple[int, int, int] | None = None
        self._periods: dict[str, list[SignalPlan]] = {}
        self._due: dict[str, SignalPlan] = {}

    def __call__(self, engine: Engine) -> None:
        self._reload(engine)
        if any(len(ps) > 1 for ps in self._periods.values()):
            self._publish_due(engine)

    def _publish_due(self, engine: Engine) -> None:
        now = self.clock()
        due = {sid: plan_due(ps, now, self.lead_s) for sid, ps in self._periods.items()}
        changed = [p for sid, p in due.items() if self._due.get(sid) is not p]
        if not changed:
            return
        self._due = due
        refs = engine.publish(changed, activation=self.activation, lease_s=self.lease_s)
        log.info("time of day %.0f s: %d signals get their plan of the period (valid from %s s), %d new",
                 now % DAY_S, len(changed), sorted({f"{p.valid_from_s:g}" for p in changed}), len(refs))

    def _reload(self, engine: Engine) -> None:
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
        try:
            periods = periods_by_signal(ps.plans)
        except GronvagError as exc:
            log.error("plan file %s not loaded, keeping the current plans: %s", self.path, exc)
            return
        self._periods, self._due = periods, {}
        if any(len(v) > 1 for v in periods.values()):
            log.info("plan file %s: time-of-day plans for %d signals (%d plans)", self.path, len(periods),
                     len(ps.plans))
            return  # published by period in __call__
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
