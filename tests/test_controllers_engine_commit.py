"""EngineConfig(commit_thread=True), the engine's COMMIT on a helper thread: plans leave only after their group is
durable, the loop keeps receiving meanwhile, and a failed write sends nothing and is written again with the next
group."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from controllers.engine import Engine, EngineConfig, Peer
from controllers.wire import Activation
from tests.test_controllers_support import Harness, four_phase, wait_for


def test_a_plan_leaves_only_after_its_commit_returned_and_the_loop_goes_on_meanwhile(tmp_path):
    with Harness(tmp_path, ("c1", "c2")) as h:
        eng = h.start_engine(commit_thread=True)
        h.start_agents()
        wait_for(lambda: all(a.engine_epoch for a in h.agents.values()), 5, what="WELCOME")
        gate = threading.Event()
        begin, end = eng.store.begin_write, eng.store.end_write
        groups: list[set[str]] = []
        held: list[int] = []

        def begin_write(group):
            groups.append({r.controller_id for r in group.rows})
            begin(group)

        def slow_end_write():  # the COMMIT, on the committer thread
            if "c1" in groups[-1]:
                held.append(1)
                gate.wait(10)
            end()

        eng.store.begin_write, eng.store.end_write = begin_write, slow_end_write
        (ref,) = h.publish(four_phase("c1", 30, 15))
        wait_for(lambda: held, 5, what="the group with c1's plan being written")
        t0 = time.monotonic()
        assert h.engine.call(lambda e: e.peers["c1"].committed) is False  # the loop answers while the fsync waits
        assert time.monotonic() - t0 < 1.0
        time.sleep(0.5)
        a = h.agents["c1"]
        assert a.last_accepted is None and not a.counts.get("accepted")  # not sent before it is durable
        # meanwhile other plans are staged for the next group; c2's waits for that group (after c1's)
        (ref2,) = h.publish(four_phase("c2", 18, 28))
        time.sleep(0.3)
        assert h.agents["c2"].last_accepted is None
        gate.set()
        wait_for(lambda: a.running_ref == ref, 8, what="c1's plan applied")
        wait_for(lambda: h.agents["c2"].running_ref == ref2, 8, what="c2's plan applied")
        assert a.counts.get("accepted") == 1
        assert eng.store.issued_count("c1") == 1 and eng.store.issued_count("c2") == 1


def test_a_failed_write_sends_nothing_and_goes_again_with_the_next_group(tmp_path):
    with Harness(tmp_path, ("c1",)) as h:
        eng = Engine(EngineConfig(endpoint=h.endpoint, state_dir=tmp_path / "engine-state", keys=h.keys.engine,
                                  allow_dir=h.keys.allow, heartbeat_s=0.2, offline_after_s=2.0, retry_initial_s=0.2,
                                  retry_max_s=1.0, lease_s=1.5, activation=Activation(kind="asap"),
                                  commit_thread=True))
        eng.start()
        try:
            h.start_agents()
            a = h.agents["c1"]
            deadline = time.monotonic() + 5
            while not a.engine_epoch and time.monotonic() < deadline:
                eng.poll_once(0.02)
            begin, end = eng.store.begin_write, eng.store.end_write
            fails: list[int] = []

            def begin_write(group):
                begin(group)
                if group.rows and not fails:
                    fails.append(1)  # this group's COMMIT fails

            def failing_end_write():
                if fails == [1]:
                    fails.append(2)
                    eng.store.db.execute("ROLLBACK")  # as a failed COMMIT leaves it
                    eng.store._db_lock.release()
                    raise sqlite3.OperationalError("disk I/O error (test)")
                end()

            eng.store.begin_write, eng.store.end_write = begin_write, failing_end_write
            (ref,) = eng.publish([four_phase("c1", 30, 15)])
            with pytest.raises(sqlite3.OperationalError):
                for _ in range(200):
                    eng.poll_once(0.02)
            assert not eng.peers["c1"].committed and eng.store.dirty  # put back, nothing sent
            time.sleep(0.3)
            assert a.last_accepted is None
            deadline = time.monotonic() + 8
            while a.running_ref != ref and time.monotonic() < deadline:
                eng.poll_once(0.02)
            assert a.running_ref == ref and a.counts.get("accepted") == 1
            assert eng.store.issued_count("c1") == 1
        finally:
            h.stop_agents()
            eng.close()


def _tables(db: sqlite3.Connection) -> tuple[list, list]:
    return (db.execute("SELECT controller_id, epoch, seq, sha256, status, reason FROM desired ORDER BY 1").fetchall(),
            db.execute("SELECT controller_id, epoch, seq, sha256, status, reason FROM issued ORDER BY 1, 3").fetchall())


def test_a_status_of_a_plan_replaced_in_the_same_group_leaves_the_tables_as_every_update_would(tmp_path):
    """EngineStore.write leaves out the desired-row UPDATE of a status whose plan the same transaction replaces (it
    matches no row): the tables end up as with every statement run (a second store, written with the statements
    unfiltered, gives the same rows)."""
    from controllers.store import DesiredRow, EngineStore

    def row(cid: str, seq: int, sha: str) -> DesiredRow:
        return DesiredRow(cid, 7, seq, sha, b"{}", "asap", 0.0, 30.0, "issued")

    stores = [EngineStore(tmp_path / "filtered"), EngineStore(tmp_path / "full")]
    try:
        for store in stores:
            for cid in ("a", "b", "c"):
                store.stage_desired(row(cid, 1, cid * 64))
            store.commit()
            # one group: a's plan 1 accepted and replaced by plan 2; b's plan 1 accepted (not replaced); c's plan 2
            # staged and a status for that very plan; a status of a plan that never was
            store.stage_status("a", 7, 1, "a" * 64, "accepted")
            store.stage_desired(row("a", 2, "d" * 64))
            store.stage_status("b", 7, 1, "b" * 64, "accepted")
            store.stage_desired(row("c", 2, "e" * 64))
            store.stage_status("c", 7, 2, "e" * 64, "rejected", "no")
            store.stage_status("b", 7, 5, "f" * 64, "applied")
            group = store.take()
            if store is stores[1]:
                store.db.execute("BEGIN IMMEDIATE")
                now = time.time()
                store.db.executemany("INSERT INTO desired VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (controller_id) "
                                     "DO UPDATE SET epoch=excluded.epoch, seq=excluded.seq, sha256=excluded.sha256, "
                                     "plan=excluded.plan, status=excluded.status, reason=excluded.reason",
                                     [v + (now,) for v in group.values])
                store.db.executemany("INSERT OR REPLACE INTO issued VALUES (?,?,?,?,?,?,?)",
                                     [(v[0], v[1], v[2], v[3], now, v[8], v[9]) for v in group.values])
                store.db.executemany("UPDATE desired SET status=?, reason=? WHERE controller_id=? AND sha256=? AND "
                                     "epoch=? AND seq=?", group.statuses)
                store.db.executemany("UPDATE issued SET status=?, reason=? WHERE controller_id=? AND sha256=? AND "
                                     "epoch=? AND seq=?", group.statuses)
                store.db.execute("COMMIT")
            else:
                store.write(group)
        filtered, full = (_tables(s.db) for s in stores)
        assert filtered == full
        assert filtered[0] == [("a", 7, 2, "d" * 64, "issued", ""), ("b", 7, 1, "b" * 64, "accepted", ""),
                               ("c", 7, 2, "e" * 64, "rejected", "no")]
        assert ("a", 7, 1, "a" * 64, "accepted", "") in filtered[1]
    finally:
        for s in stores:
            s.close()


def test_pings_go_to_each_controller_on_its_own_schedule(tmp_path):
    """Not all controllers at once every heartbeat (their PONGs came back as one burst): each is pinged at most
    heartbeat_s after its previous ping, and a timer pass pings only a slice of them."""
    with Harness(tmp_path, ("c1",)) as h:
        eng = Engine(EngineConfig(endpoint=h.endpoint, state_dir=tmp_path / "engine-state", keys=h.keys.engine,
                                  allow_dir=h.keys.allow, heartbeat_s=5.0, offline_after_s=60.0))
        try:
            sent: list[tuple[float, str]] = []
            now = 1000.0
            eng._send = lambda peer, msg: sent.append((now, peer.cid)) or True
            for i in range(400):
                peer = eng.peers.setdefault(f"p{i}", Peer(f"p{i}"))
                peer.online, peer.last_seen = True, now
                peer.next_ping = now + 5.0 * (0.5 + 0.5 * i / 400)  # as on connecting: within the second half
            per_pass = []
            while now < 1030.0:
                n0 = len(sent)
                eng._timers(now)
                per_pass.append(len(sent) - n0)
                now += 0.05
                for peer in eng.peers.values():
                    peer.last_seen = now  # they answer
            assert max(per_pass) <= 20  # 400 controllers, 100 passes per heartbeat: no burst
            times: dict[str, list[float]] = {}
            for t, cid in sent:
                times.setdefault(cid, []).append(t)
            assert len(times) == 400
            for ts in times.values():
                gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
                assert ts[0] <= 1000.0 + 5.0 + 0.05
                assert gaps and max(gaps) <= 5.0 + 0.05 + 1e-9 and min(gaps) >= 4.5 - 1e-9
        finally:
            eng.close()
