"""Long-running service processes: their main, their knobs, and ending them once their
orderly shutdown is done."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn


def exit_now(code: int = 0) -> NoReturn:
    """Exit without the interpreter's teardown.

    Call it only after the service has stopped listening, finished what it acknowledged and
    closed its connections: what is left is freeing Django's, Celery's and psycopg's module
    graph, which takes about a second on a busy machine and would push a stop past the 2 s
    that `mailplane serve` allows before it kills a service (cli/serve.py stop_children).
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def service_main(worker: Callable[[], Any]) -> NoReturn:
    """`python -m mailplane.<service>`: Django set up, INFO logs, `worker()`'s
    `run_forever(stop)` until SIGTERM or SIGINT sets `stop`, then `exit_now`.

    `worker` is called after django.setup(), so it may import models."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailplane.settings")
    import django

    django.setup()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await worker().run_forever(stop)

    asyncio.run(run())
    exit_now(0)


def setting_knob(name: str, defaults: Mapping[str, Any]) -> Any:
    """settings.MAILPLANE[name], else the environment's MAILPLANE_<name> (read as the
    default's type; a bool as 1/true/yes/on), else the default: a knob every process of a
    service can be given on its own."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    if name in settings.MAILPLANE:
        return settings.MAILPLANE[name]
    default = defaults[name]
    raw = os.environ.get(f"MAILPLANE_{name}")
    if raw is None:
        return default
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        return type(default)(raw)
    except ValueError:
        raise ImproperlyConfigured(
            f"MAILPLANE_{name}={raw!r} is not a valid {type(default).__name__}"
        ) from None
