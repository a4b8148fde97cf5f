"""Crashes: the engine killed with SIGKILL and restarted; a controller killed and restarted (resume or fall back)."""

from __future__ import annotations

import os
import time

import pytest

from controllers import store as store_mod
from controllers import wire
from controllers.agent import ControllerAgent
from controllers.store import DesiredRow, EngineStore
from controllers.wire import Activation, PlanMsg, PlanRef
from engine.errors import GronvagError
from engine.plan import PlanSet, encode_plan, encode_planset
from tests.test_controllers_support import Harness, Proc, four_phase, wait_for


def _write_plans(path, *plans) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode_planset(PlanSet(plans=tuple(plans), scenario="test")))
    os.replace(tmp, path)


def _sha(plan) -> str:
    return wire.plan_digest(encode_plan(plan))


def test_engine_sigkill_and_restart_converges_without_double_apply(tmp_path):
    ids = ("c1", "c2")
    plans_a = [four_phase("c1", 30, 15, 3), four_phase("c2", 14, 26, 8)]
    plans_b = [four_phase("c1", 18, 30, 6), four_phase("c2", 26, 14, 1)]
    plan_file = tmp_path / "plans.json"
    _write_plans(plan_file, *plans_a)
    with Harness(tmp_path, ids) as h:
        args = ["serve", "corridor", "--plan", str(plan_file), "--keys", str(h.keys.dir), "--allow", str(h.keys.allow),
                "--bind", h.endpoint, "--state-dir", str(tmp_path / "engine-state"), "--heartbeat", "0.2",
                "--lease", "5", "--retry", "0.2", "--activate", "asap"]
        procs: list[Proc] = []
        try:
            procs.append(Proc(args, tmp_path / "engine1.log"))
            agents = h.start_agents()

            def running(cid):
                ref = agents[cid].running_ref
                return ref.sha256 if ref else None

            wait_for(lambda: [running(c) for c in ids] == [_sha(p) for p in plans_a], 15, what="plans A applied")
            # the engine has the controllers' ACKs (it logs each on receipt and stores it at the end of that loop
            # iteration): killed before that, it would rightly send the unacknowledged plan again after restart
            wait_for(lambda: all(f"{c}: plan " in procs[0].log() and procs[0].log().count(" applied") >= len(ids)
                                 for c in ids), 15, what="the engine's record of both ACKs")
            time.sleep(0.2)
            epoch1 = agents["c1"].engine_epoch
            procs[0].kill9()

            # restart with the same plan file: controllers report what they have, nothing is sent again
            procs.append(Proc(args, tmp_path / "engine2.log"))
            wait_for(lambda: all((a.engine_epoch or 0) > epoch1 for a in agents.values()), 15, what="epoch 2")
            epoch2 = agents["c1"].engine_epoch
            time.sleep(0.5)
            for a in agents.values():
                assert a.counts.get("accepted") == 1 and a.counts.get("duplicate", 0) == 0
                assert len(a.applied_log) == 1

            # a new plan file; kill the engine as soon as the first controller has accepted its new plan
            _write_plans(plan_file, *plans_b)
            wait_for(lambda: any(a.last_accepted and a.last_accepted.sha256 in {_sha(p) for p in plans_b}
                                 for a in agents.values()), 15, what="a plan B accepted")
            procs[1].kill9()
            procs.append(Proc(args, tmp_path / "engine3.log"))
            wait_for(lambda: all((a.engine_epoch or 0) > epoch2 for a in agents.values()), 15, what="epoch 3")
            wait_for(lambda: [running(c) for c in ids] == [_sha(p) for p in plans_b], 20, what="plans B applied")
            wait_for(lambda: all(len(a.applied_log) == 2 for a in agents.values()), 5, what="applies recorded")
            epoch3 = agents["c1"].engine_epoch
            assert epoch1 < epoch2 < epoch3
            time.sleep(0.5)
            for cid, a in agents.items():
                refs = [ref for ref, _ in a.applied_log]
                assert len(refs) == len(set(refs)) == 2, (cid, refs)  # A once, B once
                assert [r.sha256 for r in refs] == [_sha(plans_a[ids.index(cid)]), _sha(plans_b[ids.index(cid)])]
                assert a.counts.get("accepted") == 2, (cid, a.counts)
            log3 = procs[2].log()
            assert "engine epoch" in log3 and "corridor" in log3
        finally:
            for p in procs:
                p.stop()


