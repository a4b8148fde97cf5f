"""The controller agent: one DEALER per intersection controller, talking GVCP/1 to the engine's ROUTER.

Rules:

* A PLAN is accepted only if its (epoch, seq) is newer than the last accepted one, its sha256 matches its canonical
  body, and it passes :func:`engine.safety.check_plan` under the local spec, with a safe transition into it from the
  running plan and back out of it to the fallback plan. Unsafe plans are rejected whole; the running plan keeps going.
* An accepted plan is written to disk (atomically, fsynced) *before* ACK ``accepted``; the runner switches at a safe
  transition point, the state is written again and ACK ``applied`` follows. A plan is applied at most once.
* The same (epoch, seq, sha256) again gets ``duplicate`` (with the stored status); an older one ``superseded``. A
  pending plan (accepted, not yet applied) that a newer one replaces is never applied; the newer plan's ACK says so.
* Validity period (the plan's ``valid_from_s``/``valid_to_s``, in signal time; with a :class:`DayClock` in seconds of
  the day the plan arrives, a window past 86400 reaching into the next day): a plan whose period has ended is
  rejected; one whose period has not begun is accepted and held, and switched to at the first safe point from
  ``valid_from_s`` on, not before its activation point (``AgentConfig.hold_until_valid``). A running plan is not cut
  at its ``valid_to_s`` (as with SUMO's WAUTs the next period's plan replaces it; the lease bounds a silent engine).
* Lease: every PLAN, PING or WELCOME from the engine renews it. When it runs out the agent reverts to its fallback
  plan, reports ``fallback`` mode and raises the ``LEASE_EXPIRED`` alarm; only a fresh PLAN (newer seq) brings
  central control back.

:class:`ControllerAgent` is event-driven (no threads of its own); :class:`controllers.host.AgentHost` runs one or many
agents in one thread, so a process can host one controller (``gronvag controller``) or hundreds (a gateway, the
benchmark).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import zmq

from controllers import wire
from controllers.security import EVENTS, POLLIN, KeyPair, MonitorLog, recv_frames, send_frames
from controllers.signal import PlanRunner, Switch, TransitionCache, find_transition
from controllers.state import ControllerState, StateDB, StateFile, StoredPlan
from controllers.wire import Ack, Activation, PlanMsg, PlanRef, WireError
from engine.plan import SignalPlan, decode_plan, encode_plan
from engine.safety import SignalSpec, check_plan_bits

log = logging.getLogger(__name__)

FALLBACK_KEY = "fallback"
LEASE_ALARM = "LEASE_EXPIRED"
_plan_decoder = msgspec.json.Decoder(SignalPlan)


class DayClock:
    """Signal time in seconds since midnight UTC of the start day (continuous past midnight), optionally sped up."""

    period_s = 86400.0  # plans' validity periods are times of the day

    def __init__(self, scale: float = 1.0, start_s: float | None = None):
        now = time.time()
        self.scale = float(scale)
        self._base = (now % 86400.0) if start_s is None else float(start_s)
        self._mono0 = time.monotonic()

    def __call__(self) -> float:
        return self._base + (time.monotonic() - self._mono0) * self.scale

    def monotonic_at(self, t_s: float) -> float:
        """The ``time.monotonic()`` value at which this clock reaches signal time ``t_s`` (lets a host sleep until a
        controller's next second of interest instead of polling the clock)."""
        if self.scale <= 0.0:
            return math.inf
        return self._mono0 + (t_s - self._base) / self.scale


def validity(plan: SignalPlan, t_s: float, period_s: float | None = None) -> tuple[str, float]:
    """Where signal time ``t_s`` stands in ``plan``'s validity period [valid_from_s, valid_to_s): ("valid", t_s),
    ("not_yet", signal time it begins) or ("ended", signal time it ended). With ``period_s`` (a day clock) the period
    is read in the day ``t_s`` falls in; a period ending past ``period_s`` reaches into the next day."""
    a, b = plan.valid_from_s, plan.valid_to_s
    base = 0.0
    if period_s:
        base = t_s - t_s % period_s
        if b > period_s and t_s - base < b - period_s:
            return "valid", t_s  # yesterday's period, still open
    if t_s >= base + b:
        return "ended", base + b
    if t_s < base + a:
        return "not_yet", base + a
    return "valid", t_s


@dataclass
class AgentConfig:
    controller_id: str
    endpoint: str
    keys: KeyPair  # own key pair (secret needed)
    engine_public: bytes  # pinned Z85 public key of the engine
    state_dir: Path
    fallback: SignalPlan
    spec: SignalSpec
    signal_id: str = ""  # the plans' signal_id this controller runs; default: controller_id
    clock: Callable[[], float] = field(default_factory=DayClock)
    hello_after_s: float = 3.0  # re-send HELLO when the engine has been silent this long
    status_interval_s: float = 10.0
    reconnect_ivl_ms: int = 500
    reconnect_ivl_max_ms: int = 5000
    fsync: bool = True
    hold_until_valid: bool = True  # hold a plan whose validity period has not begun (ended periods are always refused)

    def __post_init__(self) -> None:
        self.signal_id = self.signal_id or self.controller_id
        self.state_dir = Path(self.state_dir)


class ControllerAgent:
    def __init__(self, cfg: AgentConfig, context: zmq.Context, *, cache: TransitionCache | None = None,
                 db: StateDB | None = None):
        self.cfg = cfg
        self.id = cfg.controller_id
        self.ctx = context
        self.sock: zmq.Socket | None = None
        self.monitor: MonitorLog | None = None
        self.cache = cache or TransitionCache()
        self.store = StateFile(cfg.state_dir, self.id, fsync=cfg.fsync, db=db)
        # with a shared (group-committed) store, messages wait in the outbox until the host has committed
        self._outbox: list[tuple[wire.Message, bool]] | None = None
        self._notify: Callable[[ControllerAgent], None] | None = None
        self.state: ControllerState = self.store.load()
        self.boot_id = uuid.uuid4().hex
        self.engine_epoch: int | None = None
        self.connected = False
        self.applied_log: list[tuple[PlanRef, int]] = []  # (plan, signal time) of every switch to a central plan
        self.counts: dict[str, int] = {}
        self._alarms: dict[str, str] = {}  # active alarm code -> text
        self._last_rx = time.monotonic()
        self._last_hello = 0.0
        self._hello_after = cfg.hello_after_s
        self._last_status = 0.0
        self._lease_deadline = 0.0
        # a clock that tells when its seconds begin lets a host tick this agent only when something is due
        self._clock_at: Callable[[float], float] | None = getattr(cfg.clock, "monotonic_at", None)
        self._unsent: list[wire.Message] = []  # notifications to repeat after the next WELCOME
        self._valid_memo: dict[str, tuple[str, ...]] = {}
        self._start_runner()

    # ------------------------------------------------------------------ start-up
    def _start_runner(self) -> None:
        st = self.state
        st.boots += 1
        st.applied = ()  # a history of applied plans written by earlier versions: nothing reads it, no longer kept
        # a rejection is answered again only within one boot: the local configuration may have changed since
        st.rejected, st.rejected_reason = None, ""
        t0 = int(self.cfg.clock())
        now = time.time()
        central: SignalPlan | None = None
        if st.mode == "central" and st.accepted is not None:
            if st.lease_expires_unix > now:
                try:
                    central = decode_plan(st.accepted.plan)
                except msgspec.MsgspecError as exc:
                    log.error("%s: stored plan unreadable (%s); using the fallback plan", self.id, exc)
            else:
                log.warning("%s: lease of stored plan %s expired while down; starting on the fallback plan",
                            self.id, st.accepted.ref.short())
                self._alarms[LEASE_ALARM] = "lease expired while the controller was down"
        if central is not None:
            ref = st.accepted.ref
            self._lease_deadline = time.monotonic() + (st.lease_expires_unix - now)
            if st.accepted_status == "applied":
                self.runner = PlanRunner(central, self.cfg.spec, t0, key=ref, cache=self.cache)
                log.info("%s: resumed plan %s (lease %.1f s left)", self.id, ref.short(), st.lease_expires_unix - now)
                self.store.save(st)
                return
            # accepted before the restart, never applied: start on the fallback plan and switch as planned; if no
            # safe switch from the fallback exists, power-up is the safe point
            fallback_runner = PlanRunner(self.cfg.fallback, self.cfg.spec, t0, key=FALLBACK_KEY, cache=self.cache)
            if fallback_runner.reachable(central) is not None:
                self.runner = fallback_runner
                kind, at_s = self._activation(central, st.accepted.activation)
                self.runner.request(central, key=ref, activation=kind, at_s=at_s)
                log.info("%s: plan %s accepted before the restart; switching to it as planned", self.id, ref.short())
                self.store.save(st)
            else:
                self.runner = PlanRunner(central, self.cfg.spec, t0, key=ref, cache=self.cache)
                self._applied(ref, t0, resumed=True)
        else:
            st.mode = "fallback"
            self.runner = PlanRunner(self.cfg.fallback, self.cfg.spec, t0, key=FALLBACK_KEY, cache=self.cache)
            log.info("%s: running the fallback plan", self.id)
            self.store.save(st)

    def start(self) -> None:
        s = self.ctx.socket(zmq.DEALER)
        s.linger = 0
        s.routing_id = self.id.encode("ascii")
        s.immediate = 1
        s.curve_publickey = self.cfg.keys.public
        s.curve_secretkey = self.cfg.keys.secret
        s.curve_serverkey = self.cfg.engine_public
        s.maxmsgsize = wire.MAX_FRAME_BYTES
        s.reconnect_ivl = self.cfg.reconnect_ivl_ms
        s.reconnect_ivl_max = self.cfg.reconnect_ivl_max_ms
        s.heartbeat_ivl = 2000
        s.heartbeat_timeout = 6000
        s.sndhwm = 1000
        s.rcvhwm = 1000
        self.monitor = MonitorLog(s, f"controller {self.id}", on_event=self._on_monitor)
        s.connect(self.cfg.endpoint)
        self.sock = s

    def close(self) -> None:
        if self.sock is not None:
            if self.monitor is not None:
                self.monitor.close(self.sock)
            self.sock.close(linger=0)
            self.sock = None
        self.store.close()

    # ------------------------------------------------------------------ properties
    @property
    def mode(self) -> str:
        return self.state.mode

    @property
    def running_ref(self) -> PlanRef | None:
        return self.runner.key if isinstance(self.runner.key, PlanRef) else None

    @property
    def last_accepted(self) -> PlanRef | None:
        return self.state.accepted.ref if self.state.accepted else None

    # ------------------------------------------------------------------ sending
    def defer_sends(self, notify: Callable[[ControllerAgent], None]) -> None:
        """Hold outgoing messages until :meth:`flush` (called by the host after its group commit)."""
        self._outbox = []
        self._notify = notify

    def flush(self) -> None:
        self.send_out(self.take_outbox())

    def take_outbox(self) -> list[tuple[wire.Message, bool]]:
        """The messages held so far (a host sends them with :meth:`send_out` once the states they follow are
        durable); later ones are held anew."""
        out, self._outbox = self._outbox, []
        return out or []

    def send_out(self, out: list[tuple[wire.Message, bool]]) -> None:
        for msg, keep in out:
            self._send_now(msg, keep)

    def _send(self, msg: wire.Message, *, keep: bool = False) -> bool:
        if self._outbox is not None:
            if not self._outbox:
                self._notify(self)
            self._outbox.append((msg, keep))
            return True
        return self._send_now(msg, keep)

    def _send_now(self, msg: wire.Message, keep: bool) -> bool:
        if self.sock is None:
            if keep:
                self._keep(msg)
            return False
        try:
            send_frames(self.sock, wire.encode(msg))
            return True
        except zmq.Again:
            if keep:
                self._keep(msg)
            log.debug("%s: engine not connected; %s not sent", self.id, type(msg).__name__)
            return False

    def _keep(self, msg: wire.Message) -> None:
        self._unsent = (self._unsent + [msg])[-32:]  # resent after the next WELCOME; bounded

    def _ack(self, msg: PlanMsg, status: str, reason: str = "", ref: PlanRef | None = None, *,
             keep: bool = False) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        self._send(Ack(msg_id=wire.new_msg_id(), ack_of=msg.msg_id, controller_id=self.id, ref=ref or msg.ref,
                       status=status, mode=self.state.mode, reason=reason[: wire.MAX_TEXT],
                       last_accepted=self.last_accepted, running=self.running_ref,
                       at_s=max(0.0, float(self.runner.t_s))), keep=keep)

    def _hello(self) -> None:
        self._last_hello = time.monotonic()
        self._send(wire.Hello(controller_id=self.id, boot_id=self.boot_id, mode=self.state.mode,
                              signal_id=self.cfg.signal_id, last_accepted=self.last_accepted,
                              running=self.running_ref))

    def status_msg(self) -> wire.Status:
        lease_left = max(0.0, self._lease_deadline - time.monotonic()) if self.state.mode == "central" else 0.0
        pend = self.runner.pending_key
        return wire.Status(controller_id=self.id, mode=self.state.mode, running=self.running_ref,
                           pending=pend if isinstance(pend, PlanRef) else None, last_accepted=self.last_accepted,
                           phase_index=self.runner.phase, state=self.runner.state[:512],
                           program_s=self.runner.program_s, lease_remaining_s=lease_left,
                           alarms=tuple(sorted(self._alarms)))

    def _status(self) -> None:
        self._last_status = time.monotonic()
        self._send(self.status_msg())

    def _alarm(self, code: str, active: bool, text: str) -> None:
        if active:
            self._alarms[code] = text
        else:
            self._alarms.pop(code, None)
        self._send(wire.Alarm(controller_id=self.id, code=code, active=active, event_ts=time.time(),
                              text=text[: wire.MAX_TEXT]))

    # ------------------------------------------------------------------ receiving
    def _on_monitor(self, event: str) -> None:
        if event == "HANDSHAKE_SUCCEEDED":
            self.connected = True
            self._hello()
        elif event in ("DISCONNECTED", "HANDSHAKE_FAILED_PROTOCOL", "HANDSHAKE_FAILED_AUTH",
                       "HANDSHAKE_FAILED_NO_DETAIL"):
            self.connected = False

    def on_readable(self, limit: int = 100, *, until_answer: bool = False, recv_first: bool = False) -> bool:
        """Handle up to ``limit`` waiting messages; True if more may be waiting.

        ``until_answer``: stop (returning False) after a message whose answer waits in the outbox; for a host that
        sends the outbox in the same loop iteration and then looks at the socket itself (:meth:`AgentHost._send_outs`),
        which makes this method's own look after that message redundant (each look at ``EVENTS`` also makes libzmq
        call getpid() and poll()).

        ``recv_first``: receive the first message without reading ``EVENTS`` before it, for a caller whose selector has
        just reported the socket (then a message is nearly always there; a receive that finds none raises zmq.Again,
        caught here, which costs two to three times an ``EVENTS`` read)."""
        sock = self.sock
        if sock is None:
            return False
        look = not recv_first
        for _ in range(limit):
            if look and not sock.get(EVENTS) & POLLIN:  # cheaper than a recv that raises Again
                return False
            look = True
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                return False
            self.handle(frames)
            if until_answer and self._outbox:
                return False
        return bool(sock.get(EVENTS) & POLLIN)

    def handle(self, frames: list[bytes]) -> None:
        """Process one received message (all frames). Never raises for bad input: logs it and answers ERROR."""
        try:
            msg = wire.decode(frames, wire.TO_CONTROLLER)
        except WireError as exc:
            self.counts["malformed"] = self.counts.get("malformed", 0) + 1
            log.warning("%s: dropped malformed message from the engine: %s", self.id, exc)
            if not (len(frames) >= 2 and frames[1] == b"ERROR"):
                self._send(wire.Error(code=exc.code, text=exc.text))
            return
        self._last_rx = time.monotonic()
        # the runner up to the second before this one, as regular ticks would have left it (a host may tick this agent
        # only when something is due): a plan requested now may still switch at this second's boundary, as before
        t = int(self.cfg.clock()) - 1
        if t > self.runner.t_s:
            self._advance(t)
        if isinstance(msg, PlanMsg):
            self._renew_lease()
            self._on_plan(msg)
        elif isinstance(msg, wire.Ping):
            self._renew_lease()
            self._send(wire.Pong(nonce=msg.nonce, ts=time.time(), mode=self.state.mode,
                                 last_accepted=self.last_accepted, running=self.running_ref))
        elif isinstance(msg, wire.Welcome):
            self._on_welcome(msg)
        elif isinstance(msg, wire.Error):
            log.warning("%s: engine reports error %s: %s", self.id, msg.code, msg.text)
        # PONG: liveness only (already recorded in _last_rx)

    def _on_welcome(self, msg: wire.Welcome) -> None:
        if self.engine_epoch != msg.epoch:
            log.info("%s: connected to engine epoch %d", self.id, msg.epoch)
        self.engine_epoch = msg.epoch
        # the engine pings every heartbeat_s: only a silence of several heartbeats calls for a new HELLO
        self._hello_after = max(self.cfg.hello_after_s, 2.5 * msg.heartbeat_s)
        self._renew_lease()
        unsent, self._unsent = self._unsent, []
        for m in unsent:
            self._send(m)
        for code, text in self._alarms.items():
            self._send(wire.Alarm(controller_id=self.id, code=code, active=True, event_ts=time.time(), text=text))
        self._status()

    # ------------------------------------------------------------------ plans
    def _validate(self, msg: PlanMsg) -> tuple[SignalPlan | None, list[str], tuple[str, float] | None]:
        """(the plan, its errors, where the signal clock stood in its validity period when it was checked: reused for
        its activation, see :meth:`_activation`)."""
        if wire.plan_digest(msg.plan) != msg.ref.sha256:
            return None, ["sha256 does not match the plan body"], None
        try:
            plan = _plan_decoder.decode(msg.plan)  # as engine.plan.decode_plan, with a reused decoder
        except msgspec.MsgspecError as exc:
            return None, [f"plan body is not a {self.cfg.signal_id} plan: {exc}"], None
        memo = self._valid_memo.get(msg.ref.sha256)
        errs = None if memo is None else list(memo)
        if errs is None:
            if encode_plan(plan) != msg.plan:
                errs = ["plan body is not in canonical form"]
            elif plan.signal_id != self.cfg.signal_id:
                errs = [f"plan is for signal {plan.signal_id!r}; this controller runs {self.cfg.signal_id!r}"]
            else:
                errs, bits = check_plan_bits(plan, self.cfg.spec)
                if bits is not None and not errs:
                    self.cache.add_bits(plan, bits, self.cfg.spec, clean=True)  # the transition checks below reuse them
            if len(self._valid_memo) >= 16:  # recurring plans; kept small (live objects cost every full GC)
                self._valid_memo.clear()
            self._valid_memo[msg.ref.sha256] = tuple(errs)
        if errs:
            return plan, errs, None
        valid = validity(plan, self.cfg.clock(), getattr(self.cfg.clock, "period_s", None))
        if valid[0] == "ended":
            return plan, [f"its validity period [{plan.valid_from_s:g}, {plan.valid_to_s:g}) s ended at signal time "
                          f"{valid[1]:g} s"], valid
        if self.runner.reachable(plan) is None:
            return plan, [f"no safe transition from the running plan ({self._key_name(self.runner.key)}) into it"], \
                valid
        if find_transition(plan, self.cfg.fallback, self.cfg.spec, cache=self.cache) is None:
            return plan, ["no safe transition from it back to the fallback plan"], valid
        return plan, [], valid

    @staticmethod
    def _key_name(key: Hashable) -> str:
        return key.short() if isinstance(key, PlanRef) else str(key)

    def _on_plan(self, msg: PlanMsg) -> None:
        st = self.state
        ref = msg.ref
        if msg.controller_id != self.id:
            log.warning("%s: PLAN %s addressed to %s rejected", self.id, ref.short(), msg.controller_id)
            self._ack(msg, "rejected", f"addressed to {msg.controller_id}, this is {self.id}")
            return
        last = st.accepted.ref if st.accepted else None
        if last is not None and ref.key() == last.key():
            if ref.sha256 == last.sha256:
                log.debug("%s: duplicate PLAN %s (%s)", self.id, ref.short(), st.accepted_status)
                self._ack(msg, "duplicate", f"already {st.accepted_status}")
            else:
                log.error("%s: PLAN %s conflicts with accepted %s (same epoch/seq, other hash); rejected", self.id,
                          ref.short(), last.short())
                self._ack(msg, "rejected", f"(epoch, seq) already used by plan {last.sha256}")
            return
        if st.rejected is not None and st.rejected == ref:
            self._ack(msg, "rejected", st.rejected_reason)
            return
        if last is not None and ref.key() < last.key():
            log.info("%s: PLAN %s is older than accepted %s: superseded", self.id, ref.short(), last.short())
            self._ack(msg, "superseded", f"newer plan {last.epoch}/{last.seq} already accepted")
            return
        plan, errs, valid = self._validate(msg)
        if errs:
            reason = "; ".join(errs)
            log.warning("%s: rejected PLAN %s: %s", self.id, ref.short(), reason)
            st.rejected, st.rejected_reason = ref, reason[: wire.MAX_TEXT]
            self.store.save(st)
            self._ack(msg, "rejected", reason)
            return
        if st.accepted_status == "accepted" and log.isEnabledFor(logging.DEBUG):
            # a plan accepted but not yet applied is replaced: it will never run. No message of its own: this ACK's
            # last_accepted tells the engine (which only ever waits for its latest plan)
            log.debug("%s: pending plan %s superseded by %s before it was applied", self.id,
                      st.accepted.ref.short(), ref.short())
        st.accepted = StoredPlan(ref=ref, plan=msg.plan, activation=msg.activation, lease_s=msg.lease_s,
                                 msg_id=msg.msg_id)
        st.accepted_status = "accepted"
        st.mode = "central"
        st.lease_expires_unix = time.time() + msg.lease_s
        self._lease_deadline = time.monotonic() + msg.lease_s
        self.store.save(st)  # durable before ACCEPTED
        self._ack(msg, "accepted")
        if log.isEnabledFor(logging.DEBUG):  # (the arguments alone cost a few microseconds per plan)
            log.debug("%s: accepted PLAN %s (activation %s)", self.id, ref.short(), msg.activation.kind)
        self._request(plan, ref, msg.activation, valid)
        if LEASE_ALARM in self._alarms:
            self._alarm(LEASE_ALARM, False, f"central control restored by plan {ref.short()}")
            self._status()

    def _request(self, plan: SignalPlan, ref: PlanRef, act: Activation,
                 valid: tuple[str, float] | None = None) -> None:
        if self.runner.key == ref:
            return
        if isinstance(self.runner.key, PlanRef) and self.runner.plan == plan:
            # the running central plan again under a newer (epoch, seq): nothing to switch, it is applied as it stands
            self.runner.relabel(ref)
            self._applied(ref, self.runner.t_s)
            return
        kind, at_s = self._activation(plan, act, valid)
        if kind != act.kind or at_s != act.at_s:
            log.info("%s: plan %s held until its validity period begins at signal time %g s", self.id, ref.short(),
                     at_s)
        self.runner.request(plan, key=ref, activation=kind, at_s=at_s)

    def _activation(self, plan: SignalPlan, act: Activation,
                    valid: tuple[str, float] | None = None) -> tuple[str, float]:
        """The plan's activation, held to the start of its validity period if that is later. ``valid``: the plan's
        :func:`validity` as :meth:`_validate` just read it (else read now)."""
        if not self.cfg.hold_until_valid:
            return act.kind, act.at_s
        where, start = valid or validity(plan, self.cfg.clock(), getattr(self.cfg.clock, "period_s", None))
        start = float(math.ceil(start))  # the runner counts whole seconds
        if where != "not_yet" or (act.kind == "at" and act.at_s >= start):
            return act.kind, act.at_s
        return "at", start

    def _applied(self, ref: PlanRef, t_s: int, resumed: bool = False) -> None:
        st = self.state
        st.accepted_status = "applied"
        self.store.save(st)
        self.applied_log.append((ref, t_s))
        self.counts["applied"] = self.counts.get("applied", 0) + 1
        if log.isEnabledFor(logging.INFO):
            log.info("%s: applied plan %s at t=%d s%s", self.id, ref.short(), t_s,
                     " (on start-up, accepted before a restart)" if resumed else "")
        acc = st.accepted
        ack = Ack(msg_id=wire.new_msg_id(), ack_of=acc.msg_id, controller_id=self.id, ref=ref, status="applied",
                  mode=st.mode, last_accepted=ref, running=ref, at_s=float(max(0, t_s)))
        self._send(ack, keep=True)

    def _on_switch(self, sw: Switch) -> None:
        if isinstance(sw.to_key, PlanRef):
            if self.state.accepted is not None and sw.to_key == self.state.accepted.ref:
                self._applied(sw.to_key, sw.t_s)  # the ACK carries the new running plan and mode
        elif sw.to_key == FALLBACK_KEY:
            log.info("%s: fallback plan running from t=%d s", self.id, sw.t_s)
            self._status()

    # ------------------------------------------------------------------ lease
    def _renew_lease(self) -> None:
        st = self.state
        if st.mode != "central" or st.accepted is None:
            return
        lease = st.accepted.lease_s
        self._lease_deadline = time.monotonic() + lease
        expires = time.time() + lease
        if expires - st.lease_expires_unix > lease / 4:  # persist the renewal now and then, not on every ping
            st.lease_expires_unix = expires
            self.store.save(st)

    def _expire_lease(self) -> None:
        st = self.state
        ref = st.accepted.ref if st.accepted else None
        log.warning("%s: lease of plan %s ran out (no PLAN/PING from the engine); reverting to the fallback plan",
                    self.id, wire.ref_or_none(ref))
        st.mode = "fallback"
        self.store.save(st)
        if self.runner.key == FALLBACK_KEY:
            self.runner.cancel()
        else:
            self.runner.request(self.cfg.fallback, key=FALLBACK_KEY, activation="asap")
        self._alarm(LEASE_ALARM, True, f"no engine contact for {st.accepted.lease_s if st.accepted else 0:.1f} s; "
                                       f"fallback plan in force")
        self._status()

    # ------------------------------------------------------------------ time
    def _advance(self, target: int) -> None:
        if target - self.runner.t_s > 86400:
            log.warning("%s: signal clock jumped by %d s; restarting the running plan", self.id,
                        target - self.runner.t_s)
        for sw in self.runner.advance_to(target):
            self._on_switch(sw)

    def tick(self, now: float | None = None) -> None:
        """Advance the signal program to the clock, handle the lease, heartbeats and periodic status.

        Ticks may come at any interval (:meth:`next_due` says when one has something to do): the seconds before the
        current one are run first, as if ticked then, and an expired lease then reverts from the current second."""
        now = time.monotonic() if now is None else now
        target = int(self.cfg.clock())
        if target - 1 > self.runner.t_s:
            self._advance(target - 1)
        if self.state.mode == "central" and now > self._lease_deadline:
            self._expire_lease()
        self._advance(target)
        if self.sock is not None:
            if now - self._last_rx > self._hello_after and now - self._last_hello > self._hello_after:
                self._hello()
            if now - self._last_status > self.cfg.status_interval_s:
                self._status()

    def next_due(self) -> float | None:
        """The ``time.monotonic()`` at or after which :meth:`tick` next has something to do: the lease runs out, the
        running plan reaches a point where it may switch to the pending one, a HELLO after the engine's silence, the
        periodic STATUS; inf when none of them is ahead. None when the clock cannot say when its seconds begin (a host
        then ticks at a fixed interval). Handling a message can change it (a new plan, lease or timer), so a host asks
        again after handling messages; ticking earlier than this is always harmless."""
        at = self._clock_at
        if at is None:
            return None
        due = self._lease_deadline if self.state.mode == "central" else math.inf
        if self.sock is not None:
            due = min(due, max(self._last_rx, self._last_hello) + self._hello_after,
                      self._last_status + self.cfg.status_interval_s)
        t_switch = self.runner.next_switch_s()
        if t_switch is not None:
            due = min(due, at(t_switch))
        return due
