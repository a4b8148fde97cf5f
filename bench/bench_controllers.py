"""Controller link under load: N CURVE controllers in a few processes on loopback, one engine.

``run(smoke)`` (also ``python -m bench.bench_controllers [--smoke] [-n N] [--procs P]``):

1. keys for the engine and N controllers; the engine (this process) binds 127.0.0.1; P agent processes host N/P
   agents each (the real :class:`controllers.agent.ControllerAgent` in a :class:`controllers.host.AgentHost`: fsynced
   group-committed state, full safety validation of every plan);
2. *paced* phases: plans offered evenly at fixed rates (each controller has at most one plan in flight): latency of
   every plan from PLAN sent to ACK accepted received, p50/p99, per offered rate;
3. *saturation* phase: every controller gets its next plan as soon as the previous one is accepted (N in flight):
   acknowledged plans per second and the latency at that load;
4. drain and settle: no plan may stay unacknowledged; every controller must end up running its last plan; agents
   report every plan they applied, so plans applied twice (or lost) are counted.

Every plan is distinct (different splits/offset), so no validation is answered from a memo, unless ``variants`` makes
each controller cycle through a few plans (recurring time-of-day plans: validation verdicts are then memoised by
content). The machine's load average is recorded: other processes on the 2 cores change the figures a lot; so is the
CPU time per acknowledged plan at saturation of the engine process and of the agent processes (all their threads,
ZeroMQ's CURVE I/O threads included), which is steadier. ``--md FILE`` appends the figures as a markdown section.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4096)
def _template(k: int):
    from engine.plan import Phase, make_plan

    g1 = 10 + (k * 5) % 23
    g2 = 10 + (k * 7 + 3) % 23
    phases = [Phase("GGrr", g1), Phase("yyrr", 3, kind="yellow"), Phase("rrrr", 2, kind="allred"),
              Phase("rruu", 1, kind="redamber"), Phase("rrGG", g2), Phase("rryy", 3, kind="yellow"),
              Phase("rrrr", 2, kind="allred"), Phase("uurr", 1, kind="redamber")]
    cycle = sum(p.duration_s for p in phases)
    return make_plan("T", phases, offset_s=(k * 13) % cycle)


def _plan(sid: str, k: int):
    """The k-th plan variant of signal ``sid`` (k = 0: its fallback); consecutive k differ in splits and offset."""
    import msgspec

    return msgspec.structs.replace(_template(k), signal_id=sid)


def _agent_worker(ids: list[str], keys_dir: str, endpoint: str, state_dir: str, scale: float, fsync: bool,
                  conn, stop, commit_thread: bool = False) -> None:
    """One agent process: hosts ``ids`` until ``stop`` is set, then sends back what each agent applied."""
    import zmq

    from controllers.agent import AgentConfig, ControllerAgent, DayClock
    from controllers.config import spec_from_fallback
    from controllers.host import AgentHost
    from controllers.security import ENGINE_ID, load_keypair
    from controllers.state import StateDB

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = zmq.Context()
    ctx.max_sockets = 4 * len(ids) + 64
    engine_pub = load_keypair(Path(keys_dir) / f"{ENGINE_ID}.key").public
    clock = DayClock(scale, start_s=0.0)
    db = StateDB(Path(state_dir) / f"host-{os.getpid()}.sqlite", fsync=fsync)
    agents = []
    for cid in ids:
        fallback = _plan(cid, 0)
        cfg = AgentConfig(controller_id=cid, endpoint=endpoint, keys=load_keypair(Path(keys_dir) / f"{cid}.key_secret"),
                          engine_public=engine_pub, state_dir=Path(state_dir), fallback=fallback,
                          spec=spec_from_fallback(fallback), clock=clock, hello_after_s=5.0, status_interval_s=30.0,
                          reconnect_ivl_ms=200, reconnect_ivl_max_ms=2000, fsync=fsync)
        agents.append(ControllerAgent(cfg, ctx, db=db))
    host = AgentHost(agents, tick_s=0.05, db=db, freeze_gc=True,  # a process that only hosts agents
                     commit_thread=commit_thread)
    host.start()
    parent = os.getppid()

    def stop_with_parent() -> None:  # a benchmark killed mid-run must not leave its agent processes behind
        while not stop.is_set():
            if os.getppid() != parent:
                stop.set()
                return
            time.sleep(0.5)

    threading.Thread(target=stop_with_parent, daemon=True).start()
    try:
        host.run(stop)
    finally:
        host.close()
        result = {a.id: {"applied": [(r.epoch, r.seq) for r, _ in a.applied_log], "counts": dict(a.counts),
                         "state_writes": a.store.writes} for a in agents}
        result["_host"] = {"commits": db.commits, "cpu_s": time.process_time()}
        db.close()
        try:
            conn.send(result)
            conn.close()
        except OSError:  # the parent is gone
            pass
        ctx.term()


class _Driver:
    """Issues plans from the engine loop and records acknowledgements (runs on the engine thread)."""

    def __init__(self, engine, ids: list[str], variants: int = 0):
        self.engine = engine
        self.variants = variants
        self.ids = ids
        self.k = dict.fromkeys(ids, 0)
        self.outstanding: dict[str, tuple[int, float]] = {}  # cid -> (seq, publish time)
        self.idle = deque(ids)
        self.latencies: list[float] = []  # PLAN sent -> ACK accepted, s
        self.issue_latencies: list[float] = []  # publish (incl. commit) -> ACK accepted, s
        self.acked = 0
        self.issued = 0
        self.closed_loop = False
        self.applied_acks: dict[tuple[str, int, int], int] = {}
        self.rejected = 0

    def issue(self, cids: list[str]) -> None:
        plans = []
        for cid in cids:
            self.k[cid] += 1
            k = self.k[cid]
            plans.append(_plan(cid, 1 + (k - 1) % self.variants if self.variants else k))
        refs = self.engine.publish(plans)
        now = time.perf_counter()
        for cid, ref in zip(cids, refs, strict=True):
            self.outstanding[cid] = (ref.seq, now)
        self.issued += len(refs)

    def on_ack(self, engine, peer, ack, latency) -> None:
        cid = peer.cid
        if ack.status == "applied":
            key = (cid, ack.ref.epoch, ack.ref.seq)
            self.applied_acks[key] = self.applied_acks.get(key, 0) + 1
            return
        out = self.outstanding.get(cid)
        if out is None or ack.ref.seq != out[0] or ack.status not in ("accepted", "duplicate", "rejected"):
            return
        del self.outstanding[cid]
        self.rejected += ack.status == "rejected"
        self.acked += 1
        if latency is not None:
            self.latencies.append(latency)
        self.issue_latencies.append(time.perf_counter() - out[1])
        if self.closed_loop:
            self.issue([cid])  # staged now; committed and sent at the end of this engine loop iteration
        else:
            self.idle.append(cid)


def _children_cpu_s(pids: list[int]) -> float | None:
    """User + system CPU seconds of the given processes (all their threads) from /proc; None where unavailable."""
    total = 0.0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return total


def _fsync_p50_ms(directory: Path, n: int = 40) -> float:
    """Median time of ``os.fdatasync`` after a 4 kB write in ``directory``, ms (the disk's commit latency)."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        times = []
        for i in range(n):
            os.pwrite(fd, b"\0" * 4096, (i % 8) * 4096)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return round(1000 * float(np.median(times)), 2)


def _pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1000.0, q)), 2) if xs else float("nan")


