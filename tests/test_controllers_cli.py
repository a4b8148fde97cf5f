"""The controller link's command-line edges and local configuration files."""

from __future__ import annotations

import threading
import time

import msgspec
import numpy as np
import pytest

from controllers.__main__ import main as module_main
from controllers.cli import controller_main, keys_main, serve_main
from controllers.config import SpecFile, check_fallback, load_fallback, load_spec, spec_from_fallback
from controllers.security import list_keys, load_allow_list
from controllers.state import StateFile
from controllers.watch import AllowListWatcher, PlanFileSource
from engine.errors import GronvagError
from engine.plan import PlanSet, encode_plan, encode_planset
from tests.test_controllers_support import four_phase, free_port


def test_keys_create_and_list(tmp_path, capsys):
    assert keys_main(["create", "engine", "J1", "J2", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in out] == ["engine", "J1", "J2"]
    assert keys_main(["create", "J1", "--dir", str(tmp_path)]) == 2  # never overwrites silently
    assert "already exists" in capsys.readouterr().err
    assert keys_main(["list", "--dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 3 and all(line.endswith("\tpair") and len(line.split("\t")[1]) == 40 for line in listed)
    assert (tmp_path / "J1.key_secret").stat().st_mode & 0o077 == 0
    assert sorted(load_allow_list(tmp_path).values()) == ["J1", "J2"]  # the engine's own key is not a controller
    assert [k.id for k in list_keys(tmp_path)] == ["J1", "J2", "engine"]
    assert keys_main(["create", "bad id", "--dir", str(tmp_path)]) == 2
    assert keys_main(["list", "--dir", str(tmp_path / "nope")]) == 2


def test_module_entry_point_usage(capsys):
    assert module_main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_fallback_from_plan_set_or_single_plan(tmp_path):
    ps = tmp_path / "ps.json"
    ps.write_bytes(encode_planset(PlanSet(plans=(four_phase("J1"), four_phase("J2", 25, 15)))))
    assert load_fallback(ps, "J2") == four_phase("J2", 25, 15)
    single = tmp_path / "one.json"
    single.write_bytes(encode_plan(four_phase("J1")))
    assert load_fallback(single, "J1") == four_phase("J1")
    with pytest.raises(GronvagError, match="no plan for signal"):
        load_fallback(ps, "J9")
    with pytest.raises(GronvagError, match="not 'J2'"):
        load_fallback(single, "J2")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(GronvagError, match="not JSON"):
        load_fallback(tmp_path / "bad.json", "J1")


def test_spec_file_round_trip_and_checks(tmp_path):
    spec = spec_from_fallback(four_phase("J1"))
    sf = SpecFile(signal_id="J1", min_green_s=spec.min_green_s.tolist(), yellow_s=spec.yellow_s.tolist(),
                  redamber_s=spec.redamber_s.tolist(), allred_s=spec.allred_s, conflicts=spec.conflicts.tolist(),
                  max_green_s=spec.max_green_s.tolist())
    path = tmp_path / "spec.json"
    path.write_bytes(msgspec.json.encode(sf))
    loaded = load_spec(path)
    for name in ("min_green_s", "yellow_s", "redamber_s", "max_green_s", "conflicts"):
        assert np.array_equal(getattr(loaded, name), getattr(spec, name)), name
    assert loaded.allred_s == spec.allred_s
    check_fallback(four_phase("J1"), loaded)
    strict = msgspec.structs.replace(sf, min_green_s=[25, 25, 25, 25])
    path.write_bytes(msgspec.json.encode(strict))
    with pytest.raises(GronvagError, match="fallback plan violates"):
        check_fallback(four_phase("J1"), load_spec(path))
    path.write_bytes(msgspec.json.encode(msgspec.structs.replace(sf, yellow_s=[3])))
    with pytest.raises(GronvagError, match="entries"):
        load_spec(path)


def test_serve_and_controller_refuse_bad_configuration(tmp_path, capsys):
    keys = tmp_path / "keys"
    assert keys_main(["create", "engine", "J1", "--dir", str(keys)]) == 0
    plans = tmp_path / "plans.json"
    plans.write_text('{"schema": "gronvag.plan/1", "plans": [{"signal_id": 3}]}')
    base = ["corridor", "--keys", str(keys), "--state-dir", str(tmp_path / "st"), "--duration", "0.1"]
    assert serve_main([*base, "--plan", str(plans)]) == 2
    assert "not a valid gronvag.plan/1" in capsys.readouterr().err
    assert serve_main([*base, "--plan", str(tmp_path / "missing.json")]) == 2
    assert serve_main([*base, "--plan", str(plans), "--heartbeat", "20", "--lease", "30"]) == 2
    tod = tmp_path / "tod.json"  # two plans for J1 valid at the same time (the whole day): which one would run?
    tod.write_bytes(encode_planset(PlanSet(plans=(four_phase("J1"), four_phase("J1")))))
    assert serve_main([*base, "--plan", str(tod)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "tod.json" in err[-1] and "signal 'J1'" in err[-1] and "overlap" in err[-1]
    fb = tmp_path / "fb.json"
    fb.write_bytes(encode_planset(PlanSet(plans=(four_phase("J1"),))))
    ctl = ["--keys", str(keys), "--state-dir", str(tmp_path / "c"), "--fallback", str(fb), "--duration", "0.1"]
    assert controller_main(["--id", "J7", *ctl]) == 2  # no key pair for J7
    assert "cannot load CURVE certificate" in capsys.readouterr().err
    assert controller_main(["--id", "J1", *ctl, "--spec", str(tmp_path / "nope.json")]) == 2


def test_serve_and_controller_run_in_process(tmp_path):
    """Both programs end cleanly after --duration (off the main thread: no signal handlers)."""
    keys = tmp_path / "keys"
    keys_main(["create", "engine", "J1", "--dir", str(keys)])
    plans = tmp_path / "plans.json"
    plans.write_bytes(encode_planset(PlanSet(plans=(four_phase("J1", 30, 15),))))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    codes: dict[str, int] = {}
    t = threading.Thread(target=lambda: codes.setdefault("serve", serve_main(
        ["corridor", "--plan", str(plans), "--keys", str(keys), "--bind", endpoint, "--state-dir",
         str(tmp_path / "st"), "--duration", "6", "--heartbeat", "0.2", "--lease", "2", "--activate", "asap",
         "--log-level", "WARNING"])))
    t.start()
    time.sleep(0.3)
    codes["controller"] = controller_main(
        ["--id", "J1", "--keys", str(keys), "--connect", endpoint, "--state-dir", str(tmp_path / "c"), "--fallback",
         str(plans), "--time-scale", "50", "--duration", "4", "--log-level", "WARNING"])
    t.join(timeout=15)
    assert codes == {"serve": 0, "controller": 0}
    st = StateFile(tmp_path / "c", "J1").load()
    assert st.accepted is not None and st.accepted_status == "applied" and st.mode == "central"


def test_watchers_reload_on_change(tmp_path):
    class FakeEngine:
        reloads = 0
        published: list = []

        def reload_allow_list(self):
            self.reloads += 1
            return 1

        def publish(self, plans, activation=None, lease_s=None):
            self.published.append([p.signal_id for p in plans])
            return list(plans)

    keys_main(["create", "J1", "--dir", str(tmp_path / "allow")])
    eng = FakeEngine()
    watch = AllowListWatcher(tmp_path / "allow")
    watch(eng)
    assert eng.reloads == 0
    keys_main(["create", "J2", "--dir", str(tmp_path / "allow")])
    watch(eng)
    assert eng.reloads == 1
    plans = tmp_path / "plans.json"
    plans.write_bytes(encode_planset(PlanSet(plans=(four_phase("J1"),))))
    src = PlanFileSource(plans)
    src(eng)
    src(eng)  # unchanged file: nothing
    assert eng.published == [["J1"]]
    plans.write_text("{broken")
    src(eng)  # a broken file keeps the current plans
    plans.write_bytes(encode_planset(PlanSet(plans=(four_phase("J1"), four_phase("J1", 25)))))
    src(eng)  # two plans for one signal valid at the same time: refused
    assert eng.published == [["J1"]]


def test_time_of_day_plans_go_out_period_by_period():
    """A plan set from `optimise --periods` (J1: 7:00-7:30 and 7:30-8:00; J2: one plan for the day): before 7:00
    the first period's plan (the controller holds it until 7:00); the second one lead_s before 7:30, and only J1's;
    nothing again while nothing changes; the day wraps."""
    import msgspec

    class FakeEngine:
        def __init__(self):
            self.published = []

        def publish(self, plans, activation=None, lease_s=None):
            self.published.append(sorted((p.signal_id, p.valid_from_s) for p in plans))
            return list(plans)

    def period(p, a, b):
        return msgspec.structs.replace(p, valid_from_s=a, valid_to_s=b)

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "tod.json"
        f.write_bytes(encode_planset(PlanSet(plans=(period(four_phase("J1"), 25200, 27000),
                                                    period(four_phase("J1", 30), 27000, 28800),
                                                    four_phase("J2")))))
        now = [20000.0]
        eng = FakeEngine()
        src = PlanFileSource(f, lead_s=60.0, clock=lambda: now[0])
        src(eng)
        assert eng.published == [[("J1", 25200), ("J2", 0)]]
        for t in (25200.0, 26000.0, 26939.0):
            now[0] = t
            src(eng)
        assert len(eng.published) == 1
        now[0] = 26940.0  # 60 s before 7:30
        src(eng)
        assert eng.published[-1] == [("J1", 27000)]
        now[0] = 86400.0 + 26000.0  # the next day, 7:13
        src(eng)
        assert eng.published[-1] == [("J1", 25200)]
        assert len(eng.published) == 3
