"""Command-line edges of the controller link: ``serve``, ``controller`` and ``keys``.

Each ``*_main(argv)`` takes the arguments after the sub-command name and returns an exit code (0 ok, 2 user error),
so ``gronvag serve|controller|keys`` (engine/cli.py) and ``python -m controllers ...`` can both call them.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import zmq

from controllers.agent import AgentConfig, ControllerAgent, DayClock
from controllers.config import check_fallback, load_fallback, load_spec, spec_from_fallback
from controllers.engine import Engine, EngineConfig
from controllers.host import AgentHost, quiet_gc
from controllers.security import ENGINE_ID, check_id, create_keypair, list_keys, load_keypair
from controllers.state import StateDB
from controllers.watch import AllowListWatcher, PlanFileSource, periods_by_signal
from controllers.wire import Activation
from engine.errors import GronvagError
from engine.plan import read_planset

log = logging.getLogger("gronvag.controllers")

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5571"


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum, frame):  # noqa: ARG001
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
    return stop


def _activation(text: str) -> Activation:
    if text in ("asap", "next_cycle"):
        return Activation(kind=text)
    if text.startswith("at:"):
        try:
            return Activation(kind="at", at_s=float(text[3:]))
        except ValueError:
            pass
    raise argparse.ArgumentTypeError("expected asap, next_cycle or at:SECONDS")


def _run(fn, argv) -> int:
    try:
        return fn(argv)
    except GronvagError as exc:
        sys.stderr.write(f"gronvag: {exc}\n")
        return 2
    except zmq.ZMQError as exc:
        sys.stderr.write(f"gronvag: network error: {exc}\n")
        return 2


# ---------------------------------------------------------------------- serve
def serve_main(argv: Sequence[str]) -> int:
    """``gronvag serve SCENARIO --plan FILE``: the engine side; serves each plan to the controller of its signal."""
    p = argparse.ArgumentParser(prog="gronvag serve", description=serve_main.__doc__)
    p.add_argument("scenario", help="scenario the plans were made for (recorded; not compiled in this version)")
    p.add_argument("--plan", required=True, type=Path, help="plan set JSON (gronvag.plan/1); reloaded when it changes")
    p.add_argument("--bind", default=DEFAULT_ENDPOINT, help=f"ROUTER endpoint (default {DEFAULT_ENDPOINT})")
    p.add_argument("--keys", type=Path, default=Path("keys"),
                   help="keys dir: engine.key_secret and the controllers' <id>.key allow-list (default ./keys)")
    p.add_argument("--server-key", type=Path, help="the engine's key pair file (default KEYS/engine.key_secret)")
    p.add_argument("--allow", type=Path, help="allow-list dir of controller public keys (default KEYS)")
    p.add_argument("--state-dir", type=Path, default=Path("state/engine"), help="durable engine state")
    p.add_argument("--lease", type=float, default=30.0, help="plan lease, s (default 30)")
    p.add_argument("--heartbeat", type=float, default=5.0, help="PING interval, s (default 5)")
    p.add_argument("--activate", type=_activation, default=Activation(kind="next_cycle"),
                   help="asap | next_cycle | at:SECONDS (signal time); default next_cycle")
    p.add_argument("--lead", type=float, default=60.0,
                   help="time-of-day plans: send each period's plan this long before it begins, s (default 60)")
    p.add_argument("--retry", type=float, default=1.0, help="first retry after, s (doubles up to 30 s)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until SIGINT/SIGTERM)")
    p.add_argument("--log-level", default="INFO")
    return _run(_serve, (p, argv))


def _serve(args_in) -> int:
    p, argv = args_in
    a = p.parse_args(argv)
    _setup_logging(a.log_level)
    if a.heartbeat * 3 > a.lease:
        raise GronvagError(f"--heartbeat {a.heartbeat} s must be at most a third of --lease {a.lease} s")
    ps = read_planset(a.plan)  # fail early on a bad file
    try:
        periods = periods_by_signal(ps.plans)  # time-of-day plans: periods that do not overlap, served in turn
    except GronvagError as exc:
        raise GronvagError(exc.message, a.plan) from None
    keys = load_keypair(a.server_key or a.keys / f"{ENGINE_ID}.key_secret")
    if keys.secret is None:
        raise GronvagError("the engine needs its secret key (.key_secret)", a.server_key)
    cfg = EngineConfig(endpoint=a.bind, state_dir=a.state_dir, keys=keys, allow_dir=a.allow or a.keys,
                       heartbeat_s=a.heartbeat, offline_after_s=max(3 * a.heartbeat, 5.0),
                       retry_initial_s=a.retry, lease_s=a.lease, activation=a.activate,
                       meta={"scenario": str(a.scenario), "plan_file": str(a.plan.resolve())})
    stop = _stop_on_signals()
    engine = Engine(cfg)
    try:
        engine.start()
        log.info("serving %d plans of scenario %s (%s) from %s", len(ps.plans), a.scenario, ps.scenario or "-",
                 a.plan)
        if any(len(v) > 1 for v in periods.values()):
            log.info("time-of-day plans: each signal's next plan goes out %g s before its period", a.lead)
        source = PlanFileSource(a.plan, activation=a.activate, lease_s=a.lease, lead_s=a.lead)
        source(engine)
        quiet_gc()  # a long-running service: rare full collections (each would pause the loop for tens of ms)
        engine.timers.append((1.0, source))
        engine.timers.append((5.0, AllowListWatcher(cfg.allow_dir)))
        engine.run(stop, until=None if a.duration is None else time.monotonic() + a.duration)
    finally:
        engine.close()
    return 0


# ---------------------------------------------------------------------- controller
def controller_main(argv: Sequence[str]) -> int:
    """``gronvag controller --id ID``: one controller's agent; logs every plan it applies."""
    p = argparse.ArgumentParser(prog="gronvag controller", description=controller_main.__doc__)
    p.add_argument("--id", required=True, help="controller id (= the signal id of its plans unless --signal)")
    p.add_argument("--connect", default=DEFAULT_ENDPOINT, help=f"engine endpoint (default {DEFAULT_ENDPOINT})")
    p.add_argument("--keys", type=Path, default=Path("keys"), help="keys dir with ID.key_secret and engine.key")
    p.add_argument("--key", type=Path, help="own key pair file (default KEYS/ID.key_secret)")
    p.add_argument("--engine-key", type=Path, help="pinned engine public key (default KEYS/engine.key)")
    p.add_argument("--state-dir", type=Path, default=Path("state/controllers"), help="durable controller state")
    p.add_argument("--fallback", required=True, type=Path, help="local fallback plan (plan set or single plan JSON)")
    p.add_argument("--spec", type=Path, help="signal spec JSON (default: derived from the fallback plan)")
    p.add_argument("--signal", help="signal id of the plans (default: --id)")
    p.add_argument("--time-scale", type=float, default=1.0, help="signal clock speed-up (tests and demos)")
    p.add_argument("--hello-after", type=float, default=3.0, help="re-send HELLO after this much silence, s")
    p.add_argument("--status-interval", type=float, default=10.0, help="periodic STATUS, s")
    p.add_argument("--no-fsync", action="store_true", help="do not fsync the state database (throwaway tests only)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--log-level", default="INFO")
    return _run(_controller, (p, argv))


