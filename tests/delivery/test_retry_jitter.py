"""Retry jitter: messages deferred together must not all come back together.

The rest of the suite fixes the random source at 0.5 (the centre, where jitter adds
nothing) so that retry times are exact; these tests draw from seeded generators instead:
the draws are different from each other, yet the same on every run, so a check on their
spread is exact and never flaky.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from mailplane.delivery.retry import retry_delay
from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import QueuedRecipient

pytestmark = pytest.mark.timeout(60)

MINIMUM, MAXIMUM = 60.0, 86_400.0
JITTER = 0.2  # documented in retry_delay: ±20 %


def delay(attempts: int, rng: random.Random | None = None, value: float | None = None) -> float:
    source = (lambda: value) if value is not None else rng.random  # type: ignore[union-attr]
    return retry_delay(
        attempts=attempts, minimum=MINIMUM, maximum=MAXIMUM, rng=source
    ).total_seconds()


def test_draws_span_the_documented_range_around_the_backoff() -> None:
    base = MINIMUM * 2**3  # the 4th attempt: 480 s
    rng = random.Random(20261123)
    draws = [delay(4, rng) for _ in range(500)]
    low, high = base * (1 - JITTER), base * (1 + JITTER)
    assert all(low <= d <= high for d in draws), (min(draws), max(draws))
    # Uniform over ±20 %: 500 draws reach within 2 % of both ends (exact for this seed).
    assert min(draws) < base * (1 - 0.9 * JITTER)
    assert max(draws) > base * (1 + 0.9 * JITTER)
    assert len(set(draws)) > 450
    # and sit on both sides of the centre, about half each
    assert 200 < sum(d < base for d in draws) < 300


def test_the_ends_of_the_random_source_are_the_ends_of_the_range() -> None:
    base = MINIMUM * 2**2
    assert delay(3, value=0.0) == pytest.approx(base * (1 - JITTER))
    assert delay(3, value=0.5) == pytest.approx(base)
    assert delay(3, value=0.999999) == pytest.approx(base * (1 + JITTER), rel=1e-5)


def test_two_random_states_give_two_delays() -> None:
    assert delay(5, random.Random(1)) != delay(5, random.Random(2))


def test_jitter_stays_inside_the_configured_bounds() -> None:
    # At the floor and at the cap the spread is the part of ±20 % inside the bounds.
    rng = random.Random(7)
    assert all(MINIMUM <= delay(1, rng) <= MINIMUM * (1 + JITTER) for _ in range(200))
    assert all(MAXIMUM * (1 - JITTER) <= delay(30, rng) <= MAXIMUM for _ in range(200))


# Draws at evenly spaced points of the random source: what any uniform source gives in the
# limit, so these checks hold for every seed (and need none), exactly.
GRID = [(i + 0.5) / 400 for i in range(400)]


def _spread(attempts: int) -> list[float]:
    return sorted(delay(attempts, value=u) for u in GRID)


def _quarters(draws: list[float], low: float, high: float) -> list[int]:
    width = (high - low) / 4
    return [sum(low + q * width <= d < low + (q + 1) * width for d in draws) for q in range(4)]


@pytest.mark.parametrize(
    ("attempts", "low", "high"),
    [
        (1, MINIMUM, MINIMUM * (1 + JITTER)),  # at the floor: upwards only
        (4, MINIMUM * 8 * (1 - JITTER), MINIMUM * 8 * (1 + JITTER)),  # both ways
        (30, MAXIMUM * (1 - JITTER), MAXIMUM),  # at the cap: downwards only
    ],
)
def test_jitter_is_spread_evenly_with_no_pile_up_at_a_bound(
    attempts: int, low: float, high: float
) -> None:
    """Clamped jitter sends every draw past the floor or cap to exactly it: half of the
    messages deferred together would come back together. Removed jitter: all of them."""
    draws = _spread(attempts)
    assert len(set(draws)) == len(draws), "several draws give the same delay"
    assert low <= draws[0] and draws[-1] <= high
    assert draws[0] < low + (high - low) * 0.01 and draws[-1] > high - (high - low) * 0.01
    assert _quarters(draws, low, high) == [100, 100, 100, 100]


def test_jitter_between_the_bounds_goes_both_ways_around_the_backoff() -> None:
    base = MINIMUM * 2**5
    draws = _spread(6)
    assert sum(d < base for d in draws) == sum(d > base for d in draws) == 200


def test_recipients_deferred_together_are_retried_at_different_times(
    sender, dns_server, mx_sinks
) -> None:
    sink = mx_sinks("tempfail")
    dns_server.mx("dest.test", "mx1.dest.test")
    dns_server.a("mx1.dest.test", sink.address)
    recipients = [f"user{i}@dest.test" for i in range(30)]
    message = sender.send(*recipients)
    worker = DeliveryWorker(rng=random.Random(20261123).random)
    t0 = timezone.now()

    assert worker.run_once(now=t0) == len(recipients)

    rows = list(QueuedRecipient.objects.filter(message=message))
    assert {(r.status, r.attempts) for r in rows} == {("deferred", 1)}
    first = sorted((r.next_attempt_at - t0).total_seconds() for r in rows)
    # The first retry is the floor plus up to 20 %: never earlier than the minimum, and
    # spread over all of it (none clamped to exactly 60 s).
    assert first[0] >= 60 and first[-1] <= 72
    assert len(set(first)) == len(first)
    assert first[0] < 62 and first[-1] > 70

    # The second attempt for all of them (all due by then): the doubled delay, jittered.
    t1 = t0 + timedelta(seconds=73)
    assert worker.run_once(now=t1) == len(recipients)
    second = sorted(
        (r.next_attempt_at - t1).total_seconds()
        for r in QueuedRecipient.objects.filter(message=message)
    )
    assert second[0] >= 96 and second[-1] <= 144
    assert second[-1] - second[0] > 24, second
