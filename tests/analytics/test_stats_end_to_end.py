"""End to end over real sockets: messages POSTed over HTTP to /api/email/ with a server
key are delivered by the delivery service loop to local aiosmtpd sinks (one accepting,
one answering 550 5.1.1), the analytics service counts the events it finds in the stream,
and /api/servers/{id}/stats/… over HTTP shows what happened: sent, delivered, a hard
bounce at the rejecting domain, and one latency measured."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailplane.analytics.consumer import cursor_position
from mailplane.analytics.runner import AnalyticsWorker
from mailplane.queue.events import events_last_seq
from mailplane.queue.models import QueuedRecipient, RecipientStatus
from tests.delivery.test_end_to_end import run_delivery_until
from tests.support.fixtures import verified_domain
from tests.support.http_client import http_call
from tests.support.servers import send_body, server_make
from tests.support.smtp_sink import mx_port, mx_sinks  # noqa: F401

pytestmark = pytest.mark.timeout(90)


def run_analytics_until_caught_up(*, timeout: float = 20.0) -> None:
    """The analytics service loop (run_forever) until its cursor reaches the stream's end."""

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(AnalyticsWorker().run_forever(stop))
        deadline = time.monotonic() + timeout
        while await asyncio.to_thread(lambda: cursor_position() < events_last_seq()):
            assert time.monotonic() < deadline, "analytics did not catch up in time"
            assert not task.done(), task
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, timeout)

    asyncio.run(main())


def test_real_deliveries_show_in_the_stats(
    transactional_db,
    live_server,
    account,
    dns_server,
    mx_sinks,  # noqa: F811
    settings,
    tmp_path,
):
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "DELIVERY_SMTP_TIMEOUT": 5.0,
        "STORAGE_ROOT": str(tmp_path / "storage"),
        "ANALYTICS_POLL_INTERVAL": 0.02,
    }
    domain = verified_domain(account, "acme.test")
    live = server_make(account, "production")
    good, bad = mx_sinks("accept"), mx_sinks("reject")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", good.address)
    dns_server.mx("gone.test", "mx1.gone.test", preference=10)
    dns_server.a("mx1.gone.test", bad.address)
    dns_server.txt(
        f"{domain.dkim_selector}._domainkey.acme.test",
        f"v=DKIM1; k=rsa; p={domain.dkim_public_key}",
    )
    bearer = {"Authorization": f"Bearer {live.key}"}
    for to, tags in (("carol@dest.test", ["receipt"]), ("nobody@gone.test", ["promo"])):
        reply = http_call(
            live_server.url,
            "POST",
            "/api/email/",
            headers=bearer,
            json_body=send_body(to=to, subject="Hello", tags=tags),
        )
        assert reply.status == 200, reply.body

    # The loop's condition runs on the event loop: sockets only, no ORM. Stopping drains
    # the sends in flight and records their outcomes.
    run_delivery_until(lambda: len(good.received) >= 1 and bad.quits >= 1)
    assert len(good.received) == 1
    assert set(QueuedRecipient.objects.values_list("status", flat=True)) == {
        RecipientStatus.DELIVERED,
        RecipientStatus.BOUNCED,
    }
    run_analytics_until_caught_up()

    api_key = {"Authorization": f"Api-Key {account.key}"}
    base = f"/api/servers/{live.server.pk}/stats/"
    stats = http_call(live_server.url, "GET", base, headers=api_key)
    assert stats.status == 200, stats.body
    totals = stats.json()["totals"]
    assert (totals["sent"], totals["delivered"], totals["bounced"]) == (2, 1, 1)
    assert totals["bounced_by_class"]["hard"] == 1
    assert stats.json()["rates"]["delivery_rate"] == 0.5
    promo = http_call(live_server.url, "GET", base + "?tag=promo&group_by=hour", headers=api_key)
    assert promo.json()["totals"]["delivered"] == 0 and promo.json()["totals"]["bounced"] == 1
    latency = http_call(live_server.url, "GET", base + "latency/", headers=api_key).json()
    assert latency["count"] == 1 and latency["p50"] is not None
    full = {"Authorization": f"Bearer {live.full_key}"}
    domains = http_call(live_server.url, "GET", "/api/server/stats/bounce-domains/", headers=full)
    assert domains.json()["domains"] == [{"domain": "gone.test", "bounced": 1}]