def _controller(args_in) -> int:
    p, argv = args_in
    a = p.parse_args(argv)
    _setup_logging(a.log_level)
    cid = check_id(a.id)
    signal_id = a.signal or cid
    keys = load_keypair(a.key or a.keys / f"{cid}.key_secret")
    if keys.secret is None:
        raise GronvagError("the controller needs its secret key (.key_secret)", a.key)
    engine_pub = load_keypair(a.engine_key or a.keys / f"{ENGINE_ID}.key").public
    fallback = load_fallback(a.fallback, signal_id)
    spec = load_spec(a.spec) if a.spec else spec_from_fallback(fallback)
    check_fallback(fallback, spec)
    cfg = AgentConfig(controller_id=cid, endpoint=a.connect, keys=keys, engine_public=engine_pub,
                      state_dir=a.state_dir, fallback=fallback, spec=spec, signal_id=signal_id,
                      clock=DayClock(a.time_scale), hello_after_s=a.hello_after,
                      status_interval_s=a.status_interval, fsync=not a.no_fsync)
    stop = _stop_on_signals()
    ctx = zmq.Context()
    db = StateDB(a.state_dir / f"{cid}.state.sqlite", fsync=not a.no_fsync)
    agent = ControllerAgent(cfg, ctx, db=db)
    host = AgentHost([agent], db=db)
    try:
        host.start()
        log.info("controller %s (signal %s) connecting to %s", cid, signal_id, a.connect)
        host.run(stop, until=None if a.duration is None else time.monotonic() + a.duration)
    finally:
        host.close()
        db.close()
        ctx.term()
    return 0


# ---------------------------------------------------------------------- keys
def keys_main(argv: Sequence[str]) -> int:
    """``gronvag keys create ID... | list``: CURVE key pairs (engine: id 'engine')."""
    p = argparse.ArgumentParser(prog="gronvag keys", description=keys_main.__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="create a key pair per id: DIR/ID.key (public), DIR/ID.key_secret")
    c.add_argument("ids", nargs="+")
    c.add_argument("--dir", type=Path, default=Path("keys"))
    c.add_argument("--force", action="store_true", help="overwrite existing pairs")
    ls = sub.add_parser("list", help="list the public keys in a directory: id and key")
    ls.add_argument("--dir", type=Path, default=Path("keys"))
    return _run(_keys, (p, argv))


def _keys(args_in) -> int:
    p, argv = args_in
    a = p.parse_args(argv)
    if a.cmd == "create":
        for ident in a.ids:
            kp = create_keypair(a.dir, ident, overwrite=a.force)
            sys.stdout.write(f"{kp.id}\t{kp.public.decode()}\t{a.dir / (kp.id + '.key_secret')}\n")
        return 0
    if not a.dir.is_dir():
        raise GronvagError("no such keys directory", a.dir)
    for kp in list_keys(a.dir):
        secret = (a.dir / f"{kp.id}.key_secret").exists()
        sys.stdout.write(f"{kp.id}\t{kp.public.decode()}\t{'pair' if secret else 'public'}\n")
    return 0
