"""The automatic pause (reputation/pause.py): real deliveries to a sink that refuses (hard
bounces) or a provider's complaint reports push a server's and key's rates over the limits;
the periodic evaluation pauses them, the send API refuses with the reason, the account sees
it (server, key, notices), delivery holds their queued mail, and an operator resumes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from mailplane.cli import main
from mailplane.delivery.late import LateOutcome, late_outcomes_store
from mailplane.delivery.results import SendResult
from mailplane.delivery.worker import DeliveryWorker
from mailplane.periodic import BEAT_SCHEDULE
from mailplane.queue.models import EventType, QueuedRecipient
from mailplane.reputation.models import ReputationNotice
from mailplane.reputation.pause import owner_pause, reputation_evaluate
from mailplane.reputation.tasks import reputation_evaluate_recent
from mailplane.servers.models import EmailServer, ServerKey
from tests.support.fixtures import verified_domain
from tests.support.servers import send_body, server_make
from tests.support.smtp_sink import mx_port, mx_sinks  # noqa: F401

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def low_volume(settings: Any) -> None:
    settings.MAILPLANE = {**settings.MAILPLANE, "REPUTATION_PAUSE_MIN_VOLUME": 10}


def _send(client: Any, n: int, tag: str) -> None:
    for i in range(n):
        reply = client.post("/api/email/", send_body(to=f"{tag}{i}@dest.test"), format="json")
        assert reply.status_code == 200, reply.content


def _deliver() -> None:
    worker = DeliveryWorker(rng=lambda: 0.5)
    for _ in range(50):
        if worker.run_once() == 0:
            return
    raise AssertionError("the queue never settled")


def _later() -> Any:
    return timezone.now() + timedelta(seconds=1)


def test_hard_bounces_pause_the_server_and_its_key_until_resumed(
    account: Any, dest: Any, low_volume: None, capsys: Any
) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    send_key = ServerKey.objects.get(server=live.server, name="send")
    _send(live.client, 8, "ok")
    _deliver()
    dest.set_mode("reject")  # 550 5.1.1: hard bounces
    _send(live.client, 2, "gone")
    _deliver()
    assert QueuedRecipient.objects.filter(status="bounced", rcpt_domain="dest.test").count() == 2
    paused = reputation_evaluate(now=_later())  # 2 of 10 attempted: 20 %, over 10 %
    assert {(type(o).__name__, o.pk) for o in paused} == {
        ("EmailServer", live.server.pk),
        ("ServerKey", send_key.pk),
    }
    assert reputation_evaluate(now=_later()) == []  # paused once, told once

    # Sends refused, by either key of the server, naming the reason.
    for client in (live.client, live.full_client):
        reply = client.post("/api/email/", send_body(to="x@dest.test"), format="json")
        assert reply.status_code == 403, reply.content
        error = reply.json()["error"]
        assert error["code"] == "sending_paused"
        assert "hard-bounce rate 20.0% over the last 24 h (2 of 10" in error["message"]
    batch = live.client.post("/api/email/batch/", [send_body()], format="json")
    assert batch.status_code == 403

    # The account sees it: on the server, on the key, in its notices.
    shown = account.client.get(f"/api/servers/{live.server.pk}/").json()
    assert shown["paused_at"] is not None and "hard-bounce" in shown["paused_reason"]
    keys = account.client.get(f"/api/servers/{live.server.pk}/keys/").json()["results"]
    send = next(k for k in keys if k["id"] == send_key.pk)
    assert send["paused_at"] is not None and "hard-bounce" in send["paused_reason"]
    notices = account.client.get("/api/reputation-notices/").json()["results"]
    assert {(n["kind"], n["server"], n["server_key"]) for n in notices} == {
        ("paused", live.server.pk, None),
        ("paused", live.server.pk, send_key.pk),
    }

    # The operator resumes both; the old bounces no longer count.
    assert main(["server", "paused"]) == 0
    assert f"{live.server.pk}\t" in capsys.readouterr().out
    assert main(["server", "resume", "--id", str(live.server.pk)]) == 0
    assert main(["server-key", "resume", "--id", str(send_key.pk)]) == 0
    assert "server-key" in capsys.readouterr().out
    dest.set_mode("accept")
    _send(live.client, 1, "back")
    assert reputation_evaluate(now=_later()) == []
    kinds = list(ReputationNotice.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == ["paused", "paused", "resumed", "resumed"]
    assert main(["server", "resume", "--id", "999999"]) != 0  # unknown: said, not a trace
    assert "no server 999999" in capsys.readouterr().err


def test_a_small_sample_does_not_pause(account: Any, dest: Any, low_volume: None) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    dest.set_mode("reject")
    _send(live.client, 9, "gone")  # 100 % bounced, but 9 < the minimum of 10
    _deliver()
    assert reputation_evaluate(now=_later()) == []
    assert EmailServer.objects.get(pk=live.server.pk).paused_at is None


def test_complaints_pause_at_the_gmail_line(account: Any, dest: Any, low_volume: None) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    _send(live.client, 10, "ok")
    _deliver()
    row = QueuedRecipient.objects.select_related("message").order_by("id").first()
    assert row is not None
    late_outcomes_store(
        [
            LateOutcome(
                row,
                EventType.COMPLAINED,
                SendResult.permanent("complaint", "provider"),
                "test report",
            )
        ],
        now=timezone.now(),
    )
    paused = reputation_evaluate(now=_later())
    assert len(paused) == 2
    server = EmailServer.objects.get(pk=live.server.pk)
    assert server.paused_reason.startswith("complaint rate 10.00% over the last 24 h")


def test_a_paused_servers_queued_mail_is_held_unattempted(account: Any, dest: Any) -> None:
    verified_domain(account, "acme.test")
    live = server_make(account)
    _send(live.client, 2, "q")
    owner_pause(owner=live.server, reason="by hand", now=timezone.now())
    _deliver()
    assert dest.received == []
    for row in QueuedRecipient.objects.filter(rcpt_domain="dest.test"):
        assert (row.status, row.attempts) == ("deferred", 0)
        assert row.last_reply == f"451 4.7.1 server {live.server.pk} is paused: by hand"
        assert row.next_attempt_at > timezone.now() + timedelta(minutes=10)


def test_the_evaluation_is_periodic_and_its_query_count_bounded(
    account: Any, dest: Any, low_volume: None
) -> None:
    assert BEAT_SCHEDULE["reputation-evaluate"]["task"] == reputation_evaluate_recent.name
    verified_domain(account, "acme.test")
    for n in range(3):
        _send(server_make(account, f"s{n}").client, 4, f"s{n}-")
    _deliver()
    with CaptureQueriesContext(connection) as queries:
        assert reputation_evaluate(now=_later()) == []
    assert len(queries) == 3  # the aggregate, the servers, the keys: whatever their number
    assert reputation_evaluate_recent() == 0
