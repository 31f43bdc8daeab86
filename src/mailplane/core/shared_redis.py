"""Redis for counters that every process shares and that a process can do without for a
while (login limits, the API's wrong-key throttle and request quotas).

Short socket timeouts and one retry on a dropped connection only (a restarted Redis: a
fresh connection answers at once; a timeout is not retried, that would double the
stall). After an error `call` answers "not shared" for `retry_after` seconds without
asking, so the caller counts in its own process meanwhile; that is logged once, and once
more when Redis answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

T = TypeVar("T")


class FallibleRedis:
    def __init__(
        self,
        url: str,
        *,
        log: logging.Logger,
        what: str,
        meanwhile: str = "counting in this process",
        timeout: float = 0.5,
        retry_after: float = 5.0,
    ) -> None:
        self.log, self.what, self.meanwhile = log, what, meanwhile
        self.retry_after = retry_after
        retry = Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=retry
        )
        self._down_until: float | None = None  # set while Redis is failing us
        self._lock = threading.Lock()

    def script(self, source: str) -> Any:
        return self.client.register_script(source)

    def call(self, fn: Callable[[], T]) -> tuple[bool, T | None]:
        """(True, answer) from Redis, or (False, None) while it is failing us."""
        down_until = self._down_until
        if down_until is not None and time.monotonic() < down_until:
            return False, None
        try:
            answer = fn()
        except redis.exceptions.RedisError as exc:
            with self._lock:
                first = self._down_until is None
                self._down_until = time.monotonic() + self.retry_after
            if first:
                self.log.warning("%s: Redis unavailable (%s); %s", self.what, exc, self.meanwhile)
            return False, None
        if self._down_until is not None:  # the usual case skips the lock
            with self._lock:
                was_down, self._down_until = self._down_until is not None, None
            if was_down:
                self.log.info("%s: Redis answers again", self.what)
        return True, answer

    def keys_delete(self, prefix: str) -> None:
        """Delete every key under `prefix` (all processes' counters). Raises if Redis is
        down: whoever resets should know it did nothing."""
        keys = list(self.client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            self.client.delete(*keys)

    def close(self) -> None:
        self.client.close()
