"""gunicorn hooks for `mailplane serve`'s web service (`-c python:mailplane.cli.gunicorn_conf`).

gunicorn's `timeout` kills a worker whose main loop stops sending heartbeats. In the
threaded worker (gthread) the main loop keeps beating while a request thread runs for
ever, so a runaway request (issue 8: password generation looping) held its thread until
a restart, and eight of them took the API down. Each worker therefore watches its own
requests: when one has run longer than MAILPLANE_HTTP_REQUEST_TIMEOUT seconds, the worker
retires — it stops accepting, gives its other requests the same time to finish, and exits
(a thread cannot be stopped from outside in Python; the process can). The arbiter starts a
fresh worker at once, and the other workers serve meanwhile.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

REQUEST_TIMEOUT = float(os.environ.get("MAILPLANE_HTTP_REQUEST_TIMEOUT", "30"))
_CHECK_EVERY = max(0.05, min(1.0, REQUEST_TIMEOUT / 4))

# thread id -> (monotonic start, "METHOD /path") of each request this worker is serving.
_running: dict[int, tuple[float, str]] = {}
_lock = threading.Lock()


def pre_request(worker: Any, req: Any) -> None:
    with _lock:
        _running[threading.get_ident()] = (time.monotonic(), f"{req.method} {req.path}")


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    with _lock:
        _running.pop(threading.get_ident(), None)


def post_worker_init(worker: Any) -> None:
    threading.Thread(
        target=_watch, args=(worker,), name="mailplane-request-watchdog", daemon=True
    ).start()


def _overdue(now: float) -> list[str]:
    with _lock:
        return [what for start, what in _running.values() if now - start > REQUEST_TIMEOUT]


def _watch(worker: Any) -> None:
    while worker.alive:
        time.sleep(_CHECK_EVERY)
        overdue = _overdue(time.monotonic())
        if not overdue:
            continue
        worker.log.error(
            "%s has run for more than %ss: retiring worker %s",
            overdue[0],
            REQUEST_TIMEOUT,
            worker.pid,
        )
        worker.alive = False  # the main loop stops accepting within a second
        with _lock:
            runaway = {ident for ident, (start, _) in _running.items()
                       if time.monotonic() - start > REQUEST_TIMEOUT}
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while time.monotonic() < deadline:
            with _lock:
                others = set(_running) - runaway
            if not others:
                break
            time.sleep(_CHECK_EVERY)
        # The runaway threads never return; nothing else is left to finish.
        os._exit(1)
