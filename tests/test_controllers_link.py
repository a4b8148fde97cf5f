"""Engine <-> controller link on loopback with real CURVE sockets: delivery, idempotence, ordering, safety, security,
silence and recovery."""

from __future__ import annotations

import logging
import time

import zmq

from controllers import wire
from controllers.agent import FALLBACK_KEY, LEASE_ALARM, ControllerAgent
from controllers.wire import Activation, PlanMsg, PlanRef
from engine.plan import Phase, encode_plan, make_plan
from tests.test_controllers_support import Harness, four_phase, wait_for


def _applied_ref(h: Harness, cid: str, ref: PlanRef, timeout: float = 8.0) -> None:
    wait_for(lambda: h.agents[cid].running_ref == ref and h.summary(cid).get("status") == "applied", timeout,
             what=f"{cid} applying {ref.short()}")


def test_plan_delivered_and_applied_exactly_once(tmp_path):
    with Harness(tmp_path, ("c1", "c2")) as h:
        h.start_engine()
        h.start_agents()
        wait_for(lambda: all(a.engine_epoch for a in h.agents.values()), 5, what="WELCOME")
        assert all(a.mode == "fallback" and a.runner.key == FALLBACK_KEY for a in h.agents.values())
        refs = h.publish(four_phase("c1", 30, 15, 5), four_phase("c2", 12, 28, 9))
        assert [r.seq for r in refs] == [1, 1]
        for cid, ref in zip(("c1", "c2"), refs, strict=True):
            _applied_ref(h, cid, ref)
        time.sleep(1.0)  # heartbeats keep flowing; nothing may be applied again
        for cid, ref in zip(("c1", "c2"), refs, strict=True):
            assert h.applied(cid) == [ref]
            s = h.summary(cid)
            assert s["mode"] == "central" and s["acks"].get((ref.epoch, ref.seq, "applied")) == 1
            assert s["acks"].get((ref.epoch, ref.seq, "accepted")) == 1
            state = h.agents[cid].store.load()  # persisted
            assert state.accepted.ref == ref and state.accepted_status == "applied" and state.mode == "central"
        # an unchanged plan set publishes nothing new
        assert h.publish(four_phase("c1", 30, 15, 5)) == []


def test_duplicate_plan_gets_the_stored_answer_and_is_not_reapplied(tmp_path):
    with Harness(tmp_path, ("c1",)) as h:
        h.start_engine()
        h.start_agents()
        (ref,) = h.publish(four_phase("c1", 30, 15))
        _applied_ref(h, "c1", ref)
        before = h.summary("c1")["acks"].get((ref.epoch, ref.seq, "duplicate"), 0)  # a HELLO may race the publish

        def resend(e):
            peer = e.peers["c1"]
            e._send_plan(peer)  # same (epoch, seq, sha256), new msg_id: what a retry looks like
            e._send_plan(peer)

        h.engine.call(resend)
        wait_for(lambda: h.summary("c1")["acks"].get((ref.epoch, ref.seq, "duplicate")) == before + 2, 5,
                 what="duplicates")
        time.sleep(0.3)
        assert h.applied("c1") == [ref]
        assert h.agents["c1"].counts.get("duplicate") == before + 2 and h.agents["c1"].counts.get("accepted") == 1


def test_out_of_order_older_plan_is_superseded_and_never_applied(tmp_path):
    with Harness(tmp_path, ("c1",)) as h:
        h.start_engine()
        h.start_agents()
        wait_for(lambda: h.agents["c1"].engine_epoch, 5, what="WELCOME")
        epoch = h.engine.epoch
        older, newer = four_phase("c1", 25, 20), four_phase("c1", 35, 12)

        def msg(plan, seq):
            body = encode_plan(plan)
            return PlanMsg(msg_id=wire.new_msg_id(), controller_id="c1",
                           ref=PlanRef(epoch=epoch, seq=seq, sha256=wire.plan_digest(body)),
                           activation=Activation(kind="asap"), lease_s=30.0, plan=body)

        m_new, m_old = msg(newer, 6), msg(older, 5)

        def send_reordered(e):  # the network delivers seq 6 before seq 5
            peer = e.peers["c1"]
            e._send(peer, m_new)
            e._send(peer, m_old)

        h.engine.call(send_reordered)
        wait_for(lambda: h.applied("c1") == [m_new.ref], 8, what="newer plan applied")
        acks = h.summary("c1")["acks"]
        assert acks.get((epoch, 5, "superseded")) == 1 and acks.get((epoch, 6, "accepted")) == 1
        assert acks.get((epoch, 5, "accepted")) is None
        assert h.applied("c1") == [m_new.ref]
        # and an older plan arriving after the newer one was applied: superseded again, nothing changes
        h.engine.call(lambda e: e._send(e.peers["c1"], m_old))
        wait_for(lambda: h.summary("c1")["acks"].get((epoch, 5, "superseded")) == 2, 5, what="second superseded")
        assert h.agents["c1"].running_ref == m_new.ref and h.applied("c1") == [m_new.ref]


