"""MI Shield's `hold` (issue 13): a message over its server's threshold is accepted (200
over the API, 250 over SMTP with a server key), durable, and held in the queue, where
delivery never claims it; the queue view says `held`, the message shows its verdict and a
`held` event (webhooks too); a release sends it to the destination's MX, a cancel drops
it. A clean message is not held; hostile filter settings are 400s naming the field."""

from __future__ import annotations

import base64
from datetime import timedelta
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import pytest
from django.utils import timezone

from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import DeliveryEvent, QueuedRecipient
from mailplane.webhooks.consumer import events_consume
from mailplane.webhooks.models import WebhookDelivery
from mailplane.webhooks.services import webhook_endpoint_create
from tests.delivery.test_end_to_end import run_delivery_until
from tests.smtp.conftest import listeners, smtps, tls_pair  # noqa: F401
from tests.support.fixtures import verified_domain
from tests.support.servers import ServerAccess, send_body, server_make
from tests.support.smtp_sink import mx_port, mx_sinks  # noqa: F401

# Transactional: the delivery service loop reads the queue from its own threads.
pytestmark = [pytest.mark.timeout(90), pytest.mark.django_db(transaction=True)]

EXE = {"filename": "setup.exe", "content": base64.b64encode(b"MZ").decode(),
       "content_type": "application/octet-stream"}  # fmt: skip


@pytest.fixture
def holding(account: Any) -> ServerAccess:
    verified_domain(account, "acme.test")
    return server_make(account, content_filter="hold")


@pytest.fixture
def dest(dns_server: Any, mx_sinks: Any) -> Any:  # noqa: F811
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", sink.address)
    return sink


def _statuses() -> dict[str, str]:
    return dict(QueuedRecipient.objects.values_list("rcpt_to", "status"))


def _never_claimed(now_ahead: timedelta = timedelta(days=1)) -> None:
    """A worker run with the clock well past everything: nothing of a held row is due."""
    worker = DeliveryWorker()
    assert worker.run_once(now=timezone.now() + now_ahead) == 0


def test_over_the_threshold_the_send_api_accepts_and_holds(
    holding: ServerAccess, dest: Any
) -> None:
    hook = webhook_endpoint_create(
        server=holding.server, url="https://hooks.acme.test/h", event_types=["held"]
    ).endpoint
    reply = holding.client.post(
        "/api/email/", send_body(to="held@dest.test", attachments=[EXE]), format="json"
    )
    assert reply.status_code == 200, reply.content
    assert reply.json()["status"] == "held"
    message_id = reply.json()["id"]
    assert _statuses() == {"held@dest.test": "held"}
    _never_claimed()
    assert dest.received == []
    # Why, three ways: the queue view, the message's verdict and its events.
    queue = holding.account.client.get(f"/api/servers/{holding.server.pk}/queue/").json()
    [entry] = queue["results"]
    assert (entry["recipient"], entry["waiting_reason"], entry["until"]) == (
        "held@dest.test",
        "held",
        None,
    )
    assert "DANGEROUS_ATTACHMENT (10)" in entry["detail"], entry
    shown = holding.account.client.get(
        f"/api/servers/{holding.server.pk}/queue/?reason=held"
    ).json()
    assert [e["recipient"] for e in shown["results"]] == ["held@dest.test"]
    detail = holding.client.get(f"/api/server/messages/{message_id}/").json()
    verdict = detail["content_verdict"]
    assert verdict["score"] >= 10
    assert verdict["symbols"][0]["name"] == "DANGEROUS_ATTACHMENT"
    assert verdict["symbols"][0]["score"] == 10
    assert [e["type"] for e in detail["events"]] == ["queued", "held"]
    assert detail["events"][1]["detail"].startswith("DANGEROUS_ATTACHMENT (10)")
    assert detail["recipients"][0]["waiting"]["reason"] == "held"
    listed = holding.client.get("/api/server/messages/?status=held").json()
    assert [m["id"] for m in listed["results"]] == [message_id]
    events_consume()
    [delivery] = WebhookDelivery.objects.filter(endpoint=hook)
    assert delivery.type == "held" and "DANGEROUS_ATTACHMENT" in delivery.body

    # Released: due now, and the delivery service loop sends it to the MX.
    released = holding.account.client.post(
        f"/api/servers/{holding.server.pk}/queue/release/", {"reason": "held"}, format="json"
    )
    assert released.json()["changed"] == 1, released.content
    run_delivery_until(lambda: len(dest.received) == 1)
    assert dest.received[0].rcpt_tos == ["held@dest.test"]
    assert b"setup.exe" in dest.received[0].data
    assert _statuses() == {"held@dest.test": "delivered"}
    types = DeliveryEvent.objects.filter(message_id=message_id).values_list("type", flat=True)
    assert list(types) == ["queued", "held", "released", "delivered"]


def test_a_clean_message_is_not_held(holding: ServerAccess, dest: Any) -> None:
    reply = holding.client.post("/api/email/", send_body(to="clean@dest.test"), format="json")
    assert reply.status_code == 200 and reply.json()["status"] == "queued", reply.content
    detail = holding.client.get(f"/api/server/messages/{reply.json()['id']}/").json()
    assert detail["content_verdict"] is None
    run_delivery_until(lambda: len(dest.received) == 1)
    assert _statuses() == {"clean@dest.test": "delivered"}


