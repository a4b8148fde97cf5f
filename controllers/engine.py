"""The engine side of GVCP/1: one CURVE-secured ROUTER serving the latest desired plan to every controller.

Per controller the engine keeps one *desired plan* with its (epoch, seq, sha256). Rules:

* A new desired plan is committed to the store (SQLite, fsynced) before it is first sent; writes are grouped (one
  transaction for what the loop staged meanwhile), sends follow the commit. With ``commit_thread`` the
  loop runs the transaction's statements and a helper thread its COMMIT (the fsync), while the loop goes on receiving
  (ACKs are not held up behind an fsync); the plans of a group are sent once its commit has returned, and the next
  group is written after it.
* Only the latest desired plan is (re)sent, until the controller acknowledges it (accepted / duplicate / rejected),
  with exponential back-off; after ``retry_max_tries`` the engine waits for the controller's next HELLO/PONG/STATUS.
* On HELLO (and on PONG/STATUS) the controller reports its last accepted plan and its mode: the engine sends the
  desired plan only if that differs, and issues the same body under a fresh seq when the controller has fallen back
  (it needs a *newer* plan to return to central control) or reports a plan newer than the engine's (lost store).
* Every received message must come from an allow-listed CURVE key whose controller id (ZAP User-Id) equals the routing
  id and the ``controller_id`` in the body; anything else is logged and dropped or answered with ERROR.
* The epoch grows on every start (see :meth:`controllers.store.EngineStore.begin_epoch`).

The engine is single-threaded: :meth:`Engine.run` (or :meth:`Engine.poll_once`) drives it; other threads talk to it
through :meth:`Engine.call`.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from controllers import wire
from controllers.security import (
    NOBLOCK,
    ZAP_DOMAIN,
    ControllerAuthenticator,
    KeyPair,
    MonitorLog,
    check_id,
    load_allow_list,
    send_frames,
)
from controllers.store import DesiredRow, EngineStore, StagedGroup
from controllers.wire import Ack, Activation, PlanMsg, PlanRef, WireError
from engine.errors import GronvagError
from engine.plan import SignalPlan, encode_plan

log = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    endpoint: str  # bind address, e.g. tcp://127.0.0.1:5571
    state_dir: Path
    keys: KeyPair  # the engine's own key pair (secret needed)
    allow_dir: Path | None = None  # controllers' public keys, <id>.key
    allow: dict[bytes, str] | None = None  # or the allow-list itself (Z85 public key -> controller id)
    heartbeat_s: float = 5.0
    offline_after_s: float = 20.0
    retry_initial_s: float = 1.0
    retry_max_s: float = 30.0
    retry_max_tries: int = 8
    lease_s: float = 30.0
    activation: Activation = field(default_factory=Activation)
    max_batch: int = 2000  # messages handled per loop iteration before committing and sending
    # COMMIT (fsync) the store on a helper thread, so that the loop is not blocked by the fsync. Off by default: on the
    # 2-core development machine (shared with SUMO runs) it raised the paced p99 at 3000 plans/s (34-132 ms against
    # 11-42 ms in alternating runs; the helper waits for the GIL after each fsync) while raising the throughput at
    # saturation
    commit_thread: bool = False
    hwm: int = 10000
    meta: dict[str, str] = field(default_factory=dict)  # recorded in the store (scenario, plan file)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        if self.allow_dir is not None:
            self.allow_dir = Path(self.allow_dir)


@dataclass
class Peer:
    """What the engine knows about one controller."""

    cid: str
    desired: DesiredRow | None = None
    committed: bool = True  # desired row is durable (may be sent)
    online: bool = False
    last_seen: float = 0.0
    boot_id: str = ""
    mode: str | None = None
    last_accepted: PlanRef | None = None
    running: PlanRef | None = None
    tries: int = 0
    next_retry: float | None = None
    next_ping: float = 0.0  # time.monotonic() of the next PING (each controller on its own schedule)
    first_sent: float | None = None
    reissued_from: tuple[int, int] | None = None
    acks: dict[tuple[int, int, str], int] = field(default_factory=dict)
    alarms: dict[str, bool] = field(default_factory=dict)
    status: wire.Status | None = None

    @property
    def desired_ref(self) -> PlanRef | None:
        d = self.desired
        return None if d is None else PlanRef(epoch=d.epoch, seq=d.seq, sha256=d.sha256)


AckHook = Callable[["Engine", Peer, Ack, float | None], None]


class Engine:
    def __init__(self, cfg: EngineConfig, context: zmq.Context | None = None):
        self.cfg = cfg
        self.ctx = context or zmq.Context()
        self._own_ctx = context is None
        self._jitter = random.Random()  # its own generator: the engine's thread never touches the global one
        self.store = EngineStore(cfg.state_dir)
        self.epoch = self.store.begin_epoch(cfg.meta)
        self.peers: dict[str, Peer] = {}
        self._last_seq: dict[str, int] = self.store.last_seqs()
        for cid, row in self.store.load_desired().items():
            self.peers[cid] = Peer(cid, desired=row)
        self._to_send: set[str] = set()
        self._committer: ThreadPoolExecutor | None = None
        self._inflight: Future | None = None  # the group being written by the committer
        self._inflight_group: StagedGroup | None = None
        self._wake_r = self._wake_w = -1  # the committer's "done" byte wakes the loop's poller
        self._calls: queue.SimpleQueue[tuple[Callable[[Engine], Any], Future]] = queue.SimpleQueue()
        self._next_timers = 0.0
        self._nonce = 0
        self.on_ack: AckHook | None = None
        self.timers: list[tuple[float, Callable[[Engine], None]]] = []  # (period_s, fn) run from the loop
        self._timer_due: list[float] = []
        self.counts: dict[str, int] = {}
        self.auth: ControllerAuthenticator | None = None
        self._allowed_ids: set[str] = set()
        self.sock: zmq.Socket | None = None
        self.monitor: MonitorLog | None = None
        self.port: int | None = None
        log.info("engine epoch %d, state %s, %d stored desired plans", self.epoch, cfg.state_dir, len(self.peers))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        allow = self.cfg.allow if self.cfg.allow is not None else load_allow_list(self.cfg.allow_dir)
        if not allow:
            log.warning("the allow-list is empty: no controller can connect")
        self._allowed_ids = set(allow.values())
        self.auth = ControllerAuthenticator(self.ctx, allow)
        self.auth.start()
        s = self.ctx.socket(zmq.ROUTER)
        s.linger = 0
        s.curve_server = True
        s.curve_publickey = self.cfg.keys.public
        s.curve_secretkey = self.cfg.keys.secret
        s.zap_domain = ZAP_DOMAIN.encode()
        s.router_mandatory = 1
        s.router_handover = 1
        s.maxmsgsize = wire.MAX_FRAME_BYTES
        s.heartbeat_ivl = 2000
        s.heartbeat_timeout = 6000
        s.sndhwm = self.cfg.hwm
        s.rcvhwm = self.cfg.hwm
        self.monitor = MonitorLog(s, "engine")
        ep = self.cfg.endpoint
        if ep.endswith(":0"):
            self.port = s.bind_to_random_port(ep[: ep.rindex(":")])
        else:
            s.bind(ep)
            self.port = int(s.get(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1])
        self.sock = s
        self._poller = zmq.Poller()
        self._poller.register(s, zmq.POLLIN)
        self._poller.register(self.monitor.sock, zmq.POLLIN)
        if self.cfg.commit_thread:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            self._poller.register(self._wake_r, zmq.POLLIN)
            self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gronvag-engine-commit")
        log.info("engine listening on %s (CURVE, %d allowed controllers)", self.bound_endpoint, len(allow))

    @property
    def bound_endpoint(self) -> str:
        host = self.cfg.endpoint.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def reload_allow_list(self) -> int:
        """Re-read the allow-list. New keys may connect from now on; messages from controllers whose key was removed
        are dropped at once (ZAP itself is only asked at the next handshake)."""
        allow = load_allow_list(self.cfg.allow_dir) if self.cfg.allow_dir else dict(self.cfg.allow or {})
        revoked = self._allowed_ids - set(allow.values())
        if revoked:
            log.warning("allow-list: %d controller(s) removed: %s", len(revoked), ", ".join(sorted(revoked)[:20]))
        self._allowed_ids = set(allow.values())
        if self.auth is not None:
            self.auth.update(allow)
        return len(allow)

    def close(self) -> None:
        try:
            if self._inflight is not None:
                self._inflight.exception()  # wait for it (its plans are not sent any more)
                self._finish_commit()
            if self.store.dirty:
                self.store.commit()
        finally:
            if self._committer is not None:
                self._committer.shutdown(wait=True)
                self._committer = None
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
            if self.sock is not None:
                self.monitor.close(self.sock)
                self.sock.close(linger=0)
                self.sock = None
            if self.auth is not None:
                self.auth.stop()
                self.auth = None
            self.store.close()
            if self._own_ctx:
                self.ctx.term()

    def run(self, stop: threading.Event, until: float | None = None) -> None:
        if self.sock is None:
            self.start()
        while not stop.is_set() and (until is None or time.monotonic() < until):
            self.poll_once(0.02)

    # ------------------------------------------------------------------ cross-thread calls
    def call(self, fn: Callable[[Engine], Any], timeout: float = 5.0) -> Any:
        """Run ``fn(engine)`` on the engine's loop thread and return its result."""
        fut: Future = Future()
        self._calls.put((fn, fut))
        return fut.result(timeout=timeout)

    # ------------------------------------------------------------------ desired plans
    def publish(self, plans: Iterable[SignalPlan], *, activation: Activation | None = None,
                lease_s: float | None = None, force: bool = False) -> list[PlanRef]:
        """Make each plan the desired plan of the controller whose id is its signal_id. Unchanged plans (same sha256)
        are skipped unless ``force``. Staged now, committed and sent at the end of the current loop iteration."""
        act = activation or self.cfg.activation
        lease = float(lease_s if lease_s is not None else self.cfg.lease_s)
        out = []
        for plan in plans:
            body = encode_plan(plan)
            if len(body) > wire.MAX_PLAN_BYTES:
                raise GronvagError(f"plan for {plan.signal_id} is {len(body)} bytes; the limit is "
                                   f"{wire.MAX_PLAN_BYTES}")
            cid = check_id(plan.signal_id)
            peer = self.peers.get(cid) or self.peers.setdefault(cid, Peer(cid))
            sha = wire.plan_digest(body)
            if peer.desired is not None and peer.desired.sha256 == sha and not force:
                continue
            out.append(self._issue(peer, body, sha, act, lease))
        return out

    def _issue(self, peer: Peer, body: bytes, sha: str, act: Activation, lease_s: float) -> PlanRef:
        seq = self._last_seq.get(peer.cid, 0) + 1
        self._last_seq[peer.cid] = seq
        row = DesiredRow(peer.cid, self.epoch, seq, sha, body, act.kind, float(act.at_s), lease_s, "issued")
        self.store.stage_desired(row)
        peer.desired = row
        peer.committed = False
        peer.tries = 0
        peer.first_sent = None
        peer.next_retry = None
        self._to_send.add(peer.cid)
        self.counts["issued"] = self.counts.get("issued", 0) + 1
        log.debug("%s: desired plan %d/%d/%s", peer.cid, self.epoch, seq, sha[:12])
        return PlanRef(epoch=self.epoch, seq=seq, sha256=sha)

    def reissue(self, peer: Peer, why: str) -> PlanRef | None:
        """The desired body again under a fresh (epoch, seq)."""
        d = peer.desired
        if d is None:
            return None
        log.info("%s: reissuing plan %s as a fresh plan (%s)", peer.cid, d.sha256[:12], why)
        peer.reissued_from = (d.epoch, d.seq)
        return self._issue(peer, d.plan, d.sha256, Activation(kind=d.act_kind, at_s=d.act_at), d.lease_s)

    # ------------------------------------------------------------------ loop
    def poll_once(self, timeout_s: float = 0.02) -> None:
        events = dict(self._poller.poll(int(timeout_s * 1000)))
        if self._wake_r in events:
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
        if self.monitor.sock in events:
            self.monitor.drain()
        if self.sock in events:
            # receive until the queue is empty: one failed receive (zmq.Again) per batch costs less than reading
            # EVENTS before every message (each option read also makes libzmq call getpid() and poll())
            for _ in range(self.cfg.max_batch):
                try:
                    rid, parts, user = self._recv_message()
                except zmq.Again:
                    break
                try:
                    self._receive(rid, parts, user)
                except Exception:  # noqa: BLE001 - a bug handling one message must not stop the engine
                    log.exception("engine: error handling a message")
        while True:
            try:
                fn, fut = self._calls.get_nowait()
            except queue.Empty:
                break
            try:
                fut.set_result(fn(self))
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)
        now = time.monotonic()
        if now >= self._next_timers:
            self._next_timers = now + 0.05
            self._timers(now)
        self._flush()

    def _flush(self) -> None:
        """Commit what was staged (on the committer thread, or here), then send the plans whose rows are durable."""
        if self._inflight is not None:
            if not self._inflight.done():
                return  # what is staged meanwhile forms the next group
            self._finish_commit()
        if self.store.dirty:
            group = self.store.take()
            try:
                self.store.begin_write(group)  # the statements here (they need the GIL anyway), the fsync elsewhere
            except BaseException:
                self.store.restage(group)
                raise
            if self._committer is not None:
                self._inflight_group = group
                self._inflight = self._committer.submit(self.store.end_write)
                self._inflight.add_done_callback(self._wake)
                return
            try:
                self.store.end_write()
            except BaseException:
                self.store.restage(group)
                raise
            self._committed(group)
        self._send_durable()

    def _wake(self, _fut: Future) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # closed, or the pipe is full of wake-ups already
            pass

    def _finish_commit(self) -> None:
        fut, group = self._inflight, self._inflight_group
        self._inflight = self._inflight_group = None
        try:
            fut.result()
        except BaseException:
            self.store.restage(group)  # nothing of it was sent; written with the next group
            raise
        self._committed(group)
        self._send_durable()

    def _committed(self, group: StagedGroup) -> None:
        for row in group.rows:
            peer = self.peers.get(row.controller_id)
            if peer is not None and peer.desired is row:  # (a newer row staged meanwhile is not durable yet)
                peer.committed = True

    def _send_durable(self) -> None:
        if self._to_send:
            todo, self._to_send = self._to_send, set()
            for cid in todo:
                peer = self.peers[cid]
                if not peer.committed:
                    self._to_send.add(cid)  # its row is in a group being written or still staged
                elif peer.desired is not None and peer.desired.status == "issued":
                    self._send_plan(peer)

    def _timers(self, now: float) -> None:
        # every controller is pinged heartbeat_s (at most) after its last ping, each on its own schedule: PINGs to all
        # controllers at once came back as a burst of PONGs that stalled the engine's and the agents' loops for
        # 10-20 ms every heartbeat (measured with 1000 controllers: the plans' round-trip outliers came with them)
        hb = self.cfg.heartbeat_s
        for peer in self.peers.values():
            if peer.online and now >= peer.next_ping:
                if now - peer.last_seen > self.cfg.offline_after_s:
                    peer.online = False
                    log.info("%s: offline (silent for %.0f s)", peer.cid, now - peer.last_seen)
                else:
                    peer.next_ping = now + hb * self._jitter.uniform(0.9, 1.0)  # drift apart, never later than hb
                    self._nonce += 1
                    self._send(peer, wire.Ping(nonce=self._nonce, ts=time.time()))
            if peer.next_retry is not None and now >= peer.next_retry and peer.committed:
                d = peer.desired
                if d is None or d.status != "issued":
                    peer.next_retry = None
                elif peer.tries >= self.cfg.retry_max_tries:
                    peer.next_retry = None
                    log.warning("%s: plan %d/%d not acknowledged after %d tries; waiting for the controller",
                                peer.cid, d.epoch, d.seq, peer.tries)
                else:
                    self.counts["retries"] = self.counts.get("retries", 0) + 1
                    self._send_plan(peer)
        if self.timers:
            if len(self._timer_due) != len(self.timers):
                self._timer_due = [now + p for p, _ in self.timers]
            for i, (period, fn) in enumerate(self.timers):
                if now >= self._timer_due[i]:
                    self._timer_due[i] = now + period
                    try:
                        fn(self)
                    except Exception:  # noqa: BLE001
                        log.exception("engine timer failed")

    # ------------------------------------------------------------------ sending
    def _send(self, peer: Peer, msg: wire.Message) -> bool:
        try:
            send_frames(self.sock, [peer.cid.encode()] + wire.encode(msg))
            return True
        except zmq.Again:
            log.debug("%s: send queue full; %s not sent", peer.cid, type(msg).__name__)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            if peer.online:
                log.info("%s: not connected", peer.cid)
            peer.online = False
        return False

    def _send_plan(self, peer: Peer) -> None:
        d = peer.desired
        if not peer.committed:
            self._to_send.add(peer.cid)  # goes out after the commit
            return
        msg = PlanMsg(msg_id=wire.new_msg_id(), controller_id=peer.cid,
                      ref=PlanRef(epoch=d.epoch, seq=d.seq, sha256=d.sha256),
                      activation=Activation(kind=d.act_kind, at_s=d.act_at), lease_s=d.lease_s, plan=d.plan)
        now = time.monotonic()
        if self._send(peer, msg):
            if peer.first_sent is None:
                peer.first_sent = now
            peer.tries += 1
            self.counts["plans_sent"] = self.counts.get("plans_sent", 0) + 1
            backoff = min(self.cfg.retry_max_s, self.cfg.retry_initial_s * 2 ** (peer.tries - 1))
            peer.next_retry = now + backoff * self._jitter.uniform(0.8, 1.2)
        else:
            # queue full: try again soon; not connected: wait for its HELLO
            peer.next_retry = now + self.cfg.retry_initial_s if peer.online else None

    # ------------------------------------------------------------------ receiving
    def _recv_message(self, max_parts: int = 8) -> tuple[bytes, list[bytes], str]:
        """One whole message: (routing id, the peer's frames (at most ``max_parts`` kept), the ZAP User-Id of its
        CURVE key, "" if none). Frames are received as zmq.Frames and copied as bytes: a Frame's ``more`` flag costs
        less than the RCVMORE socket option (an enum conversion inside ``Socket.get``), and the first frame from the
        peer carries the connection's metadata."""
        sock = self.sock
        frame = sock.recv(NOBLOCK, copy=False)
        rid = frame.bytes
        parts: list[bytes] = []
        user = ""
        if frame.more:
            frame = sock.recv(copy=False)
            try:
                user = frame.get("User-Id")
            except zmq.ZMQError:
                user = ""
            parts.append(frame.bytes)
            while frame.more:
                frame = sock.recv(copy=False)
                if len(parts) < max_parts:
                    parts.append(frame.bytes)
        return rid, parts, user

    def _receive(self, rid: bytes, parts: list[bytes], user: str) -> None:
        cid = rid.decode("ascii", "replace")
        self.counts["received"] = self.counts.get("received", 0) + 1
        if not user or user != cid:
            # with ROUTER_HANDOVER any authenticated peer could claim another's routing id: refuse it
            self.counts["identity_mismatch"] = self.counts.get("identity_mismatch", 0) + 1
            log.warning("engine: message with routing id %r from key of %r dropped (identity mismatch)", cid[:64],
                        user)
            if user:
                self._send_raw(rid, wire.Error(code="IDENTITY", text="routing id does not match the key's id"))
            return
        if cid not in self._allowed_ids:
            self.counts["revoked"] = self.counts.get("revoked", 0) + 1
            log.warning("%s: message dropped: the controller's key is no longer on the allow-list", cid)
            return
        peer = self.peers.get(cid) or self.peers.setdefault(cid, Peer(cid))
        try:
            msg = wire.decode(parts, wire.TO_ENGINE)
        except WireError as exc:
            self.counts["malformed"] = self.counts.get("malformed", 0) + 1
            log.warning("%s: dropped malformed message: %s", cid, exc)
            if not (len(parts) >= 2 and parts[1] == b"ERROR"):
                self._send(peer, wire.Error(code=exc.code, text=exc.text))
            return
        body_id = getattr(msg, "controller_id", cid)
        if body_id != cid:
            self.counts["identity_mismatch"] = self.counts.get("identity_mismatch", 0) + 1
            log.warning("%s: message claims controller id %r; dropped", cid, body_id)
            self._send(peer, wire.Error(code="IDENTITY", text=f"controller_id {body_id!r} is not yours"))
            return
        now = time.monotonic()
        if not peer.online:
            peer.online = True
            # its first PING within a heartbeat, spread over the second half of it (controllers connecting together
            # are not all pinged together)
            peer.next_ping = now + self.cfg.heartbeat_s * self._jitter.uniform(0.5, 1.0)
        peer.last_seen = now
        if isinstance(msg, Ack):
            self._on_ack(peer, msg, now)
        elif isinstance(msg, wire.Hello):
            self._on_hello(peer, msg)
        elif isinstance(msg, wire.Pong):
            self._note(peer, msg.mode, msg.last_accepted, msg.running)
            self._sync(peer, hello=False)
        elif isinstance(msg, wire.Status):
            peer.status = msg
            self._note(peer, msg.mode, msg.last_accepted, msg.running)
            self._sync(peer, hello=False)
        elif isinstance(msg, wire.Alarm):
            peer.alarms[msg.code] = msg.active
            (log.warning if msg.active else log.info)("%s: alarm %s %s: %s", cid, msg.code,
                                                      "raised" if msg.active else "cleared", msg.text)
        elif isinstance(msg, wire.Ping):
            self._send(peer, wire.Pong(nonce=msg.nonce, ts=time.time()))
        elif isinstance(msg, wire.Error):
            log.warning("%s: controller reports error %s: %s", cid, msg.code, msg.text)

    def _send_raw(self, rid: bytes, msg: wire.Message) -> None:
        try:
            send_frames(self.sock, [rid] + wire.encode(msg))
        except zmq.ZMQError:
            pass

    @staticmethod
    def _note(peer: Peer, mode: str | None, last: PlanRef | None, running: PlanRef | None) -> None:
        if mode is not None:
            if peer.mode is not None and mode != peer.mode:
                log.info("%s: now in %s mode", peer.cid, mode)
            peer.mode = mode
            peer.last_accepted = last
            peer.running = running

    def _on_hello(self, peer: Peer, msg: wire.Hello) -> None:
        if msg.boot_id != peer.boot_id:
            log.info("%s: hello (boot %s, mode %s, last accepted %s)", peer.cid, msg.boot_id[:8], msg.mode,
                     wire.ref_or_none(msg.last_accepted))
            d = peer.desired
            if d is not None and d.status == "rejected" and peer.boot_id:
                # the controller restarted, perhaps with a corrected configuration: offer the plan once more
                log.info("%s: offering the rejected plan %d/%d again after the controller's restart", peer.cid,
                         d.epoch, d.seq)
                d.status = "issued"
                peer.tries = 0
        peer.boot_id = msg.boot_id
        self._note(peer, msg.mode, msg.last_accepted, msg.running)
        self._send(peer, wire.Welcome(epoch=self.epoch, heartbeat_s=self.cfg.heartbeat_s, server_time=time.time()))
        self._sync(peer, hello=True)

    def _sync(self, peer: Peer, hello: bool) -> None:
        """Bring the controller to the desired plan, given what it last reported."""
        d = peer.desired
        if d is None or d.status == "rejected" or peer.mode is None:
            return
        want = peer.desired_ref
        have = peer.last_accepted
        if have == want:
            if peer.mode == "fallback":
                if peer.committed:
                    self.reissue(peer, "controller is in fallback mode")
                return
            if d.status == "issued":
                self._mark(peer, "accepted")
            if peer.running == want and d.status != "applied":
                self._mark(peer, "applied")
            return
        if have is not None and have.key() > want.key():
            if peer.committed and (self.epoch, self._last_seq.get(peer.cid, 0) + 1) > have.key():
                self.reissue(peer, f"controller has a newer plan {have.short()} than the engine's {want.short()}")
            elif peer.committed:
                log.error("%s: controller's plan %s is newer than anything this engine (epoch %d) can issue",
                          peer.cid, have.short(), self.epoch)
            return
        if d.status != "issued":
            # the controller lost a plan it had acknowledged (e.g. a reset state): send it again
            d.status = "issued"
            peer.tries = 0
        if hello or peer.next_retry is None:
            peer.tries = 0
            self._send_plan(peer)

    def _mark(self, peer: Peer, status: str, reason: str = "") -> None:
        d = peer.desired
        d.status = status
        d.reason = reason
        peer.next_retry = None
        self.store.stage_status(peer.cid, d.epoch, d.seq, d.sha256, status, reason)

    def _on_ack(self, peer: Peer, ack: Ack, now: float) -> None:
        key = (ack.ref.epoch, ack.ref.seq, ack.status)
        peer.acks[key] = peer.acks.get(key, 0) + 1
        if len(peer.acks) > 256:  # a bounded recent history (tests and diagnostics)
            del peer.acks[next(iter(peer.acks))]
        self.counts["ack_" + ack.status] = self.counts.get("ack_" + ack.status, 0) + 1
        self._note(peer, ack.mode, ack.last_accepted, ack.running)
        d = peer.desired
        want = ack.ref  # (if it is the desired plan's: compared field by field, without making peer.desired_ref)
        latency = None
        if d is None or want.seq != d.seq or want.epoch != d.epoch or want.sha256 != d.sha256:
            log.debug("%s: %s for plan %s (desired %s)", peer.cid, ack.status, ack.ref.short(),
                      wire.ref_or_none(peer.desired_ref))
            if self.on_ack is not None:
                self.on_ack(self, peer, ack, None)
            return
        st = ack.status
        if st in ("accepted", "duplicate", "rejected") and d.status == "issued" and peer.first_sent is not None:
            latency = now - peer.first_sent
        if st == "accepted" or (st == "duplicate" and d.status == "issued"):
            self._mark(peer, "accepted")
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: plan %s accepted", peer.cid, want.short())
            if st == "duplicate" and ack.mode == "fallback":
                self.reissue(peer, "controller is in fallback mode")
        elif st == "applied":
            self._mark(peer, "applied")
            if log.isEnabledFor(logging.INFO):
                log.info("%s: plan %s applied", peer.cid, want.short())
        elif st == "rejected":
            self._mark(peer, "rejected", ack.reason)
            log.error("%s: plan %s REJECTED: %s", peer.cid, want.short(), ack.reason)
        elif st == "superseded":
            peer.next_retry = None
            if peer.committed and ack.last_accepted is not None and \
                    (self.epoch, self._last_seq.get(peer.cid, 0) + 1) > ack.last_accepted.key():
                self.reissue(peer, f"controller had newer plan {ack.last_accepted.short()}")
            else:
                log.error("%s: plan %s superseded by the controller's %s", peer.cid, want.short(),
                          wire.ref_or_none(ack.last_accepted))
        if self.on_ack is not None:
            self.on_ack(self, peer, ack, latency)

    # ------------------------------------------------------------------ views (for tests and tools)
    def summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for cid, p in self.peers.items():
            out[cid] = {
                "desired": p.desired_ref, "status": p.desired.status if p.desired else None,
                "reason": p.desired.reason if p.desired else "", "online": p.online, "mode": p.mode,
                "last_accepted": p.last_accepted, "running": p.running, "acks": dict(p.acks),
                "alarms": dict(p.alarms),
            }
        return out
