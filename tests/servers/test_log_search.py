"""/api/server/messages/ search (metadata, tag, stream, status, recipient, dates) with
index-backed filters, and the retention job that prunes old logs in batches."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from mailplane.periodic import BEAT_SCHEDULE
from mailplane.queue.models import (
    DeliveryEvent,
    MessageBody,
    OutboundMessage,
    QueuedRecipient,
    RecipientStatus,
)
from mailplane.queue.retention import message_logs_prune
from mailplane.queue.services import message_enqueue
from mailplane.queue.tasks import message_logs_prune_task
from mailplane.servers.models import MessageMetadata, ServerMessage
from mailplane.servers.selectors import server_message_list
from mailplane.tenancy.models import Organization
from tests.support.fixtures import verified_domain
from tests.support.servers import send_body, server_make
from tests.support.tools import skip_for_mode

MESSAGES = "/api/server/messages/"


@pytest.fixture
def live(account):
    verified_domain(account, "acme.test")
    return server_make(account)


def _send(live, **fields):
    reply = live.client.post("/api/email/", send_body(**fields), format="json")
    assert reply.status_code == 200, reply.json()
    return reply.json()["id"]


def _ids(live, query):
    reply = live.client.get(f"{MESSAGES}{query}")
    assert reply.status_code == 200, reply.json()
    return [m["id"] for m in reply.json()["results"]]


def test_search_by_metadata_tag_stream_and_dates(live):
    a = _send(live, metadata={"order": "1", "user": "u9"}, tags=["receipt"])
    b = _send(live, metadata={"order": "2"}, tags=["receipt", "eu"], stream="broadcast")
    c = _send(live, to="zed@dest.test")
    OutboundMessage.objects.filter(pk=a).update(created_at=timezone.now() - timedelta(days=3))
    assert _ids(live, "?metadata_key=order") == [b, a]
    assert _ids(live, "?metadata_key=order&metadata_value=1") == [a]
    assert _ids(live, "?metadata_key=order&metadata_value=3") == []
    assert _ids(live, "?metadata_key=user&metadata_value=u9&tag=receipt") == [a]
    assert _ids(live, "?tag=eu") == [b]
    assert _ids(live, "?stream=broadcast") == [b]
    assert _ids(live, "?recipient=ZED@dest.test") == [c]
    assert _ids(live, "?status=queued") == [c, b, a]
    day = (timezone.now() - timedelta(days=1)).date().isoformat()
    assert _ids(live, f"?from={day}") == [c, b]
    assert _ids(live, f"?to={day}") == [a]
    now = timezone.now().strftime("%Y-%m-%dT%H:%M:%S")
    assert _ids(live, f"?from={day}T00:00:00Z&to={now}-05:00") == [c, b]  # UTC-5: later
    assert _ids(live, f"?to={now}%2B05:00") == [a]  # UTC+5: 5 hours ago
    assert _ids(live, "?metadata_key=&tag=&from=") == [c, b, a]


def test_another_servers_metadata_is_not_searched(live, account):
    other = server_make(account, name="other")
    _send(other, metadata={"order": "1"})
    assert _ids(live, "?metadata_key=order") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?metadata_value=1", "metadata_value"),
        ("?metadata_key=" + "k" * 101, "metadata_key"),
        ("?metadata_key=k&metadata_value=" + "v" * 1001, "metadata_value"),
        ("?from=not-a-date", "from"),
        ("?from=2026-13-01", "from"),
        ("?to=2026-12-01T10:00:00+99:00", "to"),
        ("?from=2026-12-02&to=2026-12-01", "to"),
        ("?from=" + "1" * 41, "from"),
        ("?from=2026-12-01&from=2026-12-02", "from"),
        ("?status=nope", "status"),
    ],
)
def test_bad_search_parameters_are_400_naming_them(live, query, field):
    reply = live.client.get(f"{MESSAGES}{query}")
    assert reply.status_code == 400, reply.content
    assert field in reply.json()["error"]["details"], reply.json()


def test_the_metadata_filter_is_an_index_lookup_in_postgresql(live):
    if connection.vendor != "postgresql":
        skip_for_mode("query plans are PostgreSQL's")
    _send(live, metadata={"order": "1"})
    qs = server_message_list(server=live.server, metadata_key="order", metadata_value="1")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # what an index allows, not costs
        plan = qs.explain()
    assert "server_metadata" in plan, plan
    assert f"Seq Scan on {MessageMetadata._meta.db_table}" not in plan, plan


def _old(live, days, **fields):
    pk = _send(live, **fields)
    QueuedRecipient.objects.filter(message_id=pk).update(status=RecipientStatus.DELIVERED)
    OutboundMessage.objects.filter(pk=pk).update(created_at=timezone.now() - timedelta(days=days))
    return pk


def test_retention_prunes_old_finished_logs_in_batches(live, other_account):
    expired = [_old(live, 31, metadata={"k": str(i)}, tags=["t"]) for i in range(5)]
    recent = _old(live, 29)
    waiting = _send(live)  # still queued, and old: its log is not finished
    OutboundMessage.objects.filter(pk=waiting).update(
        created_at=timezone.now() - timedelta(days=40)
    )
    # Another account keeps its logs longer.
    Organization.objects.filter(pk=other_account.org.pk).update(log_retention_days_override=90)
    verified_domain(other_account, "other.test")
    theirs = server_make(other_account, name="theirs")
    kept = _send(theirs, **{"from": "x@other.test"})
    OutboundMessage.objects.filter(pk=kept).update(created_at=timezone.now() - timedelta(days=60))
    mailbox_mail = message_enqueue(
        organization=live.account.org,
        mail_from="a@acme.test",
        recipients=["b@x.test"],
        raw=b"Subject: old\r\n\r\nx\r\n",
    )
    QueuedRecipient.objects.filter(message=mailbox_mail).update(status=RecipientStatus.BOUNCED)
    OutboundMessage.objects.filter(pk=mailbox_mail.pk).update(
        created_at=timezone.now() - timedelta(days=31)
    )

    assert message_logs_prune(now=timezone.now(), batch=2) == 6
    left = set(OutboundMessage.objects.values_list("pk", flat=True))
    assert left == {recent, waiting, kept}
    for model in (MessageBody, QueuedRecipient, DeliveryEvent, ServerMessage):
        assert not model.objects.filter(message_id__in=[*expired, mailbox_mail.pk]).exists()
    assert not MessageMetadata.objects.exclude(message_id__in=left).exists()
    assert message_logs_prune(now=timezone.now()) == 0
    assert _ids(live, "") == [waiting, recent]


def test_retention_stops_after_max_batches_and_goes_on_next_run(live):
    for _ in range(3):
        _old(live, 45)
    assert message_logs_prune(now=timezone.now(), batch=1, max_batches=2) == 2
    assert message_logs_prune(now=timezone.now(), batch=1, max_batches=2) == 1


def test_retention_runs_as_a_periodic_task(live):
    _old(live, 31)
    entry = BEAT_SCHEDULE["queue-message-logs-prune"]
    assert entry["task"] == message_logs_prune_task.name
    assert message_logs_prune_task() == 1
