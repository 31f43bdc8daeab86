"""Why a queued recipient waits, and until when (queue/waiting.py): each reason made by
the real services (the send API, delivery on an injected clock against a sink, the
pause), read back through the selector and the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from mailplane.delivery.claims import recipients_claim
from mailplane.delivery.worker import DeliveryWorker
from mailplane.pools.services import (
    pool_address_add,
    pool_address_enable,
    pool_assign,
    pool_create,
    pool_schedule_set,
)
from mailplane.pools.warmup import warmup_advance
from mailplane.queue.models import DeliveryEvent, QueuedRecipient
from mailplane.queue.waiting import QueueFilter, server_queue
from mailplane.reputation.pause import owner_pause
from mailplane.servers.services import server_key_create
from tests.pools.test_pools import _NET
from tests.support.fixtures import verified_domain
from tests.support.servers import send_body, server_client, server_make
from tests.support.smtp_sink import mx_port, mx_sinks  # noqa: F401

pytestmark = pytest.mark.timeout(120)

START = datetime(2027, 1, 4, tzinfo=UTC)  # after any real `now`: queued mail is due


@pytest.fixture
def dest(dns_server: Any, mx_sinks: Any) -> Any:  # noqa: F811
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", sink.address)
    return sink


def _send(client: Any, *to: str, **fields: Any) -> list[int]:
    ids = []
    for address in to:
        reply = client.post("/api/email/", send_body(to=address, **fields), format="json")
        assert reply.status_code == 200, reply.content
        ids.append(reply.json()["id"])
    return ids


def _drain(worker: DeliveryWorker, now: datetime) -> None:
    for _ in range(100):
        if worker.run_once(now=now) == 0:
            return
    raise AssertionError("the queue never settled")


def _waiting(server_id: int, now: datetime, **where: Any) -> dict[str, tuple[str, Any, str]]:
    """recipient address -> (reason, until, detail) of the server's waiting rows."""
    rows = server_queue(server_id=server_id, where=QueueFilter(**where), now=now)
    return {r.rcpt_to: (r.waiting_reason, r.waiting_until, r.waiting_detail) for r in rows}


