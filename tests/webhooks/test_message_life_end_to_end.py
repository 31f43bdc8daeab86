"""Issue 12's scripted message life, every part real: a batch of two broadcast messages sent
through the live web app; delivery over SMTP to two local MX sinks (carol's accepts, dave's
refuses with 550 5.1.1); carol opens her message twice, clicks its link and unsubscribes
with the one-click POST of RFC 8058, each through the live web app; then the webhook worker
posts to a receiver that fails its first five attempts. The receiver must see each event
exactly once, in order per message, with signatures that both reference libraries
(Python and JS `standardwebhooks`) accept."""

from __future__ import annotations

import email
import json
import re
from email.policy import default as default_policy

import pytest
from standardwebhooks.webhooks import Webhook

from mailplane.queue.models import QueuedRecipient, RecipientStatus
from mailplane.webhooks.models import WebhookAttempt, WebhookEventType
from mailplane.webhooks.runner import WebhookWorker
from mailplane.webhooks.services import webhook_endpoint_create
from tests.delivery.test_end_to_end import run_delivery_until
from tests.support.http_client import http_call
from tests.support.servers import send_body
from tests.support.smtp_sink import mx_port, mx_sinks  # noqa: F401
from tests.support.webhook_receiver import Answer, Receiver
from tests.tracking.conftest import TRACK_DOMAIN, tracked  # noqa: F401
from tests.webhooks.conftest import node_verified

pytestmark = pytest.mark.timeout(120)

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
LINK = "https://shop.acme.test/sale"
HTML = f'<html><body><p>Our sale starts now.</p><p><a href="{LINK}">Shop</a></p></body></html>'
TRACKED = re.compile(rf"https://{re.escape(TRACK_DOMAIN)}/([oc])/([A-Za-z0-9_-]+)")
UNSUBSCRIBE = re.compile(r"<https?://[^/]+(/unsubscribe/[a-z2-7]{26}/)>")


def test_a_scripted_life_reaches_the_receiver_once_per_event_after_five_failures(
    transactional_db,
    live_server,
    account,
    tracked,  # noqa: F811
    dns_server,
    mx_sinks,  # noqa: F811
    receiver: Receiver,
    node_verify,
    settings,
    tmp_path,
):
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "DELIVERY_SMTP_TIMEOUT": 5.0,
        "STORAGE_ROOT": str(tmp_path / "storage"),
    }
    accepting, refusing = mx_sinks("accept"), mx_sinks("reject")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", accepting.address)
    dns_server.mx("gone.test", "mx1.gone.test", preference=10)
    dns_server.a("mx1.gone.test", refusing.address)
    issued = webhook_endpoint_create(
        server=tracked.server, url=receiver.url(), event_types=WebhookEventType.values
    )
    receiver.script = lambda n, body: Answer(503, b"warming up") if n < 5 else Answer(200)

    batch = http_call(
        live_server.url, "POST", "/api/email/batch/",
        headers={"Authorization": f"Bearer {tracked.key}"},
        json_body=[
            send_body(to="carol@dest.test", subject="Sale", html=HTML, stream="broadcast",
                      tags=["sale"]),
            send_body(to="dave@gone.test", subject="Sale", html=HTML, stream="broadcast",
                      tags=["sale"]),
        ],
    )  # fmt: skip
    assert batch.status == 200, batch.body
    carol_id, dave_id = (item["id"] for item in batch.json())

    # Read at the sinks (the condition runs on the worker's event loop); stopping the
    # worker waits for both sessions' outcomes to be recorded.
    run_delivery_until(lambda: len(accepting.received) == 1 and refusing.quits >= 1)
    statuses = dict(
        QueuedRecipient.objects.filter(message_id__in=[carol_id, dave_id]).values_list(
            "message_id", "status"
        )
    )
    assert statuses == {carol_id: RecipientStatus.DELIVERED, dave_id: RecipientStatus.BOUNCED}
    delivered = email.message_from_bytes(accepting.received[0].data, policy=default_policy)
    html = delivered.get_body(preferencelist=("html",)).get_content()
    tokens = dict(TRACKED.findall(html))
    unsubscribe = UNSUBSCRIBE.search(str(delivered["List-Unsubscribe"]))
    assert unsubscribe is not None and set(tokens) == {"o", "c"}

    as_carol = {"Host": TRACK_DOMAIN, "User-Agent": BROWSER}
    for _ in range(2):
        pixel = http_call(live_server.url, "GET", f"/o/{tokens['o']}", headers=as_carol)
        assert pixel.status == 200
    click = http_call(live_server.url, "GET", f"/c/{tokens['c']}", headers=as_carol)
    assert (click.status, click.headers["location"]) == (302, LINK)
    one_click = http_call(
        live_server.url, "POST", unsubscribe[1],
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=b"List-Unsubscribe=One-Click",
    )  # fmt: skip
    assert one_click.status == 200, one_click.body

    WebhookWorker().run_until_idle(timeout=60)

    expected = {
        carol_id: [
            ("queued", ""),
            ("delivered", "attempt 1"),
            ("opened", "first"),
            ("opened", "repeat"),
            ("clicked", f"first {LINK}"),
            ("unsubscribed", ""),
        ],
        dave_id: [("queued", ""), ("bounced", "")],
    }
    total = sum(len(events) for events in expected.values())
    assert [r.status for r in receiver.received] == [503] * 5 + [200] * total
    accepted = receiver.accepted()
    assert len({r.headers["webhook-id"] for r in accepted}) == total  # none twice
    verifier = Webhook(issued.secret)
    seen: dict[int, list[tuple[str, str]]] = {carol_id: [], dave_id: []}
    for r in accepted:
        payload = verifier.verify(r.body, r.headers)
        data = payload["data"]
        assert (data["stream"], data["tags"]) == ("broadcast", ["sale"])
        recipient = {carol_id: "carol@dest.test", dave_id: "dave@gone.test"}[data["message_id"]]
        assert data["recipient"] == recipient
        detail = data.get("detail") or ""
        if payload["type"] == "bounced":
            assert data["bounce_class"] == "hard"
            assert data["remote_reply"].startswith("550 5.1.1")
            detail = ""
        if payload["type"] == "unsubscribed":
            detail = ""
        seen[data["message_id"]].append((payload["type"], detail))
    assert seen == expected  # each once, and in order per message

    js = node_verified(
        node_verify,
        [
            {"secret": issued.secret, "body": r.body.decode(), "headers": r.headers}
            for r in accepted
        ]
        + [  # tampered: must fail, or the check proves nothing
            {
                "secret": issued.secret,
                "body": accepted[0].body.decode().replace('"type"', '"kind"'),
                "headers": accepted[0].headers,
            }
        ],
    )
    assert [r["ok"] for r in js] == [True] * total + [False]
    assert [json.loads(r.body)["type"] for r in accepted] == [r["type"] for r in js[:-1]]
    # Every attempt is visible with its status; the five failures kept their excerpt.
    attempts = list(WebhookAttempt.objects.filter(endpoint=issued.endpoint))
    assert sorted(a.status_code for a in attempts) == [200] * total + [503] * 5
    assert {a.response_excerpt for a in attempts if a.status_code == 503} == {"warming up"}
