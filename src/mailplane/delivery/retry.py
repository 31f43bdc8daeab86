"""When to try again: exponential backoff with jitter, bounded like Postfix's
minimal_backoff_time / maximal_backoff_time, so retries neither hammer nor starve."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

from mailplane.delivery.config import conf


def retry_delay(
    *,
    attempts: int,
    minimum: float | None = None,
    maximum: float | None = None,
    rng: Callable[[], float] = random.random,
) -> timedelta:
    """Delay after the `attempts`-th failed attempt (1-based): min·2^(n-1), capped at max,
    with ±20 % jitter so messages deferred together do not come back together."""
    low = float(conf("DELIVERY_RETRY_MIN_SECONDS") if minimum is None else minimum)
    high = float(conf("DELIVERY_RETRY_MAX_SECONDS") if maximum is None else maximum)
    base = min(high, low * 2 ** max(0, attempts - 1))
    jittered = base * (0.8 + 0.4 * rng())
    return timedelta(seconds=max(low, min(high, jittered)))
