"""End to end over real sockets: a message POSTed over HTTP to /api/email/ (Django's live
server, a real HTTP client) with a server key is queued, and the delivery service loop
finds the destination's MX through the local DNS server and delivers it to an aiosmtpd
sink, DKIM-signed by the sender's domain; /api/messages/{id}/ then shows queued →
delivered. A sandbox server's message, sent beside it, never reaches the sink."""

from __future__ import annotations

import email
from email.policy import default as default_policy

import dkim
import pytest

from tests.delivery.test_end_to_end import dns_dkim_key, run_delivery_until
from tests.support.fixtures import verified_domain
from tests.support.http_client import http_call
from tests.support.servers import send_body, server_make
from tests.support.smtp_sink import mx_port, mx_sinks  # noqa: F401

pytestmark = pytest.mark.timeout(90)


def test_a_message_sent_over_http_is_delivered_signed(
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
    }
    domain = verified_domain(account, "acme.test")
    live = server_make(account, "production")
    sandbox = server_make(account, "staging", sandbox=True)
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", sink.address)
    dns_server.txt(
        f"{domain.dkim_selector}._domainkey.acme.test",
        f"v=DKIM1; k=rsa; p={domain.dkim_public_key}",
    )
    bearer = {"Authorization": f"Bearer {live.key}"}
    reply = http_call(
        live_server.url,
        "POST",
        "/api/email/",
        headers=bearer,
        json_body=send_body(
            to="Carol <carol@dest.test>",
            subject="Receipt 42",
            text="Thanks for your order.",
            html="<p>Thanks for your <b>order</b>.</p>",
            headers={"X-Order": "42"},
            tags=["receipt"],
        ),
    )
    assert reply.status == 200, reply.body
    sent = reply.json()
    assert sent["status"] == "queued"
    token = {"X-Server-Token": sandbox.key}
    dry = http_call(
        live_server.url, "POST", "/api/email/", headers=token,
        json_body=send_body(to="dave@dest.test", subject="sandboxed"),
    )  # fmt: skip
    assert dry.status == 200 and dry.json()["status"] == "delivered", dry.body

    run_delivery_until(lambda: len(sink.received) >= 1)

    [got] = sink.received
    assert got.rcpt_tos == ["carol@dest.test"]  # the sandbox's message never left
    assert got.mail_from.endswith("@" + domain.return_path_host)  # VERP return path
    assert got.data.startswith(b"DKIM-Signature:")
    assert dkim.verify(got.data, dnsfunc=dns_dkim_key)
    parsed = email.message_from_bytes(got.data, policy=default_policy)
    assert parsed["Subject"] == "Receipt 42"
    assert parsed["To"] == "Carol <carol@dest.test>"
    assert parsed["X-Order"] == "42"
    assert parsed["Message-ID"] == sent["message_id"]
    assert parsed.get_content_type() == "multipart/alternative"

    detail = account.client.get(f"/api/messages/{sent['id']}/").json()
    assert detail["source"] == "api"
    assert [r["status"] for r in detail["recipients"]] == ["delivered"]
    events = [(e["type"], e["remote_host"]) for e in detail["events"]]
    assert events == [("queued", ""), ("delivered", "mx1.dest.test")]
    dry_detail = account.client.get(f"/api/messages/{dry.json()['id']}/").json()
    assert [e["type"] for e in dry_detail["events"]] == ["queued", "delivered"]
    assert dry_detail["events"][1]["remote_host"] == ""
