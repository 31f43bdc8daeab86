"""The analytics consumer: each event counted once per dimension, the cursor moved in the
same transaction as the counts, nothing missed, nothing counted twice."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from django.utils import timezone

from mailplane.analytics import consumer
from mailplane.analytics.consumer import cursor_position, events_count
from mailplane.analytics.metrics import (
    LATENCY_BOUNDS,
    engagement_metrics,
    event_metrics,
    latency_bucket,
    percentile,
)
from mailplane.analytics.models import BounceDomainCount, LatencyHistogram, StatCounter
from mailplane.queue.events import events_last_seq
from mailplane.queue.models import (
    BounceClass,
    DeliveryEvent,
    EventType,
    OutboundMessage,
    RecipientStatus,
)
from mailplane.queue.services import message_enqueue
from mailplane.queue.transitions import scheduled_move
from tests.analytics.conftest import Live, send, step, totals
from tests.support.servers import server_make

pytestmark = pytest.mark.django_db


def test_every_metric_is_counted_per_stream_and_tag(live: Live):
    carol, dave, erin, frank = send(
        live,
        to=["carol@dest.test", "dave@dest.test", "erin@other.test", "frank@other.test"],
        tags=["welcome", "eu"],
    )
    (gina,) = send(live, to="gina@dest.test", stream="broadcast", tags=["news"])
    step(carol, EventType.DELIVERED, RecipientStatus.DELIVERED, "250 ok")
    step(dave, EventType.DEFERRED, RecipientStatus.DEFERRED, "451 later", bounce_class="soft")
    step(dave, EventType.BOUNCED, RecipientStatus.BOUNCED, "550 5.1.1 no", bounce_class="hard")
    step(erin, EventType.BOUNCED, RecipientStatus.BOUNCED, "552 full", bounce_class="mailbox_full")
    step(frank, EventType.FAILED, RecipientStatus.FAILED, "no route")
    step(carol, EventType.COMPLAINED, None, "abuse report")
    step(gina, EventType.DELIVERED, RecipientStatus.DELIVERED, "250 ok")
    step(gina, EventType.UNSUBSCRIBED, None, "list-unsubscribe")

    assert events_count() == 13
    assert events_count() == 0  # caught up: nothing twice
    assert cursor_position() == events_last_seq()

    everything = totals(live.server)
    assert everything == {
        "sent": 5,
        "delivered": 2,
        "deferred": 1,
        "bounced": 2,
        "bounced:hard": 1,
        "bounced:mailbox_full": 1,
        "rejected": 1,
        "complained": 1,
        "unsubscribed": 1,
    }
    assert totals(live.server, tag="welcome") == totals(live.server, tag="eu")
    assert totals(live.server, tag="welcome")["sent"] == 4
    assert totals(live.server, tag="news") == {"sent": 1, "delivered": 1, "unsubscribed": 1}
    assert totals(live.server, stream="broadcast") == totals(live.server, tag="news")
    assert totals(live.server, stream="outbound")["sent"] == 4
    # The counts are of the events' own hour, UTC.
    first = DeliveryEvent.objects.order_by("seq").first()
    assert first is not None
    hours = set(StatCounter.objects.values_list("hour", flat=True))
    assert first.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0) in hours
    assert all(h.minute == h.second == 0 for h in hours)
    domains = dict(BounceDomainCount.objects.values_list("domain", "count"))
    assert domains == {"dest.test": 1, "other.test": 1}
    assert sum(LatencyHistogram.objects.values_list("count", flat=True)) == 2


def test_counts_match_the_event_stream_exactly(live: Live):
    """Many batches (a small limit): the sum of every counter is the number of counted
    events, each once."""
    rows = []
    for i in range(12):
        rows += send(live, to=[f"r{i}@dest.test", f"s{i}@dest.test"])
    for i, row in enumerate(rows):
        if i % 3 == 0:
            step(row, EventType.DELIVERED, RecipientStatus.DELIVERED, "250 ok")
        elif i % 3 == 1:
            step(row, EventType.BOUNCED, RecipientStatus.BOUNCED, "550", bounce_class="block")
    while events_count(limit=7):
        pass
    events = DeliveryEvent.objects.filter(message__server_link__server=live.server)
    expected = {"sent": 24, "delivered": 8, "bounced": 8, "bounced:block": 8}
    assert totals(live.server) == expected
    assert events.count() == 24 + 8 + 8


def test_mail_of_no_server_and_other_servers_is_kept_apart(live: Live):
    other = server_make(live.account, name="other-server")
    message_enqueue(
        organization=live.account.org,
        mail_from="ceo@acme.test",
        recipients=["x@dest.test"],
        raw=b"Subject: over SMTP\r\n\r\nhi\r\n",
    )  # a mailbox's message: no server, nothing to count it for
    send(live)
    events_count()
    assert totals(live.server) == {"sent": 1}
    assert totals(other.server) == {}
    assert cursor_position() == events_last_seq()  # read past it all the same


def test_a_failed_batch_moves_no_cursor_and_adds_no_count(live: Live, monkeypatch):
    (row,) = send(live, tags=["t"])
    step(row, EventType.BOUNCED, RecipientStatus.BOUNCED, "550", bounce_class="hard")
    real_add = consumer._add
    calls = []

    def add_then_fail(*args, **kwargs):
        real_add(*args, **kwargs)  # the counters are written …
        calls.append(1)
        if len(calls) == 3:  # … and the batch dies before the cursor moves
            raise RuntimeError("database went away mid-batch")

    monkeypatch.setattr(consumer, "_add", add_then_fail)
    with pytest.raises(RuntimeError):
        events_count()
    assert cursor_position() == 0
    assert not StatCounter.objects.exists()
    assert not BounceDomainCount.objects.exists()
    monkeypatch.setattr(consumer, "_add", real_add)
    assert events_count() == 2
    assert totals(live.server) == {"sent": 1, "bounced": 1, "bounced:hard": 1}
    assert totals(live.server, tag="t") == totals(live.server)


def test_latency_lands_in_its_bucket(live: Live):
    (fast,) = send(live, to="a@dest.test")
    (late,) = send(live, to="c@dest.test")
    # Queued ten minutes ago (as if the row had waited in the queue).
    OutboundMessage.objects.filter(pk=late.message_id).update(
        created_at=late.message.created_at - timedelta(minutes=10)
    )
    step(fast, EventType.DELIVERED, RecipientStatus.DELIVERED, "250 ok")
    step(late, EventType.DELIVERED, RecipientStatus.DELIVERED, "250 ok")
    events_count()
    counts = dict(LatencyHistogram.objects.values_list("bucket", "count"))
    assert sum(counts.values()) == 2
    ten_minutes = latency_bucket(600)
    assert counts.get(ten_minutes) == 1
    assert LATENCY_BOUNDS[ten_minutes - 1] < 600 <= LATENCY_BOUNDS[ten_minutes]
    assert percentile(counts, 0.99) == round(LATENCY_BOUNDS[ten_minutes], 3)
    assert percentile(counts, 0.5) is not None and percentile(counts, 0.5) < 60


def test_latency_buckets_are_log_spaced_and_percentiles_bound_the_value():
    assert latency_bucket(0) == 0
    assert latency_bucket(0.05) == 0
    assert latency_bucket(10**9) == len(LATENCY_BOUNDS) - 1
    for seconds in (0.07, 0.3, 1, 4.2, 59, 3600, 86_400 * 3):
        bucket = latency_bucket(seconds)
        assert LATENCY_BOUNDS[bucket - 1] < seconds <= LATENCY_BOUNDS[bucket] * (1 + 1e-9)
        assert LATENCY_BOUNDS[bucket] / seconds < 2**0.5 + 1e-9  # within a factor √2
    counts = {latency_bucket(s): 0 for s in (1, 10, 100)}
    for seconds, n in ((1, 50), (10, 45), (100, 5)):
        counts[latency_bucket(seconds)] += n
    assert percentile(counts, 0.5) == round(LATENCY_BOUNDS[latency_bucket(1)], 3)
    assert percentile(counts, 0.95) == round(LATENCY_BOUNDS[latency_bucket(10)], 3)
    assert percentile(counts, 0.99) == round(LATENCY_BOUNDS[latency_bucket(100)], 3)
    assert percentile({}, 0.5) is None


def test_every_bounce_class_has_a_metric():
    for kind in BounceClass.values:
        assert event_metrics(EventType.BOUNCED, kind, "") == ["bounced", f"bounced:{kind}"]
    assert event_metrics(EventType.DEFERRED, "soft", "") == ["deferred"]


def test_scheduled_mail_is_counted_and_its_wait_is_no_latency(live: Live):
    at = (timezone.now() + timedelta(hours=2)).isoformat()
    (held,) = send(live, to="a@dest.test", send_at=at)
    (dropped,) = send(live, to="b@dest.test", send_at=at)
    assert scheduled_move(
        message_id=dropped.message_id, now=timezone.now(), send_at=None, expires_at=None
    )
    held.refresh_from_db()
    step(held, EventType.DELIVERED, RecipientStatus.DELIVERED, "250 ok")
    events_count()
    assert totals(live.server) == {"sent": 2, "scheduled": 2, "cancelled": 1, "delivered": 1}
    assert not LatencyHistogram.objects.exists()


def test_opens_and_clicks_are_told_apart_by_their_detail():
    """The tracking work's `detail` (queue/transitions.engagement_record on its branch):
    first, repeat, machine:<reason>, and for a click a space and the URL."""
    assert engagement_metrics("opened", "first") == ["opened", "opened_unique"]
    assert engagement_metrics("opened", "repeat") == ["opened"]
    assert engagement_metrics("opened", "machine:apple-mpp") == ["opened_machine"]
    assert engagement_metrics("clicked", "first https://x.test/a b") == [
        "clicked",
        "clicked_unique",
    ]
    assert engagement_metrics("clicked", "repeat https://x.test/first") == ["clicked"]
    assert engagement_metrics("clicked", "machine:scanner https://x.test/") == ["clicked_machine"]