def test_unsafe_plan_is_rejected_whole_and_the_previous_plan_keeps_running(tmp_path):
    with Harness(tmp_path, ("c1",)) as h:
        h.start_engine()
        h.start_agents()
        (good,) = h.publish(four_phase("c1", 30, 15))
        _applied_ref(h, "c1", good)
        # yellow of 1 s and a 2 s green: both below the spec; and a second plan with conflicting greens together
        short = four_phase("c1", 2, 20, yellow=1)
        (bad,) = h.publish(short)
        wait_for(lambda: h.summary("c1")["status"] == "rejected", 5, what="rejection")
        reason = h.summary("c1")["reason"]
        assert "shorter than its minimum" in reason and "yellow" in reason
        conflicting = make_plan("c1", [Phase("GGGG", 20), Phase("yyyy", 3, kind="yellow"),
                                       Phase("rrrr", 3, kind="allred")])
        (bad2,) = h.publish(conflicting)
        wait_for(lambda: h.summary("c1")["desired"] == bad2 and h.summary("c1")["status"] == "rejected", 5,
                 what="second rejection")
        assert "green together" in h.summary("c1")["reason"]
        time.sleep(0.5)
        a = h.agents["c1"]
        assert a.running_ref == good and a.mode == "central" and h.applied("c1") == [good]
        assert a.last_accepted == good  # rejected plans never become "accepted"
        acks = h.summary("c1")["acks"]
        assert acks.get((bad.epoch, bad.seq, "rejected")) == 1  # no retries after a rejection
        assert engine_count(h, "retries") == 0


def engine_count(h: Harness, key: str) -> int:
    return h.engine.call(lambda e: e.counts.get(key, 0))


def test_silence_falls_back_then_a_fresh_plan_recovers(tmp_path):
    with Harness(tmp_path, ("c1",), lease_s=1.0) as h:
        h.start_engine()
        h.start_agents()
        (ref,) = h.publish(four_phase("c1", 30, 15))
        _applied_ref(h, "c1", ref)
        epoch1 = h.engine.epoch
        a = h.agents["c1"]
        h.stop_engine()  # silence: no PLAN, no PING
        wait_for(lambda: a.mode == "fallback" and LEASE_ALARM in a._alarms, 5, what="lease expiry")
        wait_for(lambda: a.runner.key == FALLBACK_KEY, 8, what="fallback plan running")
        assert a.store.load().mode == "fallback"
        # the engine comes back (new epoch) with the same desired plan: it must send it as a *fresh* plan
        h.start_engine()
        assert h.engine.epoch > epoch1
        wait_for(lambda: a.mode == "central" and a.running_ref is not None and a.running_ref.key() > ref.key(), 10,
                 what="central control restored")
        new = a.running_ref
        assert new.sha256 == ref.sha256 and new.epoch == h.engine.epoch
        wait_for(lambda: len(h.applied("c1")) == 2, 5, what="apply recorded")
        assert LEASE_ALARM not in a._alarms
        assert h.applied("c1") == [ref, new]
        wait_for(lambda: h.summary("c1")["alarms"].get(LEASE_ALARM) is False, 5, what="alarm cleared at engine")


def test_in_fallback_only_a_newer_plan_restores_central_control(tmp_path):
    """Unit-level: after the lease ran out, the same PLAN again is a duplicate and leaves the controller in fallback."""
    with Harness(tmp_path, ("c1",), lease_s=0.3) as h:
        cfg = h.agent_config("c1")
        a = ControllerAgent(cfg, h.agent_ctx)  # not connected: drive it by hand
        sent: list = []
        a._send = lambda msg, keep=False: sent.append(msg) or True
        body = encode_plan(four_phase("c1", 30, 15))
        m = PlanMsg(msg_id="m1", controller_id="c1", ref=PlanRef(epoch=5, seq=1, sha256=wire.plan_digest(body)),
                    activation=Activation(kind="asap"), lease_s=0.3, plan=body)
        a.handle(wire.encode(m))
        assert sent[0].status == "accepted" and a.mode == "central"
        time.sleep(0.4)
        a.tick()
        assert a.mode == "fallback"
        assert any(isinstance(x, wire.Alarm) and x.active for x in sent)
        sent.clear()
        a.handle(wire.encode(m))  # the same plan again
        assert sent[0].status == "duplicate" and a.mode == "fallback"
        m2 = PlanMsg(msg_id="m2", controller_id="c1", ref=PlanRef(epoch=5, seq=2, sha256=m.ref.sha256),
                     activation=m.activation, lease_s=30.0, plan=body)
        sent.clear()
        a.handle(wire.encode(m2))
        assert sent[0].status == "accepted" and a.mode == "central"
        assert any(isinstance(x, wire.Alarm) and not x.active for x in sent)
        a.close()


