"""Plans' validity periods at the controller: an ended period is rejected, a future one held until it begins."""

from __future__ import annotations

import time

import msgspec

from controllers.agent import validity
from tests.test_controllers_support import Harness, four_phase, wait_for


def _window(plan, a: float, b: float):
    return msgspec.structs.replace(plan, valid_from_s=float(a), valid_to_s=float(b))


def test_validity_in_signal_time_and_in_the_day():
    p = _window(four_phase("c1"), 100, 200)
    assert validity(p, 50) == ("not_yet", 100)
    assert validity(p, 100) == ("valid", 100)
    assert validity(p, 199.5) == ("valid", 199.5)
    assert validity(p, 200) == ("ended", 200)
    day = 86400.0
    assert validity(p, day + 150, day) == ("valid", day + 150)  # a day clock reads the period in today's seconds
    assert validity(p, day + 20, day) == ("not_yet", day + 100)
    assert validity(p, day + 300, day) == ("ended", day + 200)
    assert validity(four_phase("c1"), 5 * day + 7, day)[0] == "valid"  # the default period is the whole day
    night = _window(four_phase("c1"), 82800, 90000)  # 23:00 to 01:00
    assert validity(night, day + 1800, day) == ("valid", day + 1800)
    assert validity(night, day + 3700, day) == ("not_yet", day + 82800)
    assert validity(p, day + 150)[0] == "ended"  # a simulation clock: plain signal time


def test_ended_plan_rejected_future_plan_held_until_its_period(tmp_path):
    with Harness(tmp_path, ("c1",), lease_s=30.0) as h:
        h.start_engine()
        h.start_agents()
        a = h.agents["c1"]
        wait_for(lambda: a.engine_epoch, 5, what="WELCOME")
        t_now = a.cfg.clock()
        (old,) = h.publish(_window(four_phase("c1", 30, 15), 0, 1))
        wait_for(lambda: h.summary("c1")["status"] == "rejected", 5, what="rejection")
        assert "validity period [0, 1) s ended" in h.summary("c1")["reason"]
        start = t_now + 200  # about 4 s of wall time at the harness's 50x signal clock
        (held,) = h.publish(_window(four_phase("c1", 25, 20), start, start + 3600))
        wait_for(lambda: h.summary("c1")["status"] == "accepted", 5, what="acceptance")
        assert a.last_accepted == held and a.runner.pending_key == held and a.running_ref is None
        while a.cfg.clock() < start - 30:
            assert a.running_ref is None and h.applied("c1") == []
            time.sleep(0.05)
        wait_for(lambda: h.summary("c1")["status"] == "applied", 10, what="held plan applied")
        assert h.applied("c1") == [held] and a.applied_log[0][1] >= start
        assert h.summary("c1")["acks"].get((old.epoch, old.seq, "rejected")) == 1


def test_time_of_day_plan_file_served_period_by_period_and_switched_on_the_controllers_clock(tmp_path):
    """`gronvag serve` with a time-of-day plan file, end to end on loopback: the engine's plan source publishes the
    first period's plan, then the second 60 s (signal time) before that period; the controller applies the first
    at once and holds the second until its valid_from_s, then switches at a safe point. Each is applied once."""
    from controllers.agent import DayClock
    from controllers.watch import PlanFileSource
    from engine.plan import PlanSet, encode_planset

    with Harness(tmp_path, ("c1",), lease_s=30.0) as h:
        first = _window(four_phase("c1", 30, 15), 0, 300)
        second = _window(four_phase("c1", 15, 30), 300, 3600)
        f = tmp_path / "tod.json"
        f.write_bytes(encode_planset(PlanSet(plans=(second, first))))
        h.start_engine()
        h.start_agents()
        a = h.agents["c1"]
        clock = DayClock(h.scale, start_s=a.cfg.clock())  # the engine's clock agrees with the controller's
        src = PlanFileSource(f, lead_s=60.0, clock=clock)
        h.engine.call(lambda e: e.timers.append((0.05, src)))
        wait_for(lambda: len(h.applied("c1")) == 1, 10, what="first period applied")
        wait_for(lambda: a.cfg.clock() >= 250, 10, what="the lead time")
        wait_for(lambda: a.runner.pending_key is not None or len(h.applied("c1")) == 2, 5, what="second held")
        assert a.cfg.clock() < 300 or a.applied_log[-1][1] >= 300
        wait_for(lambda: len(h.applied("c1")) == 2, 10, what="second period applied")
        (r1, t1), (r2, t2) = list(a.applied_log)
        assert t2 >= 300 > t1
        assert len({r1, r2}) == 2
        time.sleep(0.5)
        assert len(h.applied("c1")) == 2  # nothing applied twice