def test_scheduled_and_due(account: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    at = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    _send(live.client, "later@dest.test", send_at=at.isoformat())
    _send(live.client, "now@dest.test")
    seen = _waiting(live.server.pk, timezone.now())
    assert seen["later@dest.test"] == ("scheduled", at, "")
    reason, until, _ = seen["now@dest.test"]
    assert reason == "due" and until <= timezone.now()
    # Once its time has come, a scheduled row is simply due.
    assert _waiting(live.server.pk, at + timedelta(seconds=1))["later@dest.test"][0] == "due"


def test_volume_cap_until_the_window_reopens(account: Any, dest: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account, hourly_cap=1)
    _send(live.client, "a@dest.test", "b@dest.test")
    now = START + timedelta(minutes=5)
    _drain(DeliveryWorker(), now)
    seen = _waiting(live.server.pk, now)
    assert list(seen) == ["b@dest.test"]  # a was sent
    reason, until, detail = seen["b@dest.test"]
    assert (reason, until) == ("cap", START + timedelta(hours=1))
    assert detail.startswith(f"451 4.7.0 volume cap: server {live.server.pk}")


def test_warm_up_until_the_pool_has_room(account: Any, dest: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    pool = pool_create(name="warming")
    pool_schedule_set(pool=pool, schedule=[{"daily": 2, "hourly": 1}, {"daily": 4, "hourly": 2}])
    pool_address_add(pool=pool, address=f"{_NET}.71", helo_name="w71.mail.test", warmup=True)
    pool_assign(pool=pool, organization=account.org)
    warmup_advance(now=START)
    _send(live.client, "w1@dest.test", "w2@dest.test")
    now = START + timedelta(minutes=5)
    _drain(DeliveryWorker(), now)
    [(reason, until, detail)] = _waiting(live.server.pk, now).values()
    assert (reason, until) == ("warmup", START + timedelta(hours=1))
    assert "warm-up: IP pool warming" in detail


def test_pool_without_an_address(account: Any, dest: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    pool = pool_create(name="empty-pool")
    pool_address_add(pool=pool, address=f"{_NET}.72", helo_name="e72.mail.test")
    pool_address_enable(address=f"{_NET}.72", enabled=False)
    pool_assign(pool=pool, organization=account.org)
    _send(live.client, "p@dest.test")
    now = timezone.now()  # (a retry is bounded by the expiry, 72 h from the real now)
    DeliveryWorker().run_once(now=now)
    row = QueuedRecipient.objects.get(rcpt_to="p@dest.test")
    assert row.status == "deferred", (row.status, row.last_reply)
    reason, until, detail = _waiting(live.server.pk, now)["p@dest.test"]
    assert (reason, until) == ("pool", row.next_attempt_at)
    assert until > now and "no enabled address" in detail


def test_throttled_and_retry_after_deferrals(account: Any, dest: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    dest.handler.rcpt_replies.update(
        {
            "slow@dest.test": "421 4.7.28 our system has detected an unusual rate",
            "busy@dest.test": "452 4.2.2 mailbox over quota for now",
        }
    )
    # "busy" first: after a sender-wide throttle the connection's remaining recipients
    # wait unattempted (delivery/politeness.py), which is not what this test is about.
    _send(live.client, "busy@dest.test", "slow@dest.test")
    now = timezone.now()  # (a retry is bounded by the expiry, 72 h from the real now)
    _drain(DeliveryWorker(), now)
    seen = _waiting(live.server.pk, now)
    rows = {r.rcpt_to: r for r in QueuedRecipient.objects.all()}
    assert seen["slow@dest.test"][:2] == ("throttled", rows["slow@dest.test"].next_attempt_at)
    assert seen["busy@dest.test"][:2] == ("retry", rows["busy@dest.test"].next_attempt_at)
    assert "4.7.28" in seen["slow@dest.test"][2]
    for row in rows.values():
        assert row.attempts == 1 and row.next_attempt_at > now  # a backoff, not now
    # And by the filter.
    assert list(_waiting(live.server.pk, now, reason="throttled")) == ["slow@dest.test"]


def test_paused_server_and_key_until_resumed(account: Any, dest: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    other = server_key_create(server=live.server, name="other", kind="send_only")
    _send(live.client, "k@dest.test")
    _send(server_client(other.secret), "o@dest.test")
    owner_pause(owner=other.server_key, reason="complaint rate 1.00 %", now=START)
    now = START + timedelta(minutes=5)
    seen = _waiting(live.server.pk, now)
    assert seen["o@dest.test"] == ("paused", None, "complaint rate 1.00 %")
    assert seen["k@dest.test"][0] == "due"  # the other key's mail is not
    _drain(DeliveryWorker(), now)
    assert [r.rcpt_tos for r in dest.received] == [["k@dest.test"]]
    # Held by delivery meanwhile: still paused, until null (the recheck is no promise).
    assert _waiting(live.server.pk, now)["o@dest.test"] == ("paused", None, "complaint rate 1.00 %")
    owner_pause(owner=live.server, reason="hard-bounce rate 12.0 %", now=START)
    assert _waiting(live.server.pk, now)["o@dest.test"][0] == "paused"


def test_sending_while_a_worker_holds_it(account: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    _send(live.client, "x@dest.test")
    [_claimed] = recipients_claim(worker_id="w1", limit=10, lease=timedelta(seconds=30), now=START)
    seen = _waiting(live.server.pk, START + timedelta(seconds=1))
    assert seen["x@dest.test"] == ("sending", START + timedelta(seconds=30), "")
    # A lease that ran out: due again.
    assert _waiting(live.server.pk, START + timedelta(minutes=1))["x@dest.test"][0] == "due"


def test_the_message_detail_says_why_each_recipient_waits(account: Any, dest: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    at = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    [message] = _send(live.client, "later@dest.test", send_at=at.isoformat())
    for reply in (
        live.client.get(f"/api/server/messages/{message}/"),
        account.client.get(f"/api/messages/{message}/"),
    ):
        assert reply.status_code == 200, reply.content
        body = reply.json()
        expected = {"reason": "scheduled", "until": at.isoformat().replace("+00:00", "Z")}
        assert {k: body["waiting"][k] for k in ("reason", "until")} == expected
        assert body["recipients"][0]["waiting"]["reason"] == "scheduled"
    listed = live.client.get("/api/server/messages/").json()["results"][0]
    assert "waiting" not in listed  # the detail only: no per-row query in a list


def test_the_pause_query_has_its_index(db: Any) -> None:
    """reputation/pause.py reads a window of created_at for a few types."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, DeliveryEvent._meta.db_table)
    assert constraints["event_created_type"]["columns"] == ["created_at", "type"]
