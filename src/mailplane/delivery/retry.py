"""When to try again: exponential backoff with jitter, bounded like Postfix's
minimal_backoff_time / maximal_backoff_time, so retries neither hammer nor starve."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

from mailplane.delivery.config import conf

JITTER = 0.2  # ± this fraction of the backoff


def retry_delay(
    *,
    attempts: int,
    minimum: float | None = None,
    maximum: float | None = None,
    rng: Callable[[], float] = random.random,
) -> timedelta:
    """Delay after the `attempts`-th failed attempt (1-based): min·2^(n-1), capped at max,
    with ±20 % jitter so messages deferred together do not come back together.

    The jitter is drawn uniformly over the part of base·[0.8, 1.2] inside [min, max], not
    drawn over the whole and then clamped: clamping would send every draw past a bound to
    exactly that bound, so at the floor (every first retry) and at the cap (every late one)
    half of the messages deferred together would come back at the same moment."""
    low = float(conf("DELIVERY_RETRY_MIN_SECONDS") if minimum is None else minimum)
    high = float(conf("DELIVERY_RETRY_MAX_SECONDS") if maximum is None else maximum)
    base = min(high, low * 2 ** max(0, attempts - 1))
    start, end = max(low, base * (1 - JITTER)), min(high, base * (1 + JITTER))
    if start >= end:  # min == max: no room to spread
        return timedelta(seconds=base)
    return timedelta(seconds=start + (end - start) * rng())
