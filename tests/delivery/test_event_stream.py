"""The event stream (issue 10): a run with deliveries, a deferral, bounces, a late bounce
and a suppression (and, apart, a retry past its deadline) leaves exactly one event per
transition, numbered without gaps, and every write of message state in it came through
queue/transitions.py.

Real sockets throughout: local DNS, aiosmtpd sinks as the destinations' MX, the worker's
run_once, and an inbound DSN matched to its VERP return path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from mailplane.delivery.bounces import bounce_match, verp_address
from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue import transitions
from mailplane.queue.events import events_after, events_last_seq
from mailplane.queue.models import DeliveryEvent, QueuedRecipient, Suppression
from tests.delivery.test_bounce_match import remote_dsn

pytestmark = pytest.mark.timeout(60)

OWNER = str(Path(transitions.__file__).resolve())
TABLES = {
    "insert": ("deliveryevent", "suppression", "queuedrecipient", "eventsequence"),
    "update": ("deliveryevent", "suppression", "queuedrecipient", "eventsequence"),
}


class StateWrites:
    """Watches every SQL statement on this thread's connection and notes the writes to
    the queue's state tables that did not come through the transitions module."""

    def __init__(self) -> None:
        self.seen = 0
        self.elsewhere: list[str] = []

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        words = sql.lstrip().split(None, 3)
        verb = words[0].lower() if words else ""
        target = " ".join(words[1:3]).lower()
        if verb in TABLES and any(f"mailqueue_{t}" in target for t in TABLES[verb]):
            writes_state = (
                verb == "insert"
                or "queuedrecipient" not in target
                or ('"status"' in sql.split(" WHERE ")[0])
            )
            if writes_state:
                self.seen += 1
                if not self._from_owner():
                    self.elsewhere.append(sql[:120])
        return execute(sql, params, many, context)

    @staticmethod
    def _from_owner() -> bool:
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename == OWNER:
                return True
            frame = frame.f_back
        return False


def test_a_run_leaves_one_event_per_transition_in_order_without_gaps(sender, dns_server, mx_sinks):
    accept, greylist, reject = mx_sinks("accept"), mx_sinks("tempfail"), mx_sinks("reject")
    for domain, sink in (("dest.test", accept), ("later.test", greylist), ("nope.test", reject)):
        dns_server.mx(domain, f"mx.{domain}")
        dns_server.a(f"mx.{domain}", sink.address)
    start = events_last_seq()
    watch = StateWrites()
    worker = DeliveryWorker(rng=lambda: 0.5)
    with connection.execute_wrapper(watch):
        first = sender.send("carol@dest.test", "dave@later.test", "ghost@nope.test")
        t0 = timezone.now()
        assert worker.run_once(now=t0) == 3  # delivered, deferred, bounced (+ suppression)
        greylist.set_mode("accept")
        assert worker.run_once(now=t0 + timedelta(minutes=5)) == 1  # dave: delivered
        second = sender.send("Ghost@nope.test", subject="Again")
        assert worker.run_once(now=t0 + timedelta(minutes=6)) == 1  # suppressed
        # carol's mailbox turns out to be disabled: an asynchronous bounce to the VERP path.
        carol = QueuedRecipient.objects.get(message=first, rcpt_to="carol@dest.test")
        verp = verp_address(recipient_id=carol.pk, return_path_host=sender.domain.return_path_host)
        assert bounce_match(verp, remote_dsn(verp)) == carol.pk
        # The same report again is one more event (the row has ended: no second move).
        assert bounce_match(verp, remote_dsn(verp)) == carol.pk

    assert watch.seen > 0 and watch.elsewhere == []
    rows = {r.rcpt_to.lower(): r for r in QueuedRecipient.objects.filter(message=first)}
    [again] = QueuedRecipient.objects.filter(message=second)
    expected = {
        rows["carol@dest.test"].pk: ["queued", "delivered", "bounced", "bounced"],
        rows["dave@later.test"].pk: ["queued", "deferred", "delivered"],
        rows["ghost@nope.test"].pk: ["queued", "bounced"],
        again.pk: ["queued", "suppressed"],
    }
    stream = list(DeliveryEvent.objects.filter(seq__gt=start).order_by("seq"))
    by_row: dict[int | None, list[str]] = {}
    for event in stream:
        by_row.setdefault(event.recipient_id, []).append(event.type)
    assert by_row == expected  # no event missing, none invented
    # Gap-free and in the order things happened.
    assert [e.seq for e in stream] == list(range(start + 1, start + 1 + len(stream)))
    assert [e.id for e in stream] == sorted(e.id for e in stream)
    assert events_last_seq() == stream[-1].seq
    # The final states agree with the last event that moved each row.
    assert {r.pk: r.status for r in QueuedRecipient.objects.filter(pk__in=expected)} == {
        rows["carol@dest.test"].pk: "bounced",
        rows["dave@later.test"].pk: "delivered",
        rows["ghost@nope.test"].pk: "bounced",
        again.pk: "suppressed",
    }

    # A consumer paging with its cursor reads the same stream, each event once.
    cursor, read = start, []
    while page := events_after(cursor=cursor, limit=3):
        read.extend(page)
        cursor = page[-1].seq
    assert [e.seq for e in read] == [e.seq for e in stream]
    assert events_after(cursor=cursor) == []


def test_the_watch_sees_state_written_elsewhere(sender):
    # The check above is not vacuous: a write from outside the owner is caught, the claim's
    # lease is not a state write.
    message = sender.send("carol@dest.test")
    watch = StateWrites()
    with connection.execute_wrapper(watch):
        QueuedRecipient.objects.filter(message=message).update(claimed_by="w")
        assert watch.seen == 0
        QueuedRecipient.objects.filter(message=message).update(status="delivered")
    assert watch.seen == 1 and len(watch.elsewhere) == 1


def test_a_retry_past_its_deadline_is_one_bounced_event(sender, dns_server, mx_sinks):
    """The expiry transition: a temporary failure whose next attempt would fall after the
    row's deadline ends the row (bounced, no suppression: nothing said the address is
    bad) with one event, through the transitions module like the others."""
    greylist = mx_sinks("tempfail")
    dns_server.mx("later.test", "mx.later.test")
    dns_server.a("mx.later.test", greylist.address)
    message = sender.send("erin@later.test")
    now = timezone.now()
    QueuedRecipient.objects.filter(message=message).update(expires_at=now + timedelta(minutes=1))
    start, watch = events_last_seq(), StateWrites()
    with connection.execute_wrapper(watch):
        assert DeliveryWorker(rng=lambda: 0.5).run_once(now=now) == 1
    assert watch.seen > 0 and watch.elsewhere == []
    [row] = QueuedRecipient.objects.filter(message=message)
    stream = list(DeliveryEvent.objects.filter(seq__gt=start).order_by("seq"))
    assert [(e.recipient_id, e.type) for e in stream] == [(row.pk, "bounced")]
    assert "retry deadline reached" in stream[0].remote_reply
    assert [e.seq for e in stream] == [start + 1] and events_last_seq() == start + 1
    assert row.status == "bounced" and not Suppression.objects.exists()
