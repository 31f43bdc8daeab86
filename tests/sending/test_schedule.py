"""`send_at` (issue 11): held in the queue until then (status scheduled, next attempt at
the send time), listed as scheduled, cancelled (POST …/cancel/) or moved (PATCH) until
it leaves, 409 once it has; every change an event through queue/transitions.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import DeliveryEvent, OutboundMessage, QueuedRecipient
from mailplane.queue.transitions import scheduled_move
from tests.support.fixtures import verified_domain
from tests.support.servers import send_body, server_make
from tests.support.smtp_sink import mx_port, mx_sinks  # noqa: F401

pytestmark = pytest.mark.timeout(60)


def _at(delta: timedelta) -> str:
    return (timezone.now() + delta).isoformat().replace("+00:00", "Z")


def _events(message_id: int) -> list[tuple[str, str]]:
    return list(DeliveryEvent.objects.filter(message_id=message_id).values_list("type", "detail"))


def _schedule(live, delta=timedelta(hours=2), **fields):
    reply = live.client.post("/api/email/", send_body(send_at=_at(delta), **fields), format="json")
    assert reply.status_code == 200, reply.json()
    return reply.json()


@pytest.fixture
def sink(dns_server, mx_sinks, settings, tmp_path):  # noqa: F811
    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(tmp_path / "storage")}
    found = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", found.address)
    return found


def test_a_scheduled_message_waits_in_the_queue_until_its_time(live, sink):
    sent = _schedule(live, timedelta(hours=2))
    assert sent["status"] == "scheduled"
    row = QueuedRecipient.objects.get(message_id=sent["id"])
    assert row.status == "scheduled"
    assert abs(row.next_attempt_at - (timezone.now() + timedelta(hours=2))) < timedelta(seconds=5)
    # The retry deadline counts from the send time, not from the request.
    assert row.expires_at - row.next_attempt_at == timedelta(hours=72)
    assert [t for t, _ in _events(sent["id"])] == ["queued", "scheduled"]
    assert _events(sent["id"])[1][1].startswith("until 20")
    # The logs list it as scheduled.
    listed = live.client.get("/api/server/messages/?status=scheduled").json()
    assert [m["id"] for m in listed["results"]] == [sent["id"]]
    detail = live.client.get(f"/api/server/messages/{sent['id']}/").json()
    assert detail["recipients"][0]["status"] == "scheduled"

    # Not due: the worker claims nothing, an hour later still nothing.
    assert DeliveryWorker().run_once() == 0
    assert DeliveryWorker().run_once(now=timezone.now() + timedelta(hours=1)) == 0
    assert sink.received == []
    # Due: delivered like any queued row.
    assert DeliveryWorker().run_once(now=timezone.now() + timedelta(hours=2, seconds=5)) == 1
    assert [r.rcpt_tos for r in sink.received] == [["carol@dest.test"]]
    row.refresh_from_db()
    assert row.status == "delivered"
    assert [t for t, _ in _events(sent["id"])] == ["queued", "scheduled", "delivered"]
    # Sent: too late to cancel or move.
    cancel = live.client.post(f"/api/server/messages/{sent['id']}/cancel/")
    assert cancel.status_code == 409
    assert cancel.json()["error"]["code"] == "not_scheduled"
    move = live.client.patch(
        f"/api/server/messages/{sent['id']}/", {"send_at": _at(timedelta(hours=3))}, format="json"
    )
    assert move.status_code == 409


def test_cancel_before_it_leaves_then_nothing_is_sent(live, sink):
    sent = _schedule(live, to=["carol@dest.test", "dave@dest.test"])
    reply = live.client.post(f"/api/server/messages/{sent['id']}/cancel/")
    assert reply.status_code == 200, reply.json()
    assert {r["status"] for r in reply.json()["recipients"]} == {"cancelled"}
    types = [t for t, _ in _events(sent["id"])]
    assert types == ["queued", "scheduled"] * 2 + ["cancelled"] * 2  # per row, in order
    # Twice: 409 (nothing scheduled any more), and no event.
    assert live.client.post(f"/api/server/messages/{sent['id']}/cancel/").status_code == 409
    assert len(_events(sent["id"])) == 6
    later = timezone.now() + timedelta(hours=3)
    assert DeliveryWorker().run_once(now=later) == 0
    assert sink.received == []


def test_reschedule_moves_the_send_time(live, sink):
    sent = _schedule(live, timedelta(hours=5))
    reply = live.client.patch(
        f"/api/server/messages/{sent['id']}/",
        {"send_at": _at(timedelta(minutes=30))},
        format="json",
    )
    assert reply.status_code == 200, reply.json()
    row = QueuedRecipient.objects.get(message_id=sent["id"])
    assert row.status == "scheduled"
    assert row.next_attempt_at < timezone.now() + timedelta(minutes=31)
    assert row.expires_at - row.next_attempt_at == timedelta(hours=72)
    assert _events(sent["id"])[-1][1].startswith("moved to 20")
    assert DeliveryWorker().run_once(now=timezone.now() + timedelta(minutes=31)) == 1
    assert len(sink.received) == 1


@pytest.mark.parametrize(
    ("send_at", "why"),
    [
        ("tomorrow", "RFC 3339"),
        ("2026-13-01T00:00:00Z", "valid"),
        ("2026-12-04T10:00:00", "RFC 3339"),  # no offset: ambiguous
        ("2026-12-04T10:00:00+25:00", "valid"),
        ("2026-12-04T10:00:60Z", "valid"),
        (1796000000, "RFC 3339"),  # a Unix time is no RFC 3339 string
        ("", "RFC 3339"),
        ("x" * 10_000, "RFC 3339"),
        ({"at": "now"}, "RFC 3339"),
        ("2001-01-01T00:00:00Z", "future"),
        ("past", None),  # one second ago
        ("73h", None),
    ],
)
def test_bad_send_at_is_a_422_naming_the_field_and_nothing_is_queued(live, send_at, why):
    if send_at == "past":
        send_at, why = _at(-timedelta(seconds=1)), "future"
    elif send_at == "73h":
        send_at, why = _at(timedelta(hours=73)), "72 hours"
    reply = live.client.post("/api/email/", send_body(send_at=send_at), format="json")
    assert reply.status_code == 422, reply.json()
    error = reply.json()["error"]
    assert error["code"] == "invalid_send_at"
    assert list(error["details"]) == ["send_at"]
    assert why in error["details"]["send_at"][0]
    assert not OutboundMessage.objects.exists()


def test_a_batch_names_the_bad_send_at_per_item(live):
    items = [send_body(send_at=_at(timedelta(hours=1))), send_body(send_at="yesterday")]
    reply = live.client.post("/api/email/batch/", items, format="json")
    assert reply.status_code == 200
    first, second = reply.json()
    assert first["status"] == "scheduled" and first["send_at"]
    assert second["status"] == "error" and second["error"]["code"] == "invalid_send_at"
    assert OutboundMessage.objects.count() == 1


def test_bad_reschedules_are_refused_and_change_nothing(live):
    sent = _schedule(live)
    path = f"/api/server/messages/{sent['id']}/"
    cases = [
        ({"send_at": "soon"}, 422, "send_at"),
        ({"send_at": _at(-timedelta(minutes=1))}, 422, "send_at"),
        ({"send_at": _at(timedelta(hours=80))}, 422, "send_at"),
        ({"send_at": "9" * 500}, 422, "send_at"),
        ({"send_at": 5}, 422, "send_at"),
        ({"send_at": None}, 400, "send_at"),
        ({}, 400, "send_at"),
        ({"send_at": _at(timedelta(hours=1)), "subject": "x"}, 400, "subject"),
    ]
    for body, status, field in cases:
        reply = live.client.patch(path, body, format="json")
        assert reply.status_code == status, (body, reply.json())
        assert field in reply.json()["error"]["details"], reply.json()
    assert [t for t, _ in _events(sent["id"])] == ["queued", "scheduled"]
    # Not JSON, or too big: the body's own 4xx.
    assert live.client.patch(path, "send_at=x", content_type="text/plain").status_code == 415
    huge = '{"send_at": "' + "1" * 3_000_000 + '"}'
    assert live.client.patch(path, huge, content_type="application/json").status_code == 413


def test_another_servers_message_is_not_found(live):
    sent = _schedule(live)
    other = server_make(live.account, "staging")
    for reply in (
        other.client.post(f"/api/server/messages/{sent['id']}/cancel/"),
        other.client.patch(
            f"/api/server/messages/{sent['id']}/",
            {"send_at": _at(timedelta(hours=1))},
            format="json",
        ),
        other.client.post("/api/server/messages/999999/cancel/"),
    ):
        assert reply.status_code == 404, reply.json()
    assert QueuedRecipient.objects.get(message_id=sent["id"]).status == "scheduled"


def test_a_send_only_key_cancels_what_it_scheduled(live):
    sent = _schedule(live)
    assert live.client.post(f"/api/server/messages/{sent['id']}/cancel/").status_code == 200


def test_a_sandbox_server_records_a_scheduled_message_as_delivered_at_once(account):
    verified_domain(account, "acme.test")
    sandbox = server_make(account, "staging", sandbox=True)
    reply = sandbox.client.post(
        "/api/email/", send_body(send_at=_at(timedelta(hours=1))), format="json"
    ).json()
    assert (reply["status"], reply["send_at"]) == ("delivered", None)


def test_a_due_scheduled_row_is_the_workers_not_the_cancels(live):
    """Once its send time has come a worker may hold the row: cancel and move leave it
    (no race with a send), and say 0 moved (the API's 409)."""
    sent = _schedule(live, timedelta(minutes=10))
    row = QueuedRecipient.objects.get(message_id=sent["id"])
    due = row.next_attempt_at + timedelta(seconds=1)
    for send_at in (None, due + timedelta(hours=1)):
        moved = scheduled_move(message_id=sent["id"], now=due, send_at=send_at, expires_at=None)
        assert moved == 0
    row.refresh_from_db()
    assert row.status == "scheduled" and row.next_attempt_at < due
    # A claim at that time takes it.
    assert DeliveryWorker().claim(now=due) != []
    assert [t for t, _ in _events(sent["id"])] == ["queued", "scheduled"]
