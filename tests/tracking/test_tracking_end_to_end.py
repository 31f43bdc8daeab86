"""End to end over real sockets: an HTML message sent through the send API (Django's live
server, a real HTTP client) reaches an aiosmtpd sink DKIM-signed, with a valid signature
over the rewritten links and the pixel; fetching the pixel and a link through the live
web app records opened (an Apple MPP prefetch flagged, then the person's first and
repeated open) and clicked, in order, each passed on to a webhook endpoint; the click
redirects to the stored URL."""

from __future__ import annotations

import email
import json
import re
from email.policy import default as default_policy

import dkim
import pytest
from django.test import Client

from mailplane.api.tracking import PIXEL
from mailplane.domains.models import Domain
from mailplane.queue.models import DeliveryEvent, QueuedRecipient
from mailplane.webhooks.consumer import events_consume
from mailplane.webhooks.models import WebhookDelivery
from mailplane.webhooks.services import webhook_endpoint_create
from tests.delivery.test_end_to_end import dns_dkim_key, run_delivery_until
from tests.support.http_client import http_call
from tests.support.servers import send_body
from tests.support.smtp_sink import mx_port, mx_sinks  # noqa: F401
from tests.tracking.conftest import TRACK_DOMAIN

pytestmark = pytest.mark.timeout(90)

BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15"
ORDER = "https://shop.acme.test/order/42?ref=mail&x=1"
HTML = (
    "<html><body><p>Thanks for your <b>order</b>.</p>"
    f'<p><a href="{ORDER.replace("&", "&amp;")}">See your order</a></p>'
    '<p><a href="mailto:help@acme.test">Write to us</a> '
    '<a href="https://acme.test/unsubscribe?u=7">Unsubscribe</a> '
    '<a href="https://acme.test/private" data-mp-notrack>Kept</a></p>'
    "</body></html>"
)
TRACKED = re.compile(rf"https://{re.escape(TRACK_DOMAIN)}/([oc])/([A-Za-z0-9_-]+)")


def test_a_tracked_message_is_signed_rewritten_and_its_hits_recorded(
    transactional_db,
    live_server,
    account,
    tracked,
    dns_server,
    mx_sinks,  # noqa: F811
    settings,
    tmp_path,
):
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "DELIVERY_SMTP_TIMEOUT": 5.0,
        "STORAGE_ROOT": str(tmp_path / "storage"),
    }
    domain = Domain.objects.get(organization=account.org, name="acme.test")
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", sink.address)
    dns_server.txt(
        f"{domain.dkim_selector}._domainkey.acme.test",
        f"v=DKIM1; k=rsa; p={domain.dkim_public_key}",
    )
    webhook_endpoint_create(
        server=tracked.server, url="https://hooks.acme.test/in", event_types=["opened", "clicked"]
    )
    reply = http_call(
        live_server.url, "POST", "/api/email/",
        headers={"Authorization": f"Bearer {tracked.key}"},
        json_body=send_body(to="Carol <carol@dest.test>", subject="Receipt", html=HTML),
    )  # fmt: skip
    assert reply.status == 200, reply.body
    message_id = reply.json()["id"]

    run_delivery_until(lambda: len(sink.received) >= 1)
    [got] = sink.received
    assert got.data.startswith(b"DKIM-Signature:")
    assert dkim.verify(got.data, dnsfunc=dns_dkim_key)  # signed after the rewrite
    parsed = email.message_from_bytes(got.data, policy=default_policy)
    html = parsed.get_body(preferencelist=("html",)).get_content()
    found = TRACKED.findall(html)
    assert [kind for kind, _ in found] == ["c", "o"]  # one link rewritten, one pixel
    click_token, pixel_token = found[0][1], found[1][1]
    assert ORDER.replace("&", "&amp;") not in html
    for kept in ("mailto:help@acme.test", "https://acme.test/unsubscribe?u=7",
                 "https://acme.test/private"):  # fmt: skip
        assert kept in html
    assert "See your order" in html and "<b>order</b>" in html

    # Apple's proxy fetches the pixel on arrival: flagged, not the person's first open.
    prefetch = Client(REMOTE_ADDR="17.58.63.9", HTTP_USER_AGENT="Mozilla/5.0")
    assert prefetch.get(f"/o/{pixel_token}").status_code == 200
    host = {"Host": TRACK_DOMAIN, "User-Agent": BROWSER}
    for _ in range(2):
        pixel = http_call(live_server.url, "GET", f"/o/{pixel_token}", headers=host)
        assert pixel.status == 200 and pixel.body == PIXEL
        assert pixel.headers["content-type"] == "image/gif"
        assert "no-cache" in pixel.headers["cache-control"]
    click = http_call(live_server.url, "GET", f"/c/{click_token}", headers=host)
    assert click.status == 302 and click.headers["location"] == ORDER
    assert click.headers["referrer-policy"] == "no-referrer"

    rcpt = QueuedRecipient.objects.get(message_id=message_id)
    events = [
        (e.type, e.detail, e.recipient_id)
        for e in DeliveryEvent.objects.filter(message_id=message_id).order_by("seq")
    ]
    assert events == [
        ("queued", "", rcpt.pk),
        ("delivered", "attempt 1", rcpt.pk),
        ("opened", "machine:apple_mpp", rcpt.pk),
        ("opened", "first", rcpt.pk),
        ("opened", "repeat", rcpt.pk),
        ("clicked", f"first {ORDER}", rcpt.pk),
    ]
    detail = account.client.get(f"/api/messages/{message_id}/").json()
    assert [e["type"] for e in detail["events"]][-4:] == ["opened"] * 3 + ["clicked"]

    # The webhook consumer reads them from the stream like any other event.
    events_consume()
    bodies = [json.loads(d.body) for d in WebhookDelivery.objects.order_by("event_seq")]
    assert [(b["type"], b["data"]["detail"]) for b in bodies] == [
        ("opened", "machine:apple_mpp"),
        ("opened", "first"),
        ("opened", "repeat"),
        ("clicked", f"first {ORDER}"),
    ]
    assert {b["data"]["recipient"] for b in bodies} == {"carol@dest.test"}