def test_controller_sigkill_resumes_its_plan_or_falls_back_after_the_lease(tmp_path):
    with Harness(tmp_path, ("c1",), lease_s=5.0) as h:
        eng = h.start_engine()
        fallback = tmp_path / "fallback.json"
        _write_plans(fallback, four_phase("c1", 20, 20))
        args = ["controller", "--id", "c1", "--keys", str(h.keys.dir), "--connect", h.endpoint, "--state-dir",
                str(tmp_path / "ctl"), "--fallback", str(fallback), "--time-scale", "50", "--hello-after", "0.5",
                "--status-interval", "1"]
        procs: list[Proc] = []
        try:
            procs.append(Proc(args, tmp_path / "ctl1.log"))
            wait_for(lambda: h.summary("c1").get("online"), 15, what="controller online")
            (ref,) = h.publish(four_phase("c1", 30, 15))
            wait_for(lambda: h.summary("c1").get("status") == "applied", 15, what="applied")
            assert "applied plan " + ref.short() in procs[0].log()
            procs[0].kill9()

            procs.append(Proc(args, tmp_path / "ctl2.log"))
            wait_for(lambda: "resumed plan " + ref.short() in procs[1].log(), 15, what="resumed")
            wait_for(lambda: h.summary("c1").get("running") == ref, 10, what="engine sees it running")
            time.sleep(0.3)
            acks = h.summary("c1")["acks"]
            assert acks.get((ref.epoch, ref.seq, "applied")) == 1 and acks.get((ref.epoch, ref.seq, "accepted")) == 1
            assert acks.get((ref.epoch, ref.seq, "duplicate"), 0) == 0  # the HELLO matched: nothing re-sent
            assert "applied plan" not in procs[1].log()

            # a plan with a 1 s lease; then both sides go down for longer than that
            (short,) = h.publish(four_phase("c1", 25, 22), lease_s=1.0)
            wait_for(lambda: h.summary("c1").get("status") in ("accepted", "applied"), 10, what="short lease plan")
            procs[1].kill9()
            h.stop_engine()
            time.sleep(1.3)
            procs.append(Proc(args, tmp_path / "ctl3.log"))
            wait_for(lambda: "running the fallback plan" in procs[2].log(), 15, what="fallback at start-up")
            log3 = procs[2].log()
            assert "expired while down" in log3 and short.short() in log3
            assert eng is not None
        finally:
            for p in procs:
                p.stop()


def _agent_given_a_plan(h: Harness, activation: Activation):
    """Agent c1 of ``h`` (sends captured, no socket) handed one PLAN: (agent, messages it sent, the plan's ref)."""
    a = ControllerAgent(h.agent_config("c1"), h.agent_ctx)
    sent: list = []
    a._send = lambda msg, keep=False: sent.append(msg) or True
    body = encode_plan(four_phase("c1", 30, 15))
    ref = PlanRef(epoch=9, seq=1, sha256=wire.plan_digest(body))
    a.handle(wire.encode(PlanMsg(msg_id="m1", controller_id="c1", ref=ref, activation=activation, lease_s=60.0,
                                 plan=body)))
    return a, sent, ref


def test_plan_accepted_before_a_crash_is_applied_once_after_restart(tmp_path):
    h = Harness(tmp_path, ("c1",), scale=200.0)
    try:
        a, sent, ref = _agent_given_a_plan(h, Activation(kind="at", at_s=300.0))
        assert sent[0].status == "accepted" and a.running_ref is None
        a.close()  # "crash" before the activation point
        b = ControllerAgent(h.agent_config("c1"), h.agent_ctx)  # the signal clock starts again at 0
        b._send = lambda msg, keep=False: sent.append(msg) or True
        assert b.mode == "central" and b.running_ref is None and b.runner.pending_key == ref
        wait_for(lambda: b.tick() or b.running_ref == ref, 10, what="switch after restart")
        assert b.runner.t_s >= 300 and [r for r, _ in b.applied_log] == [ref]
        assert b.store.load().accepted_status == "applied"
        assert [m.status for m in sent if isinstance(m, wire.Ack)] == ["accepted", "applied"]
        b.close()
        c = ControllerAgent(h.agent_config("c1"), h.agent_ctx)  # and again: resumed, not applied twice
        assert c.running_ref == ref and c.applied_log == []
        c.close()
    finally:
        h.agent_ctx.destroy(linger=0)


def test_engine_store_epochs_and_issued_log(tmp_path, monkeypatch):
    s = EngineStore(tmp_path)
    e1 = s.begin_epoch({"scenario": "x"})
    for seq in range(1, 8):
        s.stage_desired(DesiredRow("c1", e1, seq, "ab" * 32, b"{}", "asap", 0.0, 30.0, "issued"))
        s.commit()
    s.stage_status("c1", e1, 7, "ab" * 32, "applied")
    s.commit()
    assert s.load_desired()["c1"].status == "applied" and s.last_seqs() == {"c1": 7}
    s.close()
    monkeypatch.setattr(store_mod, "ISSUED_KEPT", 3)
    s2 = EngineStore(tmp_path)
    assert s2.begin_epoch() > e1 and s2.get_meta("scenario") == "x"
    assert s2.issued_count("c1") == 3 and s2.last_seqs() == {"c1": 7}
    with pytest.raises(GronvagError, match="another engine"):
        EngineStore(tmp_path)
    s2.close()


def test_state_no_longer_keeps_a_history_of_applied_plans_and_old_states_still_load(tmp_path):
    """States written by earlier versions carry up to 32 applied plans; they load, and the next save drops them."""
    h = Harness(tmp_path, ("c1",), scale=200.0)
    try:
        a, _, ref = _agent_given_a_plan(h, Activation(kind="asap"))
        wait_for(lambda: a.tick() or a.running_ref == ref, 10, what="switch")
        st = a.store.load()
        assert st.accepted_status == "applied" and st.applied == ()
        st.applied = (ref,) * 32  # as an earlier version wrote it
        a.store.save(st)
        a.close()
        b = ControllerAgent(h.agent_config("c1"), h.agent_ctx)
        assert b.running_ref == ref and b.mode == "central"
        assert b.store.load().applied == ()
        b.close()
    finally:
        h.agent_ctx.destroy(linger=0)
