"""Bulk actions on a server's queue (queue/services.py queue_action, api/queue.py, the CLI):
release, retry now and cancel by filter, only on the matching mail of that server, through
the queue's one writer (events, webhooks); hostile filters are 400s naming the field;
resume of a paused server or key through the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from django.utils import timezone

from mailplane.cli import main
from mailplane.delivery.claims import recipients_claim
from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import DeliveryEvent, QueuedRecipient
from mailplane.queue.services import queue_action
from mailplane.queue.waiting import QueueFilter
from mailplane.reputation.models import CapUsage
from mailplane.reputation.pause import owner_pause
from mailplane.servers.models import EmailServer, ServerKey
from mailplane.webhooks.consumer import events_consume
from mailplane.webhooks.models import WebhookDelivery
from mailplane.webhooks.services import webhook_endpoint_create
from tests.support.fixtures import verified_domain
from tests.support.servers import drain, sent_ids, server_make
from tests.support.smtp_sink import mx_port, mx_sinks  # noqa: F401

pytestmark = pytest.mark.timeout(120)

START = datetime(2027, 1, 4, tzinfo=UTC)  # after any real `now`: queued mail is due


def _statuses(**where: Any) -> dict[str, str]:
    return dict(QueuedRecipient.objects.filter(**where).values_list("rcpt_to", "status"))


def test_release_sends_cap_held_mail_past_the_cap_and_counts_it(account: Any, dest: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account, hourly_cap=1)
    sent_ids(live.client, "a@dest.test", "b@dest.test", "c@dest.test")
    worker = DeliveryWorker()
    drain(worker, START + timedelta(minutes=5))
    assert len(dest.received) == 1
    reply = account.client.post(
        f"/api/servers/{live.server.pk}/queue/release/", {"reason": "cap"}, format="json"
    )
    assert reply.status_code == 200, reply.content
    assert reply.json() == {"action": "release", "changed": 2, "skipped": 0, "more": False}
    released = DeliveryEvent.objects.filter(type="released").values_list("detail", flat=True)
    assert len(released) == 2 and all(d.startswith("released by API key") for d in released)
    drain(worker, START + timedelta(minutes=6))
    assert sorted(r.rcpt_tos[0] for r in dest.received) == [f"{x}@dest.test" for x in "abc"]
    # Counted all the same: the next message waits for the window after them.
    hour = CapUsage.objects.get(scope=f"server:{live.server.pk}", hour=START)
    assert hour.recipients == 3
    sent_ids(live.client, "d@dest.test")
    drain(worker, START + timedelta(minutes=7))
    assert len(dest.received) == 3
    assert _statuses(rcpt_to="d@dest.test") == {"d@dest.test": "deferred"}


def test_release_of_a_paused_servers_mail_with_its_full_key(account: Any, dest: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    sent_ids(live.client, "p@dest.test", "q@dest.test")
    owner_pause(owner=live.server, reason="complaint rate 0.50 %", now=START)
    worker = DeliveryWorker()
    drain(worker, START + timedelta(minutes=1))
    assert dest.received == []
    reply = live.full_client.post(
        "/api/server/queue/release/", {"recipient": "P@dest.test"}, format="json"
    )
    assert reply.json()["changed"] == 1, reply.content
    shown = live.full_client.get("/api/server/queue/").json()["results"]
    assert {e["recipient"]: e["waiting_reason"] for e in shown} == {
        "p@dest.test": "due",  # released: the pause no longer holds it
        "q@dest.test": "paused",
    }
    drain(worker, START + timedelta(minutes=2))
    assert [r.rcpt_tos for r in dest.received] == [["p@dest.test"]]  # q still held
    assert EmailServer.objects.get(pk=live.server.pk).paused_at is not None  # still paused
    assert _statuses(rcpt_to="q@dest.test") == {"q@dest.test": "deferred"}


def test_retry_now_takes_a_deferred_recipient_at_once(account: Any, dest: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    dest.handler.rcpt_replies["busy@dest.test"] = "452 4.2.2 mailbox over quota for now"
    sent_ids(live.client, "busy@dest.test")
    worker = DeliveryWorker()
    worker.run_once(now=timezone.now())
    row = QueuedRecipient.objects.get()
    assert row.status == "deferred" and row.next_attempt_at > timezone.now()
    dest.handler.rcpt_replies.clear()
    reply = account.client.post(
        f"/api/servers/{live.server.pk}/queue/retry/",
        {"recipient_domain": "DEST.test"},
        format="json",
    )
    assert reply.json()["changed"] == 1, reply.content
    row.refresh_from_db()
    assert row.next_attempt_at <= timezone.now() and row.attempts == 1
    worker.run_once(now=timezone.now())
    assert _statuses() == {"busy@dest.test": "delivered"}
    assert (
        DeliveryEvent.objects.filter(type="released", detail__startswith="retry now").count() == 1
    )


def test_cancel_by_filter_touches_only_that_servers_matching_mail(
    account: Any, other_account: Any
) -> None:
    verified_domain(account, "acme.test")
    verified_domain(other_account, "acme2.test")
    mine = server_make(account)
    sibling = server_make(account, name="sibling")
    theirs = server_make(other_account, name="theirs")
    hook = webhook_endpoint_create(
        server=mine.server, url="https://hooks.acme.test/q", event_types=["cancelled"]
    ).endpoint
    sent_ids(mine.client, "n1@dest.test", "n2@dest.test", stream="broadcast")
    sent_ids(mine.client, "t1@dest.test")
    sent_ids(sibling.client, "s1@dest.test", stream="broadcast")
    sent_ids(theirs.client, "x1@dest.test", stream="broadcast", **{"from": "a@acme2.test"})

    reply = account.client.post(
        f"/api/servers/{mine.server.pk}/queue/cancel/", {"stream": "broadcast"}, format="json"
    )
    assert reply.json() == {"action": "cancel", "changed": 2, "skipped": 0, "more": False}
    assert _statuses() == {
        "n1@dest.test": "cancelled",
        "n2@dest.test": "cancelled",
        "t1@dest.test": "queued",
        "s1@dest.test": "queued",
        "x1@dest.test": "queued",
    }
    cancelled = DeliveryEvent.objects.filter(type="cancelled")
    assert sorted(e.recipient.rcpt_to for e in cancelled) == ["n1@dest.test", "n2@dest.test"]
    events_consume()
    assert WebhookDelivery.objects.filter(endpoint=hook, type="cancelled").count() == 2
    # Cancelled mail is never sent, and is no longer in the queue view.
    listed = account.client.get(f"/api/servers/{mine.server.pk}/queue/").json()
    assert [e["recipient"] for e in listed["results"]] == ["t1@dest.test"]
    # The other account cannot name this server at all.
    for path in ("queue/", "queue/cancel/", "queue/release/", "queue/retry/"):
        call = other_account.client.post if path != "queue/" else other_account.client.get
        assert call(f"/api/servers/{mine.server.pk}/{path}", {"all": True}).status_code == 404
    assert _statuses(rcpt_to="t1@dest.test") == {"t1@dest.test": "queued"}


def test_server_keys_full_acts_on_its_own_server_send_only_cannot(account: Any) -> None:
    verified_domain(account, "acme.test")
    mine = server_make(account)
    sibling = server_make(account, name="sibling")
    sent_ids(mine.client, "m@dest.test")
    sent_ids(sibling.client, "s@dest.test")
    for path in ("/api/server/queue/", "/api/server/queue/cancel/"):
        call = mine.client.get if path.endswith("queue/") else mine.client.post
        assert call(path, {"all": True}, format="json").status_code == 403  # send-only
        assert account.client.get(path).status_code == 401  # an account key is no server key
    listed = mine.full_client.get("/api/server/queue/").json()
    assert [e["recipient"] for e in listed["results"]] == ["m@dest.test"]
    entry = listed["results"][0]
    assert (entry["waiting_reason"], entry["stream"], entry["status"]) == (
        "due",
        "outbound",
        "queued",
    )
    reply = mine.full_client.post("/api/server/queue/cancel/", {"all": True}, format="json")
    assert reply.json()["changed"] == 1
    assert _statuses() == {"m@dest.test": "cancelled", "s@dest.test": "queued"}


def test_a_call_is_bounded_and_says_there_is_more(account: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    sent_ids(live.client, "a@dest.test", "b@dest.test", "c@dest.test")
    where = QueueFilter(recipient_domain="dest.test")
    first = queue_action(
        action="cancel",
        server_id=live.server.pk,
        where=where,
        now=timezone.now(),
        actor="t",
        limit=2,
    )
    assert (first.changed, first.more) == (2, True)
    second = queue_action(
        action="cancel",
        server_id=live.server.pk,
        where=where,
        now=timezone.now(),
        actor="t",
        limit=2,
    )
    assert (second.changed, second.more) == (1, False)
    # The claim order: oldest first.
    assert _statuses(status="cancelled") == {f"{x}@dest.test": "cancelled" for x in "abc"}


def test_rows_in_a_workers_hands_are_skipped(account: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    sent_ids(live.client, "a@dest.test")
    now = timezone.now()
    recipients_claim(worker_id="w", limit=5, lease=timedelta(minutes=5), now=now)
    done = queue_action(
        action="cancel", server_id=live.server.pk, where=QueueFilter(), now=now, actor="t"
    )
    assert done.changed == 0  # `sending` is no reason cancel takes
    assert _statuses() == {"a@dest.test": "queued"}


HOSTILE_QUERIES = [
    ("reason=bogus", "reason"),
    ("reason=released", "reason"),  # stored only, never a reason shown
    ("stream=%27%3B%20DROP%20TABLE%20x%3B--", "stream"),
    ("stream=" + "s" * 51, "stream"),
    ("recipient=no-at-sign", "recipient"),
    ("recipient=a%0d%0aBcc%3Ax@dest.test", "recipient"),
    ("recipient=" + "a" * 321, "recipient"),
    ("recipient_domain=" + "d" * 254, "recipient_domain"),
    ("recipient_domain=dest.test%27%20OR%201%3D1", "recipient_domain"),
    ("server_key=99999999999999999999", "server_key"),
    ("server_key=-1", "server_key"),
    ("server_key=%C2%B2", "server_key"),
    ("from=2026-02-30", "from"),
    ("to=" + "9" * 100, "to"),
    ("reason=cap&reason=paused", "reason"),
    ("colour=red", "colour"),
]


@pytest.mark.parametrize(("query", "field"), HOSTILE_QUERIES)
def test_hostile_filters_are_400_naming_the_field(account: Any, query: str, field: str) -> None:
    live = server_make(account)
    reply = account.client.get(f"/api/servers/{live.server.pk}/queue/?{query}")
    assert reply.status_code == 400, reply.content
    assert field in reply.json()["error"]["details"], reply.json()
    if "&" not in query:  # the same value in a bulk action's body
        name, _, value = query.partition("=")
        body = {name: unquote(value), "all": True}
        for action in ("release", "retry", "cancel"):
            reply = live.full_client.post(f"/api/server/queue/{action}/", body, format="json")
            assert reply.status_code == 400, (action, reply.content)
            assert field in reply.json()["error"]["details"], reply.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "all"),  # names nothing: not the whole queue by mistake
        ({"all": False}, "all"),
        ({"reasons": "cap"}, "reasons"),  # a misspelt filter is refused, never ignored
        ([{"all": True}], "body"),
        ({"all": "yes please"}, "all"),
        ({"reason": "retry"}, "reason"),  # release applies to held, paused, cap
        ({"server_key": True}, "server_key"),
        ({"reason": ["cap"]}, "reason"),
    ],
)
def test_hostile_action_bodies(account: Any, body: Any, field: str) -> None:
    live = server_make(account)
    reply = account.client.post(
        f"/api/servers/{live.server.pk}/queue/release/", body, format="json"
    )
    assert reply.status_code == 400, reply.content
    assert field in reply.json()["error"]["details"], reply.json()


def test_the_operator_cli(account: Any, capsys: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    other = server_make(account, name="other")
    sent_ids(live.client, "a@dest.test", "b@other.test")
    sent_ids(other.client, "c@dest.test")
    assert main(["queue", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sorted(line.split("\t")[3] for line in out) == [
        "a@dest.test",
        "b@other.test",
        "c@dest.test",
    ]
    assert all(line.split("\t")[4] == "due" for line in out)
    assert main(["queue", "list", "--server", str(live.server.pk), "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2

    assert main(["queue", "cancel"]) != 0  # no filter, no --all
    assert "--all" in capsys.readouterr().err
    assert main(["queue", "cancel", "--reason", "bogus"]) != 0
    assert "reason" in capsys.readouterr().err
    assert main(["queue", "cancel", "--recipient-domain", "dest.test"]) == 0
    assert "2 recipients changed" in capsys.readouterr().out  # both servers' (the operator)
    assert _statuses() == {
        "a@dest.test": "cancelled",
        "b@other.test": "queued",
        "c@dest.test": "cancelled",
    }
    assert main(["queue", "retry", "--server", str(live.server.pk), "--all"]) == 0
    assert "0 recipients changed" in capsys.readouterr().out


def test_resume_through_the_api(account: Any, other_account: Any, settings: Any) -> None:
    live = server_make(account)
    key = ServerKey.objects.get(server=live.server, name="send")
    owner_pause(owner=live.server, reason="hard-bounce rate 11.0 %", now=timezone.now())
    owner_pause(owner=key, reason="complaint rate 0.40 %", now=timezone.now())
    # Another account: not found, and nothing resumed.
    assert other_account.client.post(f"/api/servers/{live.server.pk}/resume/").status_code == 404
    assert other_account.client.post(f"/api/server-keys/{key.pk}/resume/").status_code == 404
    assert EmailServer.objects.get(pk=live.server.pk).paused_at is not None
    # An install that leaves it to the operator: 403, still paused.
    settings.MAILPLANE = {**settings.MAILPLANE, "REPUTATION_ACCOUNT_RESUME": False}
    refused = account.client.post(f"/api/servers/{live.server.pk}/resume/")
    assert refused.status_code == 403, refused.content
    assert EmailServer.objects.get(pk=live.server.pk).paused_at is not None
    settings.MAILPLANE = {**settings.MAILPLANE, "REPUTATION_ACCOUNT_RESUME": True}
    reply = account.client.post(f"/api/servers/{live.server.pk}/resume/")
    assert reply.status_code == 200, reply.content
    assert (reply.json()["paused_at"], reply.json()["paused_reason"]) == (None, "")
    reply = account.client.post(f"/api/server-keys/{key.pk}/resume/")
    assert reply.status_code == 200 and reply.json()["paused_at"] is None, reply.content
    assert ServerKey.objects.get(pk=key.pk).resumed_at is not None
    # Sending works again.
    verified_domain(account, "acme.test")
    sent_ids(live.client, "again@dest.test")
    assert account.client.post("/api/servers/99999999999/resume/").status_code == 404