def _raw_dealer(ctx, endpoint, rid=b"c1", keys=None, server_public=None):
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.routing_id = rid
    if keys is not None:
        s.curve_publickey, s.curve_secretkey = keys.public, keys.secret
        s.curve_serverkey = server_public
    s.connect(endpoint)
    return s


def test_unknown_key_wrong_engine_key_and_plain_client_are_refused(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    with Harness(tmp_path, ("c1", "c2")) as h:
        eng = h.start_engine()
        # a controller whose key is not on the allow-list, one pinned to another engine's key
        intruder = h.agent_config("c1", keys=h.keys.pair("intruder"))
        wrong_engine = h.agent_config("c2", engine_public=h.keys.other_engine.public,
                                      state_dir=tmp_path / "other-state")
        h.start_agents([intruder, wrong_engine])
        plain = _raw_dealer(h.agent_ctx, h.endpoint, rid=b"c1")
        hello = wire.encode(wire.Hello(controller_id="c1", boot_id="x", mode="fallback"))
        try:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                try:
                    plain.send_multipart(hello, flags=zmq.NOBLOCK)
                except zmq.Again:
                    pass
                time.sleep(0.1)
            wait_for(lambda: eng.monitor.count("HANDSHAKE_FAILED_AUTH") >= 1, 5, what="auth failure seen")
            wait_for(lambda: eng.monitor.count("HANDSHAKE_FAILED_PROTOCOL") >= 2, 5, what="protocol failures seen")
            assert engine_count(h, "received") == 0
            assert all(a.engine_epoch is None for a in h.agents.values())
            assert plain.poll(100) == 0
            text = caplog.text
            assert "authentication refused" in text and "protocol error" in text
            assert "refused CURVE key" in text
        finally:
            plain.close(linger=0)


def test_authenticated_key_cannot_speak_for_another_controller(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    with Harness(tmp_path, ("c1", "c2")) as h:
        h.start_engine()
        c2 = h.keys.pair("c2")
        # c2's valid key, but routing id c1
        s = _raw_dealer(h.agent_ctx, h.endpoint, rid=b"c1", keys=c2, server_public=h.keys.engine.public)
        # c2's key and routing id, but the body claims c1
        s2 = _raw_dealer(h.agent_ctx, h.endpoint, rid=b"c2", keys=c2, server_public=h.keys.engine.public)
        try:
            hello1 = wire.encode(wire.Hello(controller_id="c1", boot_id="x", mode="fallback"))
            wait_for(lambda: _try_send(s, hello1) and engine_count(h, "identity_mismatch") >= 1, 5,
                     what="routing id mismatch detected")
            wait_for(lambda: _try_send(s2, hello1) and engine_count(h, "identity_mismatch") >= 2, 5,
                     what="body id mismatch detected")
            assert "identity mismatch" in caplog.text and "claims controller id" in caplog.text
            assert h.summary("c1").get("mode") is None  # nothing was taken from the impostor
            assert s2.poll(2000)
            kinds = [s2.recv_multipart()[1]]
            assert b"ERROR" in kinds
        finally:
            s.close(linger=0)
            s2.close(linger=0)


def _try_send(sock, frames) -> bool:
    try:
        sock.send_multipart(frames, flags=zmq.NOBLOCK)
    except zmq.Again:
        pass
    time.sleep(0.05)
    return True


def test_same_plan_under_a_newer_seq_is_adopted_without_a_switch(tmp_path):
    with Harness(tmp_path, ("c1",)) as h:
        h.start_engine()
        h.start_agents()
        (ref,) = h.publish(four_phase("c1", 30, 15))
        _applied_ref(h, "c1", ref)
        a = h.agents["c1"]
        (again,) = h.publish(four_phase("c1", 30, 15), force=True)
        assert again.sha256 == ref.sha256 and again.seq == ref.seq + 1
        _applied_ref(h, "c1", again)
        assert h.applied("c1") == [ref, again] and a.mode == "central"


def test_removed_key_is_refused_at_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    with Harness(tmp_path, ("c1",)) as h:
        h.start_engine()
        h.start_agents()
        wait_for(lambda: h.agents["c1"].engine_epoch, 5, what="WELCOME")
        (h.keys.allow / "c1.key").unlink()
        assert h.engine.call(lambda e: e.reload_allow_list()) == 0
        wait_for(lambda: engine_count(h, "revoked") >= 1, 5, what="messages of a revoked key dropped")
        assert "no longer on the allow-list" in caplog.text
