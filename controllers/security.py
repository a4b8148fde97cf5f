"""CURVE keys, the engine's allow-list authenticator and handshake monitoring.

Key layout (what ``gronvag keys`` writes, via :func:`zmq.auth.create_certificates`): ``DIR/<id>.key`` holds the public
key, ``DIR/<id>.key_secret`` the key pair (secret: readable by its owner only). The engine's own pair is ``engine``.
An allow-list directory holds controllers' public ``<id>.key`` files: the file name is the controller id that the key
is allowed to speak for. The ZAP handler maps an authenticated key to that id, so every received frame carries
``User-Id == controller id``, which the engine compares with the routing id and the ids inside message bodies.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
import zmq.backend
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from engine.errors import GronvagError

log = logging.getLogger(__name__)

# plain ints for the sockets' hot paths: pyzmq's enum constants cost an enum operation at every use
EVENTS, POLLIN, RCVMORE, NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.RCVMORE), int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE) | NOBLOCK


# the backend socket's send: zmq.Socket.send is a Python wrapper around it that only adds DRAFT routing ids and groups,
# which these sockets do not use, and takes about two thirds of a small frame's send time
_backend_send = zmq.backend.Socket.send


def send_frames(sock: zmq.Socket, frames: list[bytes]) -> None:
    """``sock.send_multipart(frames, flags=NOBLOCK)`` without its per-frame enum arithmetic and Python wrapper; raises
    zmq.Again when the message cannot be queued (ZeroMQ takes a multipart message whole or not at all)."""
    last = len(frames) - 1
    for i, f in enumerate(frames):
        _backend_send(sock, f, _SNDMORE_NOBLOCK if i < last else NOBLOCK)


def recv_frames(sock: zmq.Socket) -> list[bytes]:
    """``sock.recv_multipart(NOBLOCK)`` (frames copied as bytes) without its per-frame enum arithmetic: each frame is
    received as a zmq.Frame, whose ``more`` flag costs less than reading the RCVMORE socket option (an enum
    conversion inside ``Socket.get``)."""
    frame = sock.recv(NOBLOCK, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = sock.recv(copy=False)
        frames.append(frame.bytes)
    return frames

ENGINE_ID = "engine"
ZAP_DOMAIN = "gronvag"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


@dataclass(frozen=True)
class KeyPair:
    """Z85-encoded CURVE keys (40 ASCII bytes each); ``secret`` is None for a public-only certificate."""

    id: str
    public: bytes
    secret: bytes | None


def check_id(ident: str) -> str:
    if not _ID_RE.match(ident):
        raise GronvagError(f"invalid id {ident!r}: 1-64 characters of A-Z a-z 0-9 _ . : - (not starting with one of "
                           f"_ . : -)")
    return ident


def create_keypair(keys_dir: str | Path, ident: str, *, overwrite: bool = False) -> KeyPair:
    """Create ``<id>.key`` / ``<id>.key_secret`` in ``keys_dir`` (made if needed). Refuses to overwrite a pair."""
    check_id(ident)
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(parents=True, exist_ok=True)
    pub_path, sec_path = keys_dir / f"{ident}.key", keys_dir / f"{ident}.key_secret"
    if not overwrite and (pub_path.exists() or sec_path.exists()):
        raise GronvagError(f"a key pair for {ident!r} already exists", sec_path)
    zmq.auth.create_certificates(str(keys_dir), ident)
    os.chmod(sec_path, 0o600)
    return load_keypair(sec_path)


def load_keypair(path: str | Path) -> KeyPair:
    """Load a certificate file (``.key`` public only, ``.key_secret`` both keys)."""
    path = Path(path)
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise GronvagError(f"cannot load CURVE certificate ({exc})", path) from None
    if public is None or len(public) != 40 or (secret is not None and len(secret) != 40):
        raise GronvagError("not a CURVE certificate (expected Z85 keys of 40 characters)", path)
    ident = path.name.removesuffix("_secret").removesuffix(".key")
    return KeyPair(ident, public, secret)


def list_keys(keys_dir: str | Path) -> list[KeyPair]:
    """Public keys (``*.key``) in a directory, sorted by id; unreadable files are logged and skipped."""
    out = []
    for path in sorted(Path(keys_dir).glob("*.key")):
        try:
            out.append(load_keypair(path))
        except GronvagError as exc:
            log.warning("skipping %s", exc)
    return out


def load_allow_list(allow_dir: str | Path, exclude: tuple[str, ...] = (ENGINE_ID,)) -> dict[bytes, str]:
    """Map Z85 public key -> controller id for every ``<id>.key`` in ``allow_dir`` (ids in ``exclude`` skipped)."""
    allow_dir = Path(allow_dir)
    if not allow_dir.is_dir():
        raise GronvagError("allow-list directory does not exist", allow_dir)
    out: dict[bytes, str] = {}
    for kp in list_keys(allow_dir):
        if kp.id in exclude:
            continue
        try:
            check_id(kp.id)
        except GronvagError as exc:
            log.warning("allow-list %s: %s; skipped", allow_dir, exc)
            continue
        if kp.public in out:
            log.error("allow-list %s: one public key is listed for both %r and %r; refusing both", allow_dir,
                      out[kp.public], kp.id)
            out[kp.public] = ""
            continue
        out[kp.public] = kp.id
    return {k: v for k, v in out.items() if v}


class _AllowList:
    """ZAP credentials provider: a key is allowed iff it is in the current map. Refusals are logged once per key per
    minute (a refused client keeps reconnecting)."""

    def __init__(self, keys: dict[bytes, str]):
        self.keys = keys
        self._logged: dict[bytes, float] = {}

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.keys
        if not ok:
            now = time.monotonic()
            if now - self._logged.get(key, -1e9) > 60.0:
                if len(self._logged) > 10000:
                    self._logged.clear()
                self._logged[key] = now
                log.warning("ZAP: refused CURVE key %s (not in the allow-list)", key.decode("ascii", "replace"))
        return ok


class ControllerAuthenticator(ThreadAuthenticator):
    """ZAP handler for the engine: CURVE keys from an allow-list; User-Id = the controller id the key belongs to."""

    def __init__(self, context: zmq.Context, keys: dict[bytes, str]):
        super().__init__(context, log=logging.getLogger(__name__ + ".zap"))
        self._provider = _AllowList(dict(keys))

    def start(self) -> None:
        super().start()
        self.configure_curve_callback(ZAP_DOMAIN, self._provider)

    def update(self, keys: dict[bytes, str]) -> None:
        """Replace the allow-list (atomic swap; the ZAP thread reads the new dict on the next handshake)."""
        self._provider.keys = dict(keys)

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self._provider.keys.get(z85.encode(client_public_key), "")


_HANDSHAKE_FAILURES = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "authentication refused",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol error (wrong key or security mechanism)",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed",
}


class MonitorLog:
    """Reads a socket monitor and logs handshake failures (throttled per event kind), successes and disconnects.

    ``on_event(event_name)`` is called for every event (e.g. to send HELLO after ``HANDSHAKE_SUCCEEDED``)."""

    def __init__(self, socket: zmq.Socket, name: str, on_event=None, throttle_s: float = 5.0):
        self.name = name
        self.sock = socket.get_monitor_socket()
        self.on_event = on_event
        self.throttle_s = throttle_s
        self._last: dict[int, float] = {}
        self._suppressed: dict[int, int] = {}
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def drain(self, limit: int = 1000) -> None:
        for _ in range(limit):
            if not self.sock.get(EVENTS) & POLLIN:  # cheaper than a recv that raises Again
                return
            try:
                frames = self.sock.recv_multipart(NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = parse_monitor_message(frames)
            except Exception:  # noqa: BLE001 - a monitor frame we cannot parse is not worth a crash
                log.debug("%s: unparsable monitor event", self.name)
                continue
            self._handle(int(msg["event"]), int(msg["value"]), msg.get("endpoint", b""))

    def _handle(self, event: int, value: int, endpoint: bytes) -> None:
        try:
            name = zmq.Event(event).name
        except ValueError:
            name = str(event)
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1
        if event in _HANDSHAKE_FAILURES:
            now = time.monotonic()
            if now - self._last.get(event, -1e9) >= self.throttle_s:
                extra = self._suppressed.pop(event, 0)
                log.warning("%s: %s on %s (event %s, value %d)%s", self.name, _HANDSHAKE_FAILURES[event],
                            endpoint.decode("utf-8", "replace"), name, value,
                            f"; {extra} more since last report" if extra else "")
                self._last[event] = now
            else:
                self._suppressed[event] = self._suppressed.get(event, 0) + 1
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            log.debug("%s: handshake succeeded on %s", self.name, endpoint.decode("utf-8", "replace"))
        elif event == zmq.EVENT_DISCONNECTED:
            log.debug("%s: disconnected %s", self.name, endpoint.decode("utf-8", "replace"))
        if self.on_event is not None:
            self.on_event(name)

    def count(self, name: str) -> int:
        with self._lock:
            return self.counts.get(name, 0)

    def close(self, owner: zmq.Socket) -> None:
        try:
            owner.disable_monitor()
        except zmq.ZMQError:
            pass
        self.sock.close(linger=0)
