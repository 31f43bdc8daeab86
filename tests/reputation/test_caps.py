"""Volume caps per server and per server key (reputation/caps.py), counted in recipients.

Hold mode on an injected clock: each hour's and day's deliveries counted at the sink to the
message, in the order they were queued. Refuse mode at the send API: 429 with Retry-After
and the time of acceptance, batches admitted as a prefix, and (PostgreSQL) concurrent
requests that cannot overshoot the cap.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from mailplane.core.windows import hour_of
from mailplane.delivery.worker import DeliveryWorker
from mailplane.pools.services import (
    pool_address_add,
    pool_assign,
    pool_create,
    pool_schedule_set,
)
from mailplane.pools.warmup import warmup_advance
from mailplane.queue.models import OutboundMessage, QueuedRecipient
from mailplane.reputation.models import CapUsage
from mailplane.servers.services import server_key_create
from tests.pools.test_pools import _NET
from tests.support.fixtures import verified_domain
from tests.support.http_client import http_call
from tests.support.servers import drain, send_body, server_client, server_make
from tests.support.smtp_sink import mx_port, mx_sinks  # noqa: F401
from tests.support.tools import skip_for_mode

pytestmark = pytest.mark.timeout(120)

START = datetime(2027, 1, 4, tzinfo=UTC)  # after any real `now`: queued mail is due


def _send(client: Any, n: int, tag: str) -> None:
    for i in range(n):
        reply = client.post("/api/email/", send_body(to=f"{tag}{i}@dest.test"), format="json")
        assert reply.status_code == 200, reply.content


def test_hold_mode_server_caps_counted_per_hour_and_day_at_the_sink(
    account: Any, dest: Any
) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account, hourly_cap=3, daily_cap=5)
    _send(live.client, 12, "m")  # a hold-mode key (the default): all accepted
    worker = DeliveryWorker()
    expected = {  # minutes after START → how many reach the sink in that pass
        5: 3,
        65: 2,  # the day's 5 are spent: the rest waits for tomorrow
        125: 0,
        24 * 60 + 5: 3,
        25 * 60 + 5: 2,
        26 * 60 + 5: 0,
        48 * 60 + 5: 2,
    }
    seen = 0
    for minutes, count in expected.items():
        drain(worker, START + timedelta(minutes=minutes))
        assert len(dest.received) - seen == count, minutes
        seen = len(dest.received)
    # In the order they were queued, whatever the holds.
    assert [r.rcpt_tos[0] for r in dest.received] == [f"m{i}@dest.test" for i in range(12)]
    rows = CapUsage.objects.filter(scope=f"server:{live.server.pk}")
    usage = {u.hour: u.recipients for u in rows}
    assert usage == {
        START: 3,
        START + timedelta(hours=1): 2,
        START + timedelta(days=1): 3,
        START + timedelta(days=1, hours=1): 2,
        START + timedelta(days=2): 2,
    }


def test_held_recipients_wait_unattempted_with_the_reason(account: Any, dest: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account, hourly_cap=2)
    _send(live.client, 5, "h")
    drain(DeliveryWorker(), START + timedelta(minutes=30))
    held = list(QueuedRecipient.objects.filter(status="deferred").order_by("id"))
    assert len(held) == 3 and len(dest.received) == 2
    for row in held:
        assert row.attempts == 0
        assert row.next_attempt_at == START + timedelta(hours=1)
        assert row.last_reply == (
            f"451 4.7.0 volume cap: server {live.server.pk} at its cap until 2027-01-04 01:00 UTC"
        )


def test_a_key_cap_binds_that_key_only(account: Any, dest: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    capped = server_key_create(server=live.server, name="capped", hourly_cap=1, daily_cap=2)
    _send(server_client(capped.secret), 4, "c")
    _send(live.client, 4, "free")  # the server's other key has no cap
    worker = DeliveryWorker()
    drain(worker, START + timedelta(minutes=1))
    got = sorted(r.rcpt_tos[0] for r in dest.received)
    assert got == ["c0@dest.test", *[f"free{i}@dest.test" for i in range(4)]]
    drain(worker, START + timedelta(hours=1, minutes=1))
    drain(worker, START + timedelta(hours=2, minutes=1))
    assert len(dest.received) == 6  # the key's daily 2
    assert QueuedRecipient.objects.filter(status="deferred").count() == 2


def test_refuse_mode_answers_429_with_the_time_of_acceptance(account: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    key = server_key_create(
        server=live.server, name="strict", hourly_cap=2, daily_cap=10, cap_mode="refuse"
    )
    client = server_client(key.secret)
    before = timezone.now()
    _send(client, 2, "r")
    reply = client.post("/api/email/", send_body(to="r2@dest.test"), format="json")
    after = timezone.now()
    assert reply.status_code == 429, reply.content
    body = reply.json()["error"]
    assert body["code"] == "over_cap"
    retry_at = datetime.fromisoformat(body["details"]["retry_at"][0])
    assert retry_at in {hour_of(before) + timedelta(hours=1), hour_of(after) + timedelta(hours=1)}
    wait = int(reply["Retry-After"])
    assert 1 <= wait <= 3600 and body["details"]["retry_after"] == [str(wait)]
    assert OutboundMessage.objects.count() == 2  # the refused one was not queued
    # More recipients than the cap could ever take: no wait helps, so no 429.
    too_many = client.post(
        "/api/email/", send_body(to=["a@dest.test", "b@dest.test", "c@dest.test"]), format="json"
    )
    assert too_many.status_code == 403, too_many.content
    assert too_many.json()["error"]["details"] == {"to": ["at most 2 recipients per hour"]}


def test_refuse_mode_admits_a_batch_as_a_prefix(account: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account, hourly_cap=3)  # the server's cap binds the refusing key too
    key = server_key_create(server=live.server, name="strict", cap_mode="refuse")
    batch = [send_body(to=f"b{i}@dest.test") for i in range(3)]
    batch[1]["to"] = ["b1@dest.test", "b1x@dest.test"]  # 2 recipients: 1 + 2 = 3 fit
    batch.append(send_body(to="b3@dest.test"))
    reply = server_client(key.secret).post("/api/email/batch/", batch, format="json")
    assert reply.status_code == 200, reply.content
    items = reply.json()
    assert [i["status"] for i in items] == ["queued", "queued", "error", "error"]
    assert items[2]["error"]["code"] == "over_cap"
    assert CapUsage.objects.get(scope=f"server:{live.server.pk}").recipients == 3
    assert OutboundMessage.objects.count() == 2


def test_concurrent_refuse_mode_requests_never_overshoot(
    transactional_db: Any, live_server: Any, account: Any
) -> None:
    if not connection.features.has_select_for_update:
        skip_for_mode("SQLite has one writer at a time: nothing runs concurrently")
    verified_domain(account, "acme.test")
    live = server_make(account)
    key = server_key_create(
        server=live.server, name="strict", hourly_cap=5, daily_cap=5, cap_mode="refuse"
    )
    headers = {"Authorization": f"Bearer {key.secret}"}

    def post(i: int) -> int:
        reply = http_call(
            live_server.url,
            "POST",
            "/api/email/",
            headers=headers,
            json_body=send_body(to=f"p{i}@dest.test"),
        )
        return reply.status

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, range(16)))
    assert sorted(statuses) == [200] * 5 + [429] * 11
    assert OutboundMessage.objects.count() == 5
    assert CapUsage.objects.get(scope=f"key:{key.server_key.pk}").recipients == 5


def test_a_batch_item_over_a_cap_itself_is_refused_alone(account: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    key = server_key_create(server=live.server, name="strict", hourly_cap=2, cap_mode="refuse")
    batch = [
        send_body(to="a@dest.test"),
        send_body(to=["x@dest.test", "y@dest.test", "z@dest.test"]),  # 3 > 2, ever
        send_body(to="b@dest.test"),
    ]
    reply = server_client(key.secret).post("/api/email/batch/", batch, format="json")
    items = reply.json()
    assert [i["status"] for i in items] == ["queued", "error", "queued"], items
    assert items[1]["error"]["code"] == "limit_reached"
    assert items[1]["error"]["details"] == {"to": ["at most 2 recipients per hour"]}


def test_a_429_is_not_kept_as_the_idempotent_answer(account: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    key = server_key_create(server=live.server, name="strict", hourly_cap=1, cap_mode="refuse")
    client = server_client(key.secret)
    _send(client, 1, "first")
    headers = {"HTTP_IDEMPOTENCY_KEY": "order-77"}
    body = send_body(to="again@dest.test")
    refused = client.post("/api/email/", body, format="json", **headers)
    assert refused.status_code == 429
    # The account raises the cap; the client retries with the same key, and is served.
    account.client.patch(f"/api/server-keys/{key.server_key.pk}/", {"hourly_cap": 5}, format="json")
    again = client.post("/api/email/", body, format="json", **headers)
    assert again.status_code == 200, again.content
    assert "Idempotent-Replayed" not in again


def test_recipients_a_warm_up_cap_holds_are_not_counted_against_the_volume_cap(
    account: Any, dest: Any
) -> None:
    """Caps and warm-up reserve in one transaction: what warm-up holds gives its volume
    reservation back, so the cap counts only what was sent."""
    verified_domain(account, "acme.test")
    live = server_make(account, hourly_cap=10)
    pool = pool_create(name="warming")
    pool_schedule_set(pool=pool, schedule=[{"daily": 2, "hourly": 1}, {"daily": 4, "hourly": 2}])
    pool_address_add(pool=pool, address=f"{_NET}.70", helo_name="w70.mail.test", warmup=True)
    pool_assign(pool=pool, organization=account.org)
    warmup_advance(now=START)
    _send(live.client, 3, "w")
    drain(DeliveryWorker(), START + timedelta(minutes=5))
    assert len(dest.received) == 1  # the address's hourly 1
    assert CapUsage.objects.get(scope=f"server:{live.server.pk}").recipients == 1
    drain(DeliveryWorker(), START + timedelta(hours=1, minutes=5))
    assert len(dest.received) == 2
    hour_two = CapUsage.objects.get(
        scope=f"server:{live.server.pk}", hour=START + timedelta(hours=1)
    )
    assert hour_two.recipients == 1
