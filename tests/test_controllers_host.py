"""AgentHost under bounded batches, and the GC settings of service processes."""

from __future__ import annotations

import gc

from controllers.host import SERVICE_GC_THRESHOLDS, quiet_gc
from tests.test_controllers_support import Harness, four_phase, wait_for


def test_one_agent_per_iteration_still_delivers_every_plan_once(tmp_path):
    ids = ("c1", "c2", "c3", "c4")
    with Harness(tmp_path, ids) as h:
        h.start_engine()
        h.start_agents(batch=1)  # the others' messages wait for the next iterations
        wait_for(lambda: all(a.engine_epoch for a in h.agents.values()), 5, what="WELCOME")
        refs = h.publish(*(four_phase(cid, 20 + i, 25 - i, i) for i, cid in enumerate(ids)))
        for cid, ref in zip(ids, refs, strict=True):
            wait_for(lambda cid=cid, ref=ref: h.agents[cid].running_ref == ref and
                     h.summary(cid).get("status") == "applied", 8, what=f"{cid} applying {ref.short()}")
        refs2 = h.publish(*(four_phase(cid, 18 + i, 27 - i, i) for i, cid in enumerate(ids)))
        for cid, ref in zip(ids, refs2, strict=True):
            wait_for(lambda cid=cid, ref=ref: h.agents[cid].running_ref == ref and
                     h.summary(cid).get("status") == "applied", 8, what=f"{cid} applying {ref.short()}")
        for cid, r1, r2 in zip(ids, refs, refs2, strict=True):
            assert h.applied(cid) == [r1, r2]
            assert h.summary(cid)["acks"].get((r2.epoch, r2.seq, "accepted")) == 1


def test_quiet_gc_freezes_and_raises_the_full_collection_threshold():
    before = gc.get_threshold()
    try:
        quiet_gc()
        assert gc.get_threshold() == SERVICE_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