def test_a_cancelled_held_message_is_never_sent(holding: ServerAccess, dest: Any) -> None:
    batch = holding.client.post(
        "/api/email/batch/",
        [send_body(to="bad@dest.test", attachments=[EXE]), send_body(to="good@dest.test")],
        format="json",
    )
    assert [item["status"] for item in batch.json()] == ["held", "queued"], batch.content
    cancelled = holding.full_client.post(
        "/api/server/queue/cancel/", {"reason": "held"}, format="json"
    )
    assert cancelled.json()["changed"] == 1, cancelled.content
    run_delivery_until(lambda: len(dest.received) == 1)
    _never_claimed()
    assert [r.rcpt_tos for r in dest.received] == [["good@dest.test"]]
    assert _statuses() == {"bad@dest.test": "cancelled", "good@dest.test": "delivered"}


def test_a_scheduled_message_over_the_threshold_is_held_not_scheduled(
    holding: ServerAccess,
) -> None:
    send_at = (timezone.now() + timedelta(hours=1)).isoformat()
    reply = holding.client.post(
        "/api/email/", send_body(attachments=[EXE], send_at=send_at), format="json"
    )
    assert reply.status_code == 200, reply.content
    assert (reply.json()["status"], reply.json()["send_at"]) == ("held", None)
    assert _statuses() == {"carol@dest.test": "held"}


def test_a_sandbox_servers_message_is_recorded_not_held(account: Any) -> None:
    """A release would send what sandbox promises never to: sandbox wins."""
    verified_domain(account, "acme.test")
    sandbox = server_make(account, content_filter="hold", sandbox=True)
    reply = sandbox.client.post("/api/email/", send_body(attachments=[EXE]), format="json")
    assert reply.json()["status"] == "delivered", reply.content
    assert _statuses() == {"carol@dest.test": "delivered"}


def test_smtp_submission_with_a_server_key_holds_too(
    listeners: Any,  # noqa: F811
    holding: ServerAccess,
    dest: Any,
) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "alice@acme.test", "s@dest.test", "x"
    message.set_content("Run the attachment.")
    message.add_attachment(b"MZ", maintype="application", subtype="octet-stream",
                           filename="setup.exe")  # fmt: skip
    raw = message.as_bytes(policy=SMTP)
    with smtps(listeners) as client:
        client.login(holding.key, holding.key)
        client.mail("alice@acme.test")
        client.rcpt("s@dest.test")
        code, text = client.data(raw)
    assert code == 250, text
    assert text.decode().startswith("2.0.0 OK held as "), text
    assert _statuses() == {"s@dest.test": "held"}
    _never_claimed()
    assert dest.received == []
    queue = holding.full_client.get("/api/server/queue/?reason=held").json()
    assert [e["recipient"] for e in queue["results"]] == ["s@dest.test"]
    # A clean message over SMTP is queued as before.
    clean = EmailMessage()
    clean["From"], clean["To"], clean["Subject"] = "alice@acme.test", "t@dest.test", "hi"
    clean.set_content("Your order ships tomorrow.")
    with smtps(listeners) as client:
        client.login(holding.key, holding.key)
        client.mail("alice@acme.test")
        client.rcpt("t@dest.test")
        code, text = client.data(clean.as_bytes(policy=SMTP))
    assert code == 250 and b"queued as" in text, text
    holding.full_client.post("/api/server/queue/release/", {"reason": "held"}, format="json")
    run_delivery_until(lambda: len(dest.received) == 2)
    assert sorted(r.rcpt_tos[0] for r in dest.received) == ["s@dest.test", "t@dest.test"]


@pytest.mark.parametrize(
    "value",
    ["HOLD", "hold ", "held", "", None, 1, True, ["hold"], {"hold": True}, "h" * 10_000],
)
def test_hostile_content_filter_values_are_400_naming_the_field(
    holding: ServerAccess, value: object
) -> None:
    for reply in (
        holding.account.client.patch(
            f"/api/servers/{holding.server.pk}/", {"content_filter": value}, format="json"
        ),
        holding.account.client.post(
            "/api/servers/", {"name": "another", "content_filter": value}, format="json"
        ),
    ):
        assert reply.status_code == 400, (value, reply.content)
        assert "content_filter" in reply.json()["error"]["details"], reply.json()
    holding.server.refresh_from_db()
    assert holding.server.content_filter == "hold"


def test_hold_is_accepted_and_shown(holding: ServerAccess) -> None:
    server = holding.account.client.get(f"/api/servers/{holding.server.pk}/").json()
    assert server["content_filter"] == "hold"
    switched = holding.account.client.patch(
        f"/api/servers/{holding.server.pk}/", {"content_filter": "reject"}, format="json"
    )
    assert switched.json()["content_filter"] == "reject"
    back = holding.account.client.patch(
        f"/api/servers/{holding.server.pk}/", {"content_filter": "hold"}, format="json"
    )
    assert back.status_code == 200 and back.json()["content_filter"] == "hold"
