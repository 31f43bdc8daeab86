"""gunicorn hooks for `mailplane serve`'s web service (`-c python:mailplane.cli.gunicorn_conf`):
no client and no request holds a worker thread for ever.

gunicorn's `timeout` kills a worker whose main loop stops sending heartbeats. In the
threaded worker (gthread) the main loop keeps beating while a request thread is stuck, so
- a runaway request (issue 8: password generation looping) held its thread until a
  restart, and eight of them took the API down;
- a client that sends part of its request head and then nothing (slowloris) held its
  thread just as long: gthread waits 5 s for the first bytes only, then reads without a
  timeout.
So each worker watches the threads serving its connections:
- a request head (request line and headers) not complete MAILPLANE_HTTP_READ_TIMEOUT
  (10 s) after its thread took the connection: the connection is shut, which frees the
  thread at once;
- a request still in the application MAILPLANE_HTTP_REQUEST_TIMEOUT (30 s) after its head
  arrived: its connection is shut first (that frees a thread waiting for a slow client's
  body); a thread still busy a few seconds later is running our code for ever, and the
  worker retires: it stops accepting, gives its other requests the same time to finish,
  and exits (a thread cannot be stopped from outside in Python; a process can). The
  arbiter starts a fresh worker at once, and the other workers serve meanwhile.
gunicorn's own refusals (a request line over 4094 bytes, a malformed header) are written
in the API's error shape too, instead of its HTML page.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gunicorn import util

READ_TIMEOUT = float(os.environ.get("MAILPLANE_HTTP_READ_TIMEOUT", "10"))
REQUEST_TIMEOUT = float(os.environ.get("MAILPLANE_HTTP_REQUEST_TIMEOUT", "30"))
# After a request's connection is shut, how long its thread may take to notice.
_CUT_GRACE = min(5.0, REQUEST_TIMEOUT)
_CHECK_EVERY = max(0.05, min(1.0, READ_TIMEOUT / 4, REQUEST_TIMEOUT / 4))


@dataclass(slots=True)
class _Slot:
    """What one worker thread is doing with one connection."""

    conn: Any  # gunicorn's connection; .sock is the client socket (TLS-wrapped or not)
    started: float  # when the current phase began
    in_app: bool = False  # False: reading the request head; True: in the application
    what: str = "a request head"
    cut_at: float | None = None  # when its socket was shut


# thread id -> slot, for the threads of this worker process.
_slots: dict[int, _Slot] = {}
_lock = threading.Lock()


def write_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error, answering in {"error": {"code", "message", "details"}}."""
    message = mesg or reason
    body = json.dumps(
        {
            "error": {
                "code": reason.lower().replace(" ", "_"),
                "message": message,
                "details": {"request": [message]},
            }
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def post_worker_init(worker: Any) -> None:
    util.write_error = write_error  # the workers' handle_error calls util.write_error
    handle = getattr(worker, "handle", None)
    if handle is not None:
        worker.handle = _tracked(handle)  # the thread pool calls worker.handle(conn)
    threading.Thread(
        target=_watch, args=(worker,), name="mailplane-request-watchdog", daemon=True
    ).start()


def _tracked(handle: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def tracked_handle(conn: Any) -> Any:
        ident = threading.get_ident()
        with _lock:
            _slots[ident] = _Slot(conn=conn, started=time.monotonic())
        try:
            return handle(conn)
        finally:
            with _lock:
                _slots.pop(ident, None)

    return tracked_handle


def pre_request(worker: Any, req: Any) -> None:
    with _lock:
        slot = _slots.get(threading.get_ident())
        if slot is not None:
            slot.in_app, slot.started = True, time.monotonic()
            slot.what = f"{req.method} {req.path}"


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    with _lock:
        slot = _slots.get(threading.get_ident())
        if slot is not None:  # done; the connection goes back to the poller
            slot.in_app, slot.started, slot.cut_at = False, float("inf"), None


def _cut(slot: _Slot, now: float) -> None:
    slot.cut_at = now
    with contextlib.suppress(OSError, AttributeError):  # already closed
        slot.conn.sock.shutdown(socket.SHUT_RDWR)  # a recv blocked on it returns at once


def _watch(worker: Any) -> None:
    while worker.alive:
        time.sleep(_CHECK_EVERY)
        now = time.monotonic()
        runaway = None
        with _lock:
            for slot in _slots.values():
                age = now - slot.started
                if slot.cut_at is None and age > (REQUEST_TIMEOUT if slot.in_app else READ_TIMEOUT):
                    worker.log.warning("%s took more than %.0fs: closing it", slot.what, age)
                    _cut(slot, now)
                elif slot.in_app and slot.cut_at is not None and now - slot.cut_at > _CUT_GRACE:
                    runaway = slot.what
        if runaway is not None:
            worker.log.error(
                "%s has run for more than %ss: retiring worker %s",
                runaway,
                REQUEST_TIMEOUT,
                worker.pid,
            )
            _retire(worker)
            return


def _retire(worker: Any) -> None:
    worker.alive = False  # the main loop stops accepting within a second
    with _lock:
        stuck = {ident for ident, slot in _slots.items() if slot.cut_at is not None}
    deadline = time.monotonic() + REQUEST_TIMEOUT
    while time.monotonic() < deadline:
        with _lock:
            if not set(_slots) - stuck:
                break
        time.sleep(_CHECK_EVERY)
    # The runaway threads never return; nothing else is left to finish.
    os._exit(1)
