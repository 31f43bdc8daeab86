"""Per-stream suppression lists of a server: the API (list, filter, add, reactivate),
the send path and the delivery checklist reading them, and the auto-suppress toggles
honoured when bounces and complaints are recorded (by queue/transitions.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from mailplane.delivery.processor import batch_context_load, hold_if_suppressed
from mailplane.queue.models import (
    EventType,
    QueuedRecipient,
    RecipientStatus,
    Suppression,
    SuppressionReason,
)
from mailplane.queue.transitions import Transition, transitions_apply
from tests.support.fixtures import verified_domain
from tests.support.servers import send_body, server_make

LIST = "/api/server/suppressions/"


@pytest.fixture
def live(account):
    verified_domain(account, "acme.test")
    return server_make(account)


def _send(live, to="carol@dest.test", stream=None):
    reply = live.client.post("/api/email/", send_body(to=to, stream=stream), format="json")
    assert reply.status_code == 200, reply.json()
    return reply.json()


def test_a_manual_suppression_holds_for_its_stream_only_until_deleted(live):
    added = live.full_client.post(
        LIST,
        {"address": "Carol@Dest.test", "stream": "broadcast", "detail": "asked"},
        format="json",
    )
    assert added.status_code == 201, added.json()
    entry = added.json()
    assert (entry["address"], entry["stream"], entry["reason"], entry["detail"]) == (
        "carol@dest.test",
        "broadcast",
        "manual",
        "asked",
    )
    assert _send(live, stream="broadcast")["status"] == "suppressed"
    assert _send(live, stream="outbound")["status"] == "queued"  # another stream's list
    dup = live.full_client.post(
        LIST, {"address": "carol@dest.test", "stream": "broadcast"}, format="json"
    )
    assert dup.status_code == 409 and "address" in dup.json()["error"]["details"]

    assert live.full_client.delete(f"{LIST}{entry['id']}/").status_code == 204
    assert _send(live, stream="broadcast")["status"] == "queued"
    assert live.full_client.delete(f"{LIST}{entry['id']}/").status_code == 404


def test_the_default_stream_is_taken_when_none_is_named(live):
    added = live.full_client.post(LIST, {"address": "x@dest.test"}, format="json")
    assert added.json()["stream"] == "outbound"


def test_list_filters_and_pages(live):
    for address, stream in [
        ("a@d.test", "outbound"),
        ("b@d.test", "broadcast"),
        ("c@d.test", "outbound"),
    ]:
        live.full_client.post(LIST, {"address": address, "stream": stream}, format="json")
    old = Suppression.objects.get(address="a@d.test")
    Suppression.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))

    def addresses(query=""):
        reply = live.full_client.get(f"{LIST}{query}")
        assert reply.status_code == 200, reply.json()
        return [r["address"] for r in reply.json()["results"]]

    assert addresses() == ["c@d.test", "b@d.test", "a@d.test"]  # newest first
    assert addresses("?stream=outbound") == ["c@d.test", "a@d.test"]
    assert addresses("?address=B@D.test") == ["b@d.test"]
    assert addresses("?reason=manual&limit=1") == ["c@d.test"]
    assert addresses("?reason=hard_bounce") == []
    since = (timezone.now() - timedelta(days=1)).date().isoformat()
    assert addresses(f"?from={since}") == ["c@d.test", "b@d.test"]
    assert addresses(f"?to={since}") == ["a@d.test"]
    assert addresses("?stream=&address=") == ["c@d.test", "b@d.test", "a@d.test"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?reason=bogus", "reason"),
        ("?stream=nope", "stream"),
        ("?stream=" + "x" * 51, "stream"),
        ("?address=" + "x" * 321, "address"),
        ("?from=yesterday", "from"),
        ("?to=2026-02-30", "to"),
        ("?from=2026-12-01T25:00:00", "from"),
        ("?reason=manual&reason=complaint", "reason"),
        ("?limit=-1", "limit"),
    ],
)
def test_bad_list_parameters_are_400_naming_them(live, query, field):
    reply = live.full_client.get(f"{LIST}{query}")
    assert reply.status_code == 400, reply.content
    assert field in reply.json()["error"]["details"], reply.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "address"),
        ({"address": ""}, "address"),
        ({"address": "no-at"}, "address"),
        ({"address": "x" * 321}, "address"),
        ({"address": ["a@d.test"]}, "address"),
        ({"address": "a@d.test", "stream": "nope"}, "stream"),
        ({"address": "a@d.test", "stream": 7}, "stream"),
        ({"address": "a@d.test", "detail": "x" * 501}, "detail"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(live, body, field):
    reply = live.full_client.post(LIST, body, format="json")
    assert reply.status_code == 400, reply.content
    assert field in reply.json()["error"]["details"], reply.json()
    assert not Suppression.objects.exists()


def test_send_only_keys_and_other_servers_get_nothing(live, account, other_account):
    entry = live.full_client.post(LIST, {"address": "a@d.test"}, format="json").json()
    assert live.client.get(LIST).status_code == 403
    assert live.client.post(LIST, {"address": "b@d.test"}, format="json").status_code == 403
    assert live.client.delete(f"{LIST}{entry['id']}/").status_code == 403
    sibling = server_make(account, name="sibling")  # same account, another server
    stranger = server_make(other_account, name="stranger")
    for other in (sibling, stranger):
        assert other.full_client.get(LIST).json()["count"] == 0
        assert other.full_client.delete(f"{LIST}{entry['id']}/").status_code == 404
        assert other.full_client.delete(f"{LIST}99999999/").status_code == 404
    assert account.client.get(LIST).status_code == 401  # an account key is no server key
    assert Suppression.objects.filter(pk=entry["id"]).exists()


def _record(row, event, status, reason):
    transitions_apply(
        [
            Transition(
                row=row, event=event, status=status, reply="550 5.1.1 no such user", suppress=reason
            )
        ],
        now=timezone.now(),
    )


@pytest.mark.parametrize("toggle", [True, False])
def test_hard_bounces_are_suppressed_on_the_stream_as_the_server_says(live, toggle):
    live.full_client.patch("/api/server/", {"auto_suppress_bounces": toggle}, format="json")
    sent = _send(live, to="gone@dest.test", stream="broadcast")
    row = QueuedRecipient.objects.select_related("message").get(message_id=sent["id"])
    _record(row, EventType.BOUNCED, RecipientStatus.BOUNCED, SuppressionReason.HARD_BOUNCE)
    found = list(
        Suppression.objects.values_list("address", "reason", "stream__stream_id", "stream__server")
    )
    if toggle:
        assert found == [("gone@dest.test", "hard_bounce", "broadcast", live.server.pk)]
        listed = live.full_client.get(f"{LIST}?reason=hard_bounce").json()["results"]
        assert listed[0]["message"] == sent["id"]
        assert _send(live, to="gone@dest.test", stream="broadcast")["status"] == "suppressed"
    else:
        assert found == []
    assert _send(live, to="gone@dest.test", stream="outbound")["status"] == "queued"


@pytest.mark.parametrize("toggle", [True, False])
def test_complaints_are_suppressed_as_the_server_says(live, toggle):
    live.full_client.patch("/api/server/", {"auto_suppress_complaints": toggle}, format="json")
    sent = _send(live, to="angry@dest.test")
    row = QueuedRecipient.objects.select_related("message").get(message_id=sent["id"])
    _record(row, EventType.COMPLAINED, None, SuppressionReason.COMPLAINT)
    assert Suppression.objects.filter(reason="complaint").exists() is toggle
    # An unsubscribe is the recipient's wish: listed whatever the toggles (a listed
    # address keeps its first reason).
    _record(row, EventType.UNSUBSCRIBED, None, SuppressionReason.UNSUBSCRIBED)
    reasons = list(Suppression.objects.values_list("reason", flat=True))
    assert reasons == (["complaint"] if toggle else ["unsubscribed"])


def test_the_delivery_checklist_reads_the_stream_lists(live):
    """A row queued before its address was suppressed is held at delivery, on that
    stream only; an account-wide entry (mailbox mail's) holds on every stream."""
    on_broadcast = _send(live, to="late@dest.test", stream="broadcast")
    on_outbound = _send(live, to="late@dest.test", stream="outbound")
    live.full_client.post(LIST, {"address": "late@dest.test", "stream": "broadcast"}, format="json")
    rows = list(
        QueuedRecipient.objects.select_related("message").filter(
            message_id__in=[on_broadcast["id"], on_outbound["id"]]
        )
    )
    ctx = batch_context_load(rows)
    held = {r.message_id: hold_if_suppressed(r, ctx) is not None for r in rows}
    assert held == {on_broadcast["id"]: True, on_outbound["id"]: False}

    from mailplane.queue.transitions import SuppressionEntry, suppressions_add

    suppressions_add(
        [SuppressionEntry(live.account.org.pk, "late@dest.test", SuppressionReason.HARD_BOUNCE)]
    )
    ctx = batch_context_load(rows)
    assert all(hold_if_suppressed(r, ctx) is not None for r in rows)


def test_deleting_the_server_deletes_its_suppressions_only(live, account):
    other = server_make(account, name="other")
    live.full_client.post(LIST, {"address": "a@d.test"}, format="json")
    other.full_client.post(LIST, {"address": "a@d.test"}, format="json")
    assert account.client.delete(f"/api/servers/{live.server.pk}/").status_code == 204
    assert list(Suppression.objects.values_list("stream__server", flat=True)) == [other.server.pk]


def test_the_list_exports_as_csv(live):
    import csv
    import io

    for address, stream in [("=cmd@d.test", "outbound"), ("b@d.test", "broadcast")]:
        live.full_client.post(LIST, {"address": address, "stream": stream}, format="json")
    reply = live.full_client.get(f"{LIST}export/", HTTP_ACCEPT="text/csv")
    assert reply.status_code == 200 and reply["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(reply.content.decode())))
    assert rows[0] == ["address", "stream", "reason", "detail", "message", "created_at"]
    assert [r[:3] for r in rows[1:]] == [
        ["b@d.test", "broadcast", "manual"],
        ["'=cmd@d.test", "outbound", "manual"],  # a formula cell is defused
    ]
    only = live.full_client.get(f"{LIST}export/?stream=broadcast")
    assert only.content.decode().count("\r\n") == 2
    bad = live.full_client.get(f"{LIST}export/?reason=nope", HTTP_ACCEPT="text/csv")
    assert bad.status_code == 400 and "reason" in bad.json()["error"]["details"]
    assert live.client.get(f"{LIST}export/").status_code == 403  # send-only


def test_an_export_over_the_cap_asks_for_filters(live, monkeypatch):
    from mailplane.api import server_suppressions

    monkeypatch.setattr(server_suppressions, "EXPORT_MAX_ROWS", 1)
    for address in ("a@d.test", "b@d.test"):
        live.full_client.post(LIST, {"address": address}, format="json")
    reply = live.full_client.get(f"{LIST}export/")
    assert reply.status_code == 400 and "narrow" in reply.json()["error"]["message"]
    assert live.full_client.get(f"{LIST}export/?address=a@d.test").status_code == 200
