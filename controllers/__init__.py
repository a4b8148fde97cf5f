"""Live plans to intersection controllers over ZeroMQ: GVCP/1 (Grönvåg controller protocol).

Topology: the engine binds one ROUTER (CURVE server, ZAP allow-list); every controller agent connects one DEALER whose
routing id is its controller id, and reconnects by itself. Frames: ``[b"GVCP/1"] [TYPE] [msgpack body]``, decoded and
validated only by :mod:`controllers.wire` (typed msgspec structs, bounded sizes, no pickle).

=========  ====  ===========================================================================================
Type       Dir   Purpose
=========  ====  ===========================================================================================
HELLO      C→E   on every (re)connection: boot id, mode, last accepted (epoch, seq, sha256), running plan
WELCOME    E→C   engine epoch and heartbeat interval
PLAN       E→C   (epoch, seq, sha256 of the canonical plan JSON), activation (asap / next_cycle / at), lease, plan
ACK        C→E   accepted | applied | rejected (reason) | duplicate | superseded, with the controller's mode
STATUS     C→E   mode, running / pending / last accepted plan, signal state, lease left, active alarms
ALARM      C→E   e.g. LEASE_EXPIRED raised / cleared
PING/PONG  both  liveness; an engine PING renews the lease; PONG reports mode and plans (anti-entropy)
ERROR      both  answer to a malformed or unauthorised message
=========  ====  ===========================================================================================

Guarantees (each has a loopback test in ``tests/test_controllers_*.py``):

* the engine commits a plan to SQLite before sending it, retries only the latest desired plan per controller until it
  is acknowledged (exponential back-off), and on HELLO re-sends only if the controller's last accepted plan differs;
  its epoch grows on every start;
* a controller accepts only a newer (epoch, seq), validates the whole plan with :func:`engine.safety.check_plan` under
  its local spec plus safe transitions into it and back to its fallback, persists before acknowledging, switches at
  a safe transition point (:mod:`controllers.signal`), then acknowledges ``applied``; duplicates get the stored answer
  and nothing is applied twice;
* a plan whose validity period (``valid_from_s``/``valid_to_s``) has ended is rejected; one whose period has not begun
  is accepted and held until it begins;
* lease expiry (no PLAN/PING) reverts a controller to its fallback plan with an alarm; only a fresh PLAN ends it;
* every message's authenticated key must belong to the routing id and the body's controller id.

Modules: :mod:`~controllers.wire` (codec), :mod:`~controllers.signal` (plan runner, safe switching); engine side
:mod:`~controllers.engine`, :mod:`~controllers.store`, :mod:`~controllers.watch`; controller side
:mod:`~controllers.agent`, :mod:`~controllers.host`, :mod:`~controllers.state`, :mod:`~controllers.config`;
:mod:`~controllers.security` (keys, ZAP, monitors); :mod:`~controllers.cli` (programs).
"""
