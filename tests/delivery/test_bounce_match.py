"""Inbound DSNs to a VERP return path are matched back to the queue row."""

from __future__ import annotations

from mailplane.delivery.bounces import bounce_match, verp_address, verp_recipient_id
from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import DeliveryEvent, QueuedRecipient, Suppression


def remote_dsn(rcpt: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.dest.test\r\nTo: " + rcpt + "\r\nSubject: failure\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.dest.test\r\n\r\n"
        "Final-Recipient: rfc822; carol@dest.test\r\nAction: failed\r\nStatus: 5.2.1\r\n"
        "Remote-MTA: dns; store.dest.test\r\nDiagnostic-Code: smtp; 550 5.2.1 mailbox disabled\r\n"
        "\r\n--b--\r\n"
    ).encode()


def test_async_bounce_marks_suppresses_and_notifies(sender, fake_mailgun):
    from mailplane.relays.models import RelayServer

    relay = RelayServer.objects.create(
        organization=sender.account.org,
        name="mg",
        provider="mailgun",
        configuration={"domain": fake_mailgun.domain, "base_url": fake_mailgun.base_url},
        credentials={"api_key": fake_mailgun.api_key},
    )
    message = sender.send("carol@dest.test", relay=relay)
    DeliveryWorker().run_once()
    row = QueuedRecipient.objects.get(message=message)
    assert row.status == "delivered", row.last_reply
    verp = verp_address(recipient_id=row.pk, return_path_host=sender.domain.return_path_host)

    assert bounce_match(verp, remote_dsn(verp)) == row.pk

    row.refresh_from_db()
    assert row.status == "bounced" and "5.2.1" in row.last_reply
    event = DeliveryEvent.objects.filter(message=message).last()
    assert (event.type, event.remote_host) == ("bounced", "store.dest.test")
    assert Suppression.objects.filter(address="carol@dest.test").exists()


def test_forged_or_foreign_addresses_do_not_match(sender):
    message = sender.send("carol@dest.test")
    row = QueuedRecipient.objects.get(message=message)
    good = verp_address(recipient_id=row.pk, return_path_host="rp.acme.test")
    forged = good.replace(f"+{row.pk}-", f"+{row.pk + 1}-")
    assert bounce_match(forged, remote_dsn(forged)) is None
    assert bounce_match("alice@acme.test", b"") is None
    assert QueuedRecipient.objects.get(pk=row.pk).status == "queued"


OLD_KEY = "old-key-" + "o" * 40
NEW_KEY = "new-key-" + "n" * 40


def test_bounces_of_mail_sent_before_a_key_rotation_still_match(sender, secret_keys, settings):
    """A bounce comes back days after the send: a key rotation in between must not turn it
    into unmatched mail. New mail is tagged with the newest key; retiring a key ends only
    the tags made under it."""
    # The keys the account's secrets were stored under stay configured (oldest).
    stored = list(settings.SECRET_KEYS)
    secret_keys(OLD_KEY, *stored)
    message = sender.send("carol@dest.test")
    row = QueuedRecipient.objects.get(message=message)
    before = verp_address(recipient_id=row.pk, return_path_host="rp.acme.test")

    secret_keys(NEW_KEY, OLD_KEY, *stored)
    after = verp_address(recipient_id=row.pk, return_path_host="rp.acme.test")
    assert after != before  # signed with the newest key
    assert verp_recipient_id(after) == row.pk
    assert bounce_match(before, remote_dsn(before)) == row.pk
    assert QueuedRecipient.objects.get(pk=row.pk).status == "bounced"

    secret_keys(NEW_KEY, *stored)  # the old key retired
    assert verp_recipient_id(after) == row.pk
    assert verp_recipient_id(before) is None
