"""Running blocking work (Django ORM, scrypt, DNS) off the event loop.

One bounded pool per process: the ORM keeps one connection per thread, so the pool size
caps database connections; stale connections are dropped per call the way Django does
per request.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from django.db import close_old_connections

P = ParamSpec("P")
T = TypeVar("T")

_EXECUTOR = ThreadPoolExecutor(max_workers=16, thread_name_prefix="mailplane-smtp")


def _with_connection_hygiene(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


async def blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn` in the worker pool and await its result."""
    loop = asyncio.get_running_loop()
    call = functools.partial(_with_connection_hygiene, fn, *args, **kwargs)
    return await loop.run_in_executor(_EXECUTOR, call)
