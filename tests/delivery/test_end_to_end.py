"""End to end, real sockets throughout: a mailbox submits over SMTP (implicit TLS, AUTH) to
the submission server, the delivery service loop finds the destination's MX through the
local DNS server and delivers to an aiosmtpd sink on its own 127.x address; the sink gets
the message DKIM-signed (verified against the key the DNS server publishes) with the body
byte for byte, and /api/messages/ shows queued → delivered with the reply and MX host."""

from __future__ import annotations

import asyncio
import time

import dkim
import pytest

from mailplane.delivery.worker import DeliveryWorker
from mailplane.dns import txt_lookup
from tests.smtp.conftest import PASSWORD, listeners, make_mailbox, smtps, tls_pair  # noqa: F401
from tests.support.fixtures import verified_domain

pytestmark = pytest.mark.timeout(60)


def dns_dkim_key(name: bytes, timeout: int = 5) -> bytes:
    """dkimpy's key lookup, answered by the test DNS server (settings' resolver)."""
    found = txt_lookup(name.decode().rstrip("."))
    return found.records[0].encode() if found.found else b""


def run_delivery_until(condition, *, timeout: float = 20.0) -> None:
    """Run the delivery service loop (run_forever) until `condition()` holds, then stop it;
    stopping waits for in-flight sends and records their outcomes."""

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(DeliveryWorker(rng=lambda: 0.5).run_forever(stop))
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "delivery did not happen in time"
            assert not task.done(), task
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, timeout)

    asyncio.run(main())


def test_submitted_mail_reaches_the_mx_signed_and_intact(
    listeners,  # noqa: F811
    account,
    dns_server,
    mx_sinks,
):
    domain = verified_domain(account, "acme.test")
    alice = make_mailbox(account, domain, "alice")
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", sink.address)
    dns_server.txt(
        f"{domain.dkim_selector}._domainkey.acme.test",
        f"v=DKIM1; k=rsa; p={domain.dkim_public_key}",
    )
    body = (
        b"Hello Carol,\r\n\r\n  indented line with trailing spaces   \r\n"
        b"Gr\xc3\xbc\xc3\x9fe, 8-bit UTF-8\r\n.a line starting with a dot\r\n"
        + b"x" * 900
        + b"\r\n-- \r\nAlice\r\n"
    )
    raw = (
        b"From: Alice <alice@acme.test>\r\nTo: Carol <carol@dest.test>\r\n"
        b"Subject: End to end\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ) + body

    with smtps(listeners) as client:
        client.login(alice.address, PASSWORD)
        assert client.sendmail(alice.address, ["carol@dest.test"], raw) == {}

    run_delivery_until(lambda: len(sink.received) == 1)

    [got] = sink.received
    assert got.rcpt_tos == ["carol@dest.test"]
    assert got.mail_from.endswith("@" + domain.return_path_host)  # VERP return path
    assert got.data.startswith(b"DKIM-Signature:")
    assert dkim.verify(got.data, dnsfunc=dns_dkim_key)
    assert got.data.split(b"\r\n\r\n", 1)[1] == body  # byte-intact
    assert not dkim.verify(got.data.replace(b"Alice\r\n", b"Alicf\r\n"), dnsfunc=dns_dkim_key)

    listed = account.client.get(f"/api/messages/?mailbox={alice.pk}").json()
    assert listed["count"] == 1
    [message] = listed["results"]
    assert message["subject"] == "End to end"
    assert [r["status"] for r in message["recipients"]] == ["delivered"]
    detail = account.client.get(f"/api/messages/{message['id']}/").json()
    events = [(e["type"], e["remote_host"]) for e in detail["events"]]
    assert events == [("queued", ""), ("delivered", "mx1.dest.test")]
    assert detail["events"][1]["remote_reply"].startswith("250 ")
    assert "queued as sink" in detail["events"][1]["remote_reply"]
