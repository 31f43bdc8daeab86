"""Inbound DSNs over SMTP: the MX takes mail for our VERP return paths and hands it to the
delivery engine's bounce matching (real sockets: delivery to a sink, then the DSN to the MX)."""

from __future__ import annotations

import smtplib

import pytest

from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import DeliveryEvent, QueuedRecipient, Suppression
from tests.smtp.conftest import listeners, maildir_files, tls_pair  # noqa: F401

pytestmark = pytest.mark.timeout(60)


def dsn_for(verp: str, failed: str) -> bytes:
    """What a remote MTA sends back (RFC 3464): multipart/report, Action: failed, 5.1.1."""
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.dest.test>\r\nTo: <{verp}>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.dest.test\r\n\r\n"
        f"Final-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Remote-MTA: dns; store.dest.test\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--b1--\r\n"
    ).encode()


@pytest.fixture
def delivered(listeners, sender, dns_server, mx_sinks):  # noqa: F811
    """One message delivered to a sink: returns (queue row, the VERP return path it used)."""
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test")
    dns_server.a("mx1.dest.test", sink.address)
    message = sender.send("carol@dest.test", subject="Will bounce later")
    assert DeliveryWorker(rng=lambda: 0.5).run_once() == 1
    [got] = sink.received
    row = QueuedRecipient.objects.get(message=message)
    assert row.status == "delivered"
    return row, got.mail_from


def mx_client(listeners) -> smtplib.SMTP:  # noqa: F811
    client = smtplib.SMTP(listeners.host, listeners.mx, timeout=10, local_hostname="mx.dest.test")
    client.ehlo()
    return client


def test_dsn_to_verp_address_bounces_suppresses_and_reports(listeners, sender, delivered):  # noqa: F811
    row, verp = delivered
    with mx_client(listeners) as client:
        # RFC 3464 §2 / RFC 5321 §4.5.5: reports come from the null sender.
        refused = client.sendmail("", [verp], dsn_for(verp, "carol@dest.test"))
        assert refused == {}

    row.refresh_from_db()
    assert row.status == "bounced" and "5.1.1" in row.last_reply
    last = DeliveryEvent.objects.filter(recipient=row).last()
    assert (last.type, last.remote_host) == ("bounced", "store.dest.test")
    assert Suppression.objects.filter(
        organization=sender.account.org, address="carol@dest.test", reason="hard_bounce"
    ).exists()
    # The report reaches the sender's INBOX; the MX filed nothing for the VERP address.
    [report] = maildir_files(sender.alice)
    text = report.read_bytes()
    assert b"Final-Recipient: rfc822; carol@dest.test" in text
    assert b"multipart/report" in text


def test_forged_verp_tag_is_refused(listeners, sender, delivered):  # noqa: F811
    row, verp = delivered
    local, _, host = verp.partition("@")
    forged_tag = local[:-1] + ("0" if local[-1] != "0" else "1") + "@" + host
    other_row = verp.replace(f"+{row.pk}-", f"+{row.pk + 1}-")
    with mx_client(listeners) as client:
        client.mail("")
        for address in (forged_tag, other_row, f"postmaster@{host}", f"bounces@{host}"):
            code, reply = client.rcpt(address)
            assert (code, reply[:5]) == (550, b"5.1.1"), address
        # A genuine tag at a host that is not this domain's return path host: not ours.
        code, reply = client.rcpt(verp.replace(host, "bounces.other.test"))
        assert (code, reply[:5]) == (550, b"5.7.1")
        assert client.docmd("DATA")[0] == 503
    row.refresh_from_db()
    assert row.status == "delivered"
    assert not Suppression.objects.exists()
    assert maildir_files(sender.alice) == []