def run(smoke: bool = False, n: int | None = None, procs: int | None = None,
        paced_rates: tuple[float, ...] | None = None, phase_s: float | None = None, fsync: bool = True,
        scale: float = 25.0, variants: int = 0, idle_s: float | None = None,
        engine_commit_thread: bool = False, agent_commit_thread: bool = False) -> dict:
    import zmq

    from controllers.engine import Engine, EngineConfig
    from controllers.host import quiet_gc
    from controllers.security import ENGINE_ID, create_keypair, load_allow_list, load_keypair
    from controllers.wire import Activation

    n = n or (20 if smoke else 1000)
    procs = procs or 2
    paced_rates = tuple(paced_rates or ((100.0,) if smoke else (100.0, 300.0, 1000.0)))
    phase_s = phase_s or (2.0 if smoke else 6.0)
    load_before = os.getloadavg()
    ids = [f"J{i:04d}" for i in range(n)]
    tmp = Path(tempfile.mkdtemp(prefix="gronvag-bench-ctl-"))
    workers, conns, stop = [], [], None
    t_start = time.perf_counter()
    try:
        # reporting only: on this machine's disk an fdatasync took ~4 ms in some hours and ~0.1 ms in others, and every
        # round trip holds two commits (the engine's before the PLAN, the agent's before the ACK)
        fsync_before_ms = _fsync_p50_ms(tmp)
        keys_dir = tmp / "keys"
        create_keypair(keys_dir, ENGINE_ID)
        for cid in ids:
            create_keypair(keys_dir, cid)
        t_keys = time.perf_counter() - t_start
        ctx = zmq.Context()
        ctx.max_sockets = 4 * n + 64
        engine = Engine(EngineConfig(endpoint="tcp://127.0.0.1:0", state_dir=tmp / "engine",
                                     keys=load_keypair(keys_dir / f"{ENGINE_ID}.key_secret"),
                                     allow=load_allow_list(keys_dir), heartbeat_s=5.0, offline_after_s=30.0,
                                     retry_initial_s=5.0, retry_max_s=20.0, lease_s=120.0,
                                     activation=Activation(kind="asap"), max_batch=5000,
                                     commit_thread=engine_commit_thread), context=ctx)
        engine.start()
        driver = _Driver(engine, ids, variants)
        engine.on_ack = driver.on_ack
        spawn = mp.get_context("spawn")
        stop = spawn.Event()
        for w in range(procs):
            part = ids[w::procs]
            parent, child = spawn.Pipe(duplex=False)
            p = spawn.Process(target=_agent_worker, args=(part, str(keys_dir), engine.bound_endpoint,
                                                          str(tmp / "ctl"), scale, fsync, child, stop,
                                                          agent_commit_thread), daemon=True)
            p.start()
            workers.append(p)
            conns.append(parent)

        # --- connect: every controller said HELLO
        t0 = time.perf_counter()
        deadline = time.monotonic() + (60 if n > 100 else 20)
        while sum(1 for p in engine.peers.values() if p.mode is not None) < n:
            engine.poll_once(0.02)
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {sum(1 for p in engine.peers.values() if p.mode)} of {n} connected")
        t_connect = time.perf_counter() - t0
        quiet_gc()  # as an engine service would once its controllers are known: fewer, shorter full collections

        # --- idle: what the connected controllers cost with no plans coming (ticks, heartbeats, socket sweeps)
        idle_s = idle_s or (1.0 if smoke else 3.0)
        idle_cpu0, idle_engine0 = _children_cpu_s([p.pid for p in workers]), time.process_time()
        idle_t0 = time.perf_counter()
        while time.perf_counter() - idle_t0 < idle_s:
            engine.poll_once(0.01)
        idle_wall = time.perf_counter() - idle_t0
        idle_cpu1 = _children_cpu_s([p.pid for p in workers])
        idle_engine_cores = (time.process_time() - idle_engine0) / idle_wall
        idle_agents_cores = None if idle_cpu0 is None or idle_cpu1 is None else (idle_cpu1 - idle_cpu0) / idle_wall

        # --- paced phases: plans offered evenly at a fixed rate (at most one in flight per controller)
        def loop_for(seconds: float, rate: float | None) -> tuple[int, float]:
            a0, t_begin = driver.acked, time.perf_counter()
            tokens, last = 0.0, t_begin
            end = t_begin + seconds
            while True:
                now = time.perf_counter()
                if now >= end:
                    break
                if rate is not None:
                    tokens = min(tokens + (now - last) * rate, max(2.0, rate * 0.01))
                    last = now
                    take = min(int(tokens), len(driver.idle))
                    if take:
                        driver.issue([driver.idle.popleft() for _ in range(take)])
                        tokens -= take
                    # wait for messages until the next plan is due, at least 1 ms (ZeroMQ polls in whole ms): a 0 ms
                    # timeout above 1000 plans/s made this loop spin and take a third of a core from the agents
                    engine.poll_once(min(0.002, max(0.001, (1.0 - tokens) / rate)))
                else:
                    engine.poll_once(0.01)
            return driver.acked - a0, time.perf_counter() - t_begin

        paced = {}
        paced_cpu: dict[float, tuple[float | None, float | None, float | None]] = {}
        for rate in paced_rates:
            e0, a0 = time.process_time(), _children_cpu_s([p.pid for p in workers])
            acked, wall = loop_for(phase_s, rate)
            e1, a1 = time.process_time(), _children_cpu_s([p.pid for p in workers])
            paced[rate] = (acked / wall, driver.latencies, driver.issue_latencies)
            driver.latencies, driver.issue_latencies = [], []
            # reporting only: what the phase cost (engine / agents ms per acknowledged plan, cores busy)
            a_s = None if a0 is None or a1 is None else a1 - a0
            paced_cpu[rate] = (round(1000 * (e1 - e0) / max(acked, 1), 3),
                               None if a_s is None else round(1000 * a_s / max(acked, 1), 3),
                               None if a_s is None else round((e1 - e0 + a_s) / wall, 2))

        # --- saturation phase: all controllers busy
        driver.closed_loop = True
        first = list(driver.idle)
        driver.idle.clear()
        if first:
            driver.issue(first)
        cpu0 = time.process_time()
        agents_cpu0 = _children_cpu_s([p.pid for p in workers])
        sat_acked, sat_wall = loop_for(phase_s, None)
        engine_cpu_sat = time.process_time() - cpu0
        agents_cpu1 = _children_cpu_s([p.pid for p in workers])
        agents_cpu_sat = None if agents_cpu0 is None or agents_cpu1 is None else agents_cpu1 - agents_cpu0
        lat_sat = driver.latencies
        driver.closed_loop = False

        # --- drain: every issued plan acknowledged; then settle: every controller runs its last plan
        deadline = time.monotonic() + 30
        while driver.outstanding and time.monotonic() < deadline:
            engine.poll_once(0.01)
        unacked = len(driver.outstanding)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            engine.poll_once(0.01)
            if all(p.desired is not None and p.desired.status == "applied" for cid, p in engine.peers.items()
                   if cid in driver.k):
                break
        final_not_applied = sum(1 for cid in ids if engine.peers[cid].desired is None
                                or engine.peers[cid].desired.status != "applied")
        counts = dict(engine.counts)
        issued_store = engine.store.issued_count()
        stop.set()
        results: dict = {}
        host_commits = 0
        agents_cpu_s = 0.0
        for c in conns:
            if c.poll(30):
                part = c.recv()
                host = part.pop("_host")
                host_commits += host["commits"]
                agents_cpu_s += host["cpu_s"]
                results.update(part)
        for p in workers:
            p.join(timeout=15)
        engine.close()
        ctx.term()

        applied_per_plan: dict[tuple[str, int, int], int] = {}
        for cid, r in results.items():
            for e, s in r["applied"]:
                applied_per_plan[(cid, e, s)] = applied_per_plan.get((cid, e, s), 0) + 1
        applied_twice = sum(1 for v in applied_per_plan.values() if v > 1)
        applied_acks_twice = sum(1 for v in driver.applied_acks.values() if v > 1)
        agent_accepted = sum(r["counts"].get("accepted", 0) for r in results.values())
        out = {
            "controllers": n, "agent_processes": procs, "cpus": os.cpu_count(), "curve": True,
            "controller_fsync": fsync, "plan_variants": variants or "all distinct",
            "agent_commits": "COMMIT on a helper thread" if agent_commit_thread else "in the loop",
            "engine_sqlite": "WAL, synchronous=FULL, " + ("group commits on a helper thread" if engine_commit_thread
                                                          else "one commit per loop iteration"),
            "signal_clock_speedup": scale,
            "keygen_s": round(t_keys, 2), "connect_all_s": round(t_connect, 2),
            **{f"paced_{int(r)}_acked_plans_s": round(v[0], 1) for r, v in paced.items()},
            **{f"paced_{int(r)}_latency_p50_ms": _pct(v[1], 50) for r, v in paced.items()},
            **{f"paced_{int(r)}_latency_p99_ms": _pct(v[1], 99) for r, v in paced.items()},
            **{f"paced_{int(r)}_latency_max_ms": _pct(v[1], 100) for r, v in paced.items()},
            **{f"paced_{int(r)}_publish_to_ack_p99_ms": _pct(v[2], 99) for r, v in paced.items()},
            **{f"paced_{int(r)}_cpu_ms_per_plan_engine_agents_cores": list(v) for r, v in paced_cpu.items()},
            "fsync_4k_p50_ms_before": fsync_before_ms,
            "saturation_acked_plans_s": round(sat_acked / sat_wall, 1),
            "saturation_latency_p50_ms": _pct(lat_sat, 50), "saturation_latency_p99_ms": _pct(lat_sat, 99),
            "engine_cpu_ms_per_plan_at_saturation": round(1000 * engine_cpu_sat / max(sat_acked, 1), 3),
            "agents_cpu_ms_per_plan_at_saturation": None if agents_cpu_sat is None else
            round(1000 * agents_cpu_sat / max(sat_acked, 1), 3),
            "cpu_cores_busy_at_saturation": None if agents_cpu_sat is None else
            round((engine_cpu_sat + agents_cpu_sat) / sat_wall, 2),
            "idle_agents_cpu_cores": None if idle_agents_cores is None else round(idle_agents_cores, 3),
            "idle_engine_cpu_cores": round(idle_engine_cores, 3),
            "agents_cpu_s_total": round(agents_cpu_s, 1),
            "agents_cpu_ms_per_acked_plan_incl_idle": round(1000 * agents_cpu_s / max(driver.acked, 1), 3),
            "plans_issued": driver.issued, "plans_issued_in_store": issued_store,
            "plans_acked": driver.acked, "plans_rejected": driver.rejected,
            "plans_lost_unacked": unacked, "plans_accepted_by_agents": agent_accepted,
            "plans_applied": sum(applied_per_plan.values()), "plans_applied_twice": applied_twice,
            "applied_acks_twice": applied_acks_twice, "final_plan_not_applied": final_not_applied,
            "engine_retries": counts.get("retries", 0), "engine_malformed": counts.get("malformed", 0),
            "agents_reporting": len(results), "agent_state_commits": host_commits,
            "agent_state_writes": sum(r["state_writes"] for r in results.values()),
            "goals": {"p99_below_50ms_at_lowest_paced_rate": _pct(paced[paced_rates[0]][1], 99) < 50.0,
                      "p99_below_50ms_at_every_paced_rate": all(_pct(v[1], 99) < 50.0 for v in paced.values()),
                      "acked_at_least_5000_s": sat_acked / sat_wall >= 5000.0,
                      "none_lost_or_applied_twice": unacked == 0 and applied_twice == 0 and applied_acks_twice == 0
                      and final_not_applied == 0},
            "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "paced_rates": list(paced_rates), "phase_s": phase_s,
            "wall_s": round(time.perf_counter() - t_start, 1),
        }
        print(json.dumps(out, indent=1))
        return out
    finally:
        if stop is not None:
            stop.set()
        for p in workers:
            if p.is_alive():
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def markdown(out: dict, command: str) -> str:
    """One run's figures as a markdown section (``--md``)."""
    rates = out["paced_rates"]
    lines = [f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `{command}`", "",
             f"{out['controllers']} controllers in {out['agent_processes']} agent processes, CURVE, controller state "
             f"fsynced ({out['controller_fsync']}, commits {out['agent_commits']}), "
             f"engine store {out['engine_sqlite']}, "
             f"plans {out['plan_variants']}, "
             f"{out['phase_s']:g} s per phase, "
             f"{out['cpus']} CPUs; load average (1 min) before/after: {out['loadavg_1m_before_after'][0]} / "
             f"{out['loadavg_1m_before_after'][1]}.", "",
             "| offered plans/s | acked plans/s | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
    for r in rates:
        k = f"paced_{int(r)}"
        lines.append(f"| {int(r)} | {out[k + '_acked_plans_s']} | {out[k + '_latency_p50_ms']} | "
                     f"{out[k + '_latency_p99_ms']} | {out[k + '_latency_max_ms']} |")
    cpu_keys = [(r, f"paced_{int(r)}_cpu_ms_per_plan_engine_agents_cores") for r in rates]
    paced_cpu = "; ".join(f"{int(r)}/s {' / '.join(str(x) for x in out[k])}" for r, k in cpu_keys if k in out)
    lines.append(f"| saturation ({out['controllers']} in flight) | **{out['saturation_acked_plans_s']}** | "
                 f"{out['saturation_latency_p50_ms']} | {out['saturation_latency_p99_ms']} | |")
    lines += ["", "CPU per acknowledged plan at saturation: engine process "
              f"{out['engine_cpu_ms_per_plan_at_saturation']} ms, agent processes "
              f"{out['agents_cpu_ms_per_plan_at_saturation']} ms; CPU cores busy (these processes): "
              f"{out['cpu_cores_busy_at_saturation']}. Idle (connected, no plans): agent processes "
              f"{out.get('idle_agents_cpu_cores')} cores, engine process {out.get('idle_engine_cpu_cores')} cores.",
              f"Plans issued {out['plans_issued']} (in the engine's store {out['plans_issued_in_store']}), "
              f"acknowledged {out['plans_acked']}, rejected {out['plans_rejected']}, **lost (never acknowledged) "
              f"{out['plans_lost_unacked']}**, applied {out['plans_applied']}, **applied twice "
              f"{out['plans_applied_twice']}**, applied-ACKs twice {out['applied_acks_twice']}, controllers not "
              f"ending on their last plan {out['final_plan_not_applied']}, engine retries {out['engine_retries']}.",
              f"Paced phases, CPU per acknowledged plan engine / agents ms and cores busy: {paced_cpu}. Disk: "
              f"fdatasync of 4 kB before the run {out.get('fsync_4k_p50_ms_before')} ms (median).",
              f"Goals: {', '.join(f'{k} {v}' for k, v in out['goals'].items())}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_controllers")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("-n", type=int, help="controllers (default 1000, smoke 20)")
    ap.add_argument("--procs", type=int, help="agent processes (default 2)")
    ap.add_argument("--rates", help="paced phases' offered plans/s, comma-separated (default 100,300,1000; smoke 100)")
    ap.add_argument("--seconds", type=float, help="length of each phase (default 6, smoke 2)")
    ap.add_argument("--no-fsync", action="store_true", help="controller state without fsync")
    ap.add_argument("--variants", type=int, default=0,
                    help="recurring plans: each controller cycles through this many plans (default: all distinct)")
    ap.add_argument("--engine-commit-thread", action="store_true",
                    help="the engine COMMITs (fsync) on a helper thread while its loop goes on")
    ap.add_argument("--agent-commit-thread", action="store_true",
                    help="agent hosts COMMIT (fsync) on a helper thread while their loop goes on")
    ap.add_argument("--md", help="append the figures as a markdown section to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rates = tuple(float(x) for x in args.rates.split(",")) if args.rates else None
    out = run(smoke=args.smoke, n=args.n, procs=args.procs, paced_rates=rates, phase_s=args.seconds,
              fsync=not args.no_fsync, variants=args.variants, engine_commit_thread=args.engine_commit_thread,
              agent_commit_thread=args.agent_commit_thread)
    if args.md:
        command = " ".join(["python -m bench.bench_controllers", *(argv if argv is not None else sys.argv[1:])])
        with open(args.md, "a", encoding="utf-8") as f:
            f.write(markdown(out, command) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
