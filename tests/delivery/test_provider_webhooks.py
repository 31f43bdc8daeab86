"""Provider webhooks: Mailgun and SendGrid report, after their 2xx, what became of the mail.

Each test relays a message through the local stand-in of the provider (the delivery worker
and the real HTTP provider code), then POSTs to our receiver the call the provider would
make about it, signed as the provider signs (HMAC-SHA256 for Mailgun, ECDSA P-256 for
SendGrid), and reads the outcome where a native one lands: the row, its events, the
suppression list, the sender's INBOX.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.utils import timezone
from rest_framework.test import APIClient

from mailplane.core.errors import ValidationFailed
from mailplane.delivery.providers.http_api import RECIPIENT_VARIABLE
from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import DeliveryEvent, QueuedRecipient, Suppression
from mailplane.relays.services import relay_server_create
from tests.smtp.conftest import maildir_files

pytestmark = pytest.mark.timeout(60)


def mailgun_relay(account, fake, **credentials):
    return relay_server_create(
        organization=account.org,
        name="mg",
        provider="mailgun",
        configuration={"domain": fake.domain, "base_url": fake.base_url},
        credentials={
            "api_key": fake.api_key,
            "webhook_signing_key": fake.webhook_signing_key,
            **credentials,
        },
    )


def sendgrid_relay(account, fake):
    return relay_server_create(
        organization=account.org,
        name="sg",
        provider="sendgrid",
        configuration={"base_url": fake.base_url},
        credentials={"api_key": fake.api_key, "webhook_verification_key": fake.verification_key},
    )


def relayed(sender, relay, fake, *to):
    """Send one message through `relay` (the worker, the provider's API stand-in): its rows,
    accepted by the provider, and the requests the provider received, by recipient."""
    message = sender.send(*(to or ("carol@dest.test",)), relay=relay)
    DeliveryWorker(rng=lambda: 0.5).run_once()
    rows = list(QueuedRecipient.objects.filter(message=message).order_by("pk"))
    assert [r.status for r in rows] == ["delivered"] * len(rows), [r.last_reply for r in rows]
    requests = {r.recipient: r for r in fake.requests}
    return rows, requests


def post_mailgun(relay_id, payload):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return APIClient().post(f"/webhooks/mailgun/{relay_id}/", body, content_type="application/json")


def post_sendgrid(relay_id, body, headers):
    meta = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}
    return APIClient().post(
        f"/webhooks/sendgrid/{relay_id}/", body, content_type="application/json", **meta
    )


def events_of(row):
    return list(DeliveryEvent.objects.filter(recipient=row).values_list("type", flat=True))


def error_code(response):
    return response.json()["error"]["code"]


def later_sends(sender, relay, fake, *to):
    """A new message to `to` through `relay` after a report: its rows once the worker ran,
    and how many requests the provider received for it."""
    before = len(fake.requests)
    message = sender.send(*to, relay=relay)
    DeliveryWorker(rng=lambda: 0.5).run_once()
    rows = list(QueuedRecipient.objects.filter(message=message).order_by("pk"))
    return rows, len(fake.requests) - before


# --- sending tags every message with our row id ------------------------------------------------


def test_sends_carry_the_queue_row_id(sender, fake_mailgun, fake_sendgrid):
    [mg_row], mg_requests = relayed(
        sender, mailgun_relay(sender.account, fake_mailgun), fake_mailgun
    )
    request = mg_requests["carol@dest.test"]
    assert request.fields[f"v:{RECIPIENT_VARIABLE}"] == str(mg_row.pk).encode()
    assert request.variables == {RECIPIENT_VARIABLE: str(mg_row.pk)}

    [sg_row], sg_requests = relayed(
        sender, sendgrid_relay(sender.account, fake_sendgrid), fake_sendgrid
    )
    body = sg_requests["carol@dest.test"].json
    assert body["custom_args"] == {RECIPIENT_VARIABLE: str(sg_row.pk)}


# --- Mailgun -------------------------------------------------------------------------------------


def test_mailgun_permanent_failure_bounces_suppresses_and_reports_once(sender, fake_mailgun):
    relay = mailgun_relay(sender.account, fake_mailgun)
    [row], requests = relayed(sender, relay, fake_mailgun)
    payload = fake_mailgun.webhook(
        requests["carol@dest.test"],
        event="failed",
        severity="permanent",
        reason="bounce",
        code=550,
        message="5.1.1 The email account that you tried to reach does not exist.",
        enhanced="5.1.1",
    )

    response = post_mailgun(relay.pk, payload)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "received": 1,
        "recorded": 1,
        "duplicates": 0,
        "ignored": 0,
        "in_flight": 0,
    }
    row.refresh_from_db()
    assert row.status == "bounced"
    assert row.last_reply == "550 5.1.1 The email account that you tried to reach does not exist."
    assert row.attempts == 1  # Mailgun's attempts are not ours
    bounce = DeliveryEvent.objects.filter(recipient=row).last()
    assert (bounce.type, bounce.remote_host) == ("bounced", "mx1.dest.test")
    assert bounce.detail == f"mailgun event {payload['event-data']['id']}"
    suppression = Suppression.objects.get(organization=sender.account.org)
    assert (suppression.address, suppression.reason) == ("carol@dest.test", "hard_bounce")
    [report] = maildir_files(sender.alice)
    text = report.read_bytes()
    assert b"Final-Recipient: rfc822; carol@dest.test" in text
    assert b"Status: 5.1.1" in text and b"Remote-MTA: dns; mx1.dest.test" in text

    # The same call again (a replay), and Mailgun's retry of the event signed anew.
    retry = fake_mailgun.webhook(
        requests["carol@dest.test"],
        event="failed",
        severity="permanent",
        reason="bounce",
        code=550,
        message="5.1.1 The email account that you tried to reach does not exist.",
        event_id=payload["event-data"]["id"],
    )
    for again in (payload, retry):
        response = post_mailgun(relay.pk, again)
        assert response.status_code == 200
        assert (response.json()["recorded"], response.json()["duplicates"]) == (0, 1)
    assert events_of(row) == ["queued", "delivered", "bounced"]
    assert len(maildir_files(sender.alice)) == 1
    assert Suppression.objects.count() == 1


def test_mailgun_delivered_records_the_receiving_mx_reply(sender, fake_mailgun):
    relay = mailgun_relay(sender.account, fake_mailgun)
    [row], requests = relayed(sender, relay, fake_mailgun)
    payload = fake_mailgun.webhook(
        requests["carol@dest.test"], event="delivered", code=250, message="OK", enhanced="2.0.0"
    )

    assert post_mailgun(relay.pk, payload).json()["recorded"] == 1

    row.refresh_from_db()
    assert (row.status, row.last_reply) == ("delivered", "250 2.0.0 OK")
    accepted, delivered = DeliveryEvent.objects.filter(recipient=row, type="delivered")
    assert "Queued. Thank you." in accepted.remote_reply  # the API's answer
    assert (delivered.remote_reply, delivered.remote_host) == ("250 2.0.0 OK", "mx1.dest.test")
    assert not Suppression.objects.exists()
    assert maildir_files(sender.alice) == []


def test_mailgun_temporary_failure_is_a_deferred_event_only(sender, fake_mailgun):
    relay = mailgun_relay(sender.account, fake_mailgun)
    [row], requests = relayed(sender, relay, fake_mailgun)
    payload = fake_mailgun.webhook(
        requests["carol@dest.test"],
        event="failed",
        severity="temporary",
        reason="generic",
        code=421,
        message="4.7.0 Try again later",
    )

    assert post_mailgun(relay.pk, payload).json()["recorded"] == 1

    after = QueuedRecipient.objects.get(pk=row.pk)
    assert (after.status, after.attempts, after.last_reply) == ("delivered", 1, row.last_reply)
    assert after.next_attempt_at == row.next_attempt_at
    deferred = DeliveryEvent.objects.filter(recipient=row).last()
    assert (deferred.type, deferred.remote_reply) == ("deferred", "421 4.7.0 Try again later")
    # Mailgun keeps retrying: nothing is due on our side.
    assert DeliveryWorker(rng=lambda: 0.5).run_once(now=timezone.now() + timedelta(hours=1)) == 0
    assert not Suppression.objects.exists()
    assert maildir_files(sender.alice) == []


def test_mailgun_giving_up_bounces_like_an_expired_retry(sender, fake_mailgun):
    """Severity permanent with a 4xx (reason "old": Mailgun's retries ran out): bounced with
    a DSN, but the address is not suppressed, as when our own retries expire."""
    relay = mailgun_relay(sender.account, fake_mailgun)
    [row], requests = relayed(sender, relay, fake_mailgun)
    payload = fake_mailgun.webhook(
        requests["carol@dest.test"],
        event="failed",
        severity="permanent",
        reason="old",
        code=421,
        message="Service not available",
    )

    assert post_mailgun(relay.pk, payload).json()["recorded"] == 1

    row.refresh_from_db()
    assert (row.status, row.last_reply) == ("bounced", "421 Service not available")
    assert not Suppression.objects.exists()
    [report] = maildir_files(sender.alice)
    assert b"Status: 5.4.7" in report.read_bytes()


def test_mailgun_suppression_list_drop_is_suppressed(sender, fake_mailgun):
    relay = mailgun_relay(sender.account, fake_mailgun)
    [row], requests = relayed(sender, relay, fake_mailgun)
    payload = fake_mailgun.webhook(
        requests["carol@dest.test"],
        event="failed",
        severity="permanent",
        reason="suppress-bounce",
        code=605,
        message="Not delivering to previously bounced address",
    )

    assert post_mailgun(relay.pk, payload).json()["recorded"] == 1

    row.refresh_from_db()
    assert row.status == "suppressed" and "suppress-bounce" in row.last_reply
    assert events_of(row)[-1] == "suppressed"
    assert maildir_files(sender.alice) == []  # as for our own suppression list: no DSN


def test_mailgun_complaint_suppresses_the_address_without_a_dsn(sender, fake_mailgun):
    relay = mailgun_relay(sender.account, fake_mailgun)
    [row], requests = relayed(sender, relay, fake_mailgun)
    payload = fake_mailgun.webhook(requests["carol@dest.test"], event="complained")

    response = post_mailgun(relay.pk, payload)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "received": 1,
        "recorded": 1,
        "duplicates": 0,
        "ignored": 0,
        "in_flight": 0,
    }
    after = QueuedRecipient.objects.get(pk=row.pk)
    assert (after.status, after.last_reply) == ("delivered", row.last_reply)  # it was
    complaint = DeliveryEvent.objects.filter(recipient=row).last()
    assert (complaint.type, complaint.remote_reply) == (
        "complained",
        "spam complaint reported by Mailgun",
    )
    assert complaint.detail == f"mailgun event {payload['event-data']['id']}"
    suppression = Suppression.objects.get(organization=sender.account.org)
    assert (suppression.address, suppression.reason) == ("carol@dest.test", "complaint")
    assert suppression.message_id == row.message_id
    assert maildir_files(sender.alice) == []  # nothing failed: no DSN
    shown = sender.account.client.get(f"/api/messages/{row.message_id}/").json()
    assert [e["type"] for e in shown["events"]] == ["queued", "delivered", "complained"]

    # A replay and Mailgun's retry signed anew: recorded once.
    retry = fake_mailgun.webhook(
        requests["carol@dest.test"], event="complained", event_id=payload["event-data"]["id"]
    )
    for again in (payload, retry):
        response = post_mailgun(relay.pk, again)
        assert (response.json()["recorded"], response.json()["duplicates"]) == (0, 1)
    assert events_of(row) == ["queued", "delivered", "complained"]
    assert Suppression.objects.count() == 1

    # The next message to that address is held by the suppression list, not sent.
    [held], sent = later_sends(sender, relay, fake_mailgun, "Carol@dest.test")
    assert (held.status, sent) == ("suppressed", 0)
    assert events_of(held) == ["queued", "suppressed"]
    assert maildir_files(sender.alice) == []


def test_mailgun_unsubscribe_suppresses_with_its_own_reason(sender, fake_mailgun):
    relay = mailgun_relay(sender.account, fake_mailgun)
    [row], requests = relayed(sender, relay, fake_mailgun)
    payload = fake_mailgun.webhook(requests["carol@dest.test"], event="unsubscribed")

    assert post_mailgun(relay.pk, payload).json()["recorded"] == 1
    assert post_mailgun(relay.pk, payload).json()["duplicates"] == 1

    row.refresh_from_db()
    assert row.status == "delivered"
    assert events_of(row) == ["queued", "delivered", "unsubscribed"]
    assert list(Suppression.objects.values_list("address", "reason", "detail")) == [
        ("carol@dest.test", "unsubscribed", "unsubscribe reported by Mailgun")
    ]
    assert maildir_files(sender.alice) == []
    [held], sent = later_sends(sender, relay, fake_mailgun, "carol@dest.test")
    assert (held.status, sent) == ("suppressed", 0)


def test_mailgun_calls_not_signed_with_the_relay_key_are_refused(sender, fake_mailgun):
    relay = mailgun_relay(sender.account, fake_mailgun)
    [row], requests = relayed(sender, relay, fake_mailgun)
    request = requests["carol@dest.test"]

    def failed(**kwargs):
        return fake_mailgun.webhook(
            request, event="failed", severity="permanent", code=550, message="5.1.1 no", **kwargs
        )

    tampered = failed()
    tampered["signature"]["timestamp"] = str(int(tampered["signature"]["timestamp"]) + 1)
    unsigned = failed()
    del unsigned["signature"]
    cases = [
        (failed(key="not-the-relay-key"), 403, "signature_invalid"),
        (tampered, 403, "signature_invalid"),
        (unsigned, 403, "signature_missing"),
        (failed(signed_at=time.time() - 16 * 60), 403, "signature_expired"),
        (failed(signed_at=time.time() + 16 * 60), 403, "signature_expired"),
        (b"event=failed&signature=x", 400, "validation_error"),
        ({**failed(), "event-data": "nope"}, 400, "validation_error"),
    ]
    for payload, status, code in cases:
        response = post_mailgun(relay.pk, payload)
        assert (response.status_code, error_code(response)) == (status, code), payload
        assert response.json()["error"]["message"]
    row.refresh_from_db()
    assert row.status == "delivered"
    assert events_of(row) == ["queued", "delivered"]
    assert not Suppression.objects.exists()


def test_unknown_rows_and_events_are_acknowledged_and_ignored(sender, fake_mailgun):
    relay = mailgun_relay(sender.account, fake_mailgun)
    [row], requests = relayed(sender, relay, fake_mailgun)
    request = requests["carol@dest.test"]
    opened = fake_mailgun.webhook(request, event="opened")
    untagged = fake_mailgun.webhook(request, event="failed", severity="permanent", code=550)
    untagged["event-data"]["user-variables"] = {}
    unknown = fake_mailgun.webhook(request, event="failed", severity="permanent", code=550)
    unknown["event-data"]["user-variables"] = {RECIPIENT_VARIABLE: "987654321"}
    # Re-signing is what lets us edit event-data: the signature covers only timestamp+token.
    other_address = fake_mailgun.webhook(request, event="failed", severity="permanent", code=550)
    other_address["event-data"]["recipient"] = "someone-else@dest.test"

    for payload in (opened, untagged, unknown, other_address):
        response = post_mailgun(relay.pk, payload)
        assert response.status_code == 200
        assert response.json() == {
            "received": 1,
            "recorded": 0,
            "duplicates": 0,
            "ignored": 1,
            "in_flight": 0,
        }
    row.refresh_from_db()
    assert row.status == "delivered" and events_of(row) == ["queued", "delivered"]


def test_another_organizations_relay_cannot_touch_the_row(
    sender, fake_mailgun, other_account, fake_sendgrid
):
    victim_relay = mailgun_relay(sender.account, fake_mailgun)
    [row], requests = relayed(sender, victim_relay, fake_mailgun)
    intruder_relay = mailgun_relay(other_account, fake_mailgun, webhook_signing_key="intruder-k")
    # A genuine-looking bounce about the victim's row, signed with the intruder's own key.
    payload = fake_mailgun.webhook(
        requests["carol@dest.test"],
        event="failed",
        severity="permanent",
        code=550,
        message="5.1.1 gone",
        key="intruder-k",
    )

    response = post_mailgun(intruder_relay.pk, payload)
    assert response.status_code == 200 and response.json()["ignored"] == 1
    response = post_mailgun(victim_relay.pk, payload)
    assert (response.status_code, error_code(response)) == (403, "signature_invalid")
    # The intruder's SendGrid relay, signing SendGrid-style about the same row.
    intruder_sg = sendgrid_relay(other_account, fake_sendgrid)
    event = {
        "email": "carol@dest.test",
        "event": "bounce",
        "reason": "550 5.1.1 gone",
        "status": "5.1.1",
        "sg_event_id": "x1",
        RECIPIENT_VARIABLE: str(row.pk),
    }
    response = post_sendgrid(intruder_sg.pk, *fake_sendgrid.webhook([event]))
    assert response.status_code == 200 and response.json()["ignored"] == 1
    response = post_sendgrid(victim_relay.pk, *fake_sendgrid.webhook([event]))
    assert response.status_code == 404  # a Mailgun server has no SendGrid receiver

    row.refresh_from_db()
    assert row.status == "delivered" and events_of(row) == ["queued", "delivered"]
    assert not Suppression.objects.exists()
    assert maildir_files(sender.alice) == []


def test_relay_servers_without_a_webhook_key_have_no_receiver(sender, fake_mailgun):
    keyless = relay_server_create(
        organization=sender.account.org,
        name="mg-no-hooks",
        provider="mailgun",
        configuration={"domain": fake_mailgun.domain, "base_url": fake_mailgun.base_url},
        credentials={"api_key": fake_mailgun.api_key},
    )
    [row], requests = relayed(sender, keyless, fake_mailgun)
    payload = fake_mailgun.webhook(requests["carol@dest.test"], event="delivered", code=250)
    native = sender.account.relay
    for relay_id in (keyless.pk, native.pk, 987654321):
        response = post_mailgun(relay_id, payload)
        assert (response.status_code, error_code(response)) == (404, "not_found")
    assert events_of(row) == ["queued", "delivered"]


def test_a_report_that_beats_the_workers_record_is_asked_again(sender, fake_mailgun):
    """The provider may report before the worker has recorded the provider's 2xx: the row is
    still claimed. Answer 503 (the provider retries) rather than lose either record."""
    relay = mailgun_relay(sender.account, fake_mailgun)
    sender.send("carol@dest.test", relay=relay)
    early: list[tuple[int, str, str]] = []

    class ReportArrivesFirst(DeliveryWorker):
        """The worker's own cycle, with the provider's report landing after the send and
        before the record (record runs on the database thread: this test's)."""

        def record(self, outcomes, *, now=None):
            [request] = fake_mailgun.requests
            payload = fake_mailgun.webhook(request, event="delivered", code=250, message="OK")
            response = post_mailgun(relay.pk, payload)
            early.append((response.status_code, error_code(response), response["Retry-After"]))
            [row] = QueuedRecipient.objects.all()
            assert events_of(row) == ["queued"]
            super().record(outcomes, now=now)

    assert ReportArrivesFirst(rng=lambda: 0.5).run_once() == 1
    assert early == [(503, "retry_later", "60")]
    [request] = fake_mailgun.requests
    payload = fake_mailgun.webhook(request, event="delivered", code=250, message="OK")
    response = post_mailgun(relay.pk, payload)
    assert response.status_code == 200 and response.json()["recorded"] == 1
    [row] = QueuedRecipient.objects.all()
    assert events_of(row) == ["queued", "delivered", "delivered"]


# --- SendGrid ------------------------------------------------------------------------------------


def test_sendgrid_batch_lands_on_each_row_once(sender, fake_sendgrid):
    relay = sendgrid_relay(sender.account, fake_sendgrid)
    [carol, dave], requests = relayed(
        sender, relay, fake_sendgrid, "carol@dest.test", "dave@other.test"
    )
    to_carol, to_dave = requests["carol@dest.test"], requests["dave@other.test"]
    events = [
        fake_sendgrid.event(to_carol, "processed"),
        fake_sendgrid.event(to_carol, "delivered", response="250 2.0.0 OK", ip="167.89.0.1"),
        fake_sendgrid.event(to_dave, "deferred", response="421 4.7.0 try later", attempt="1"),
        fake_sendgrid.event(
            to_dave, "bounce", reason="550 5.1.1 user unknown", status="5.1.1", type="bounce"
        ),
        fake_sendgrid.event(to_carol, "open", useragent="Mozilla/5.0", ip="10.0.0.1"),
    ]
    body, headers = fake_sendgrid.webhook(events)

    response = post_sendgrid(relay.pk, body, headers)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "received": 5,
        "recorded": 3,
        "duplicates": 0,
        "ignored": 2,
        "in_flight": 0,
    }
    carol.refresh_from_db()
    dave.refresh_from_db()
    assert (carol.status, carol.last_reply) == ("delivered", "250 2.0.0 OK")
    assert (dave.status, dave.last_reply) == ("bounced", "550 5.1.1 user unknown")
    assert events_of(carol) == ["queued", "delivered", "delivered"]
    assert events_of(dave) == ["queued", "delivered", "deferred", "bounced"]
    assert list(Suppression.objects.values_list("address", "reason")) == [
        ("dave@other.test", "hard_bounce")
    ]
    [report] = maildir_files(sender.alice)
    text = report.read_bytes()
    assert b"Final-Recipient: rfc822; dave@other.test" in text and b"Status: 5.1.1" in text
    assert b"carol@dest.test" not in text.partition(b"text/rfc822-headers")[0]

    # SendGrid retries the whole batch: nothing is recorded twice.
    response = post_sendgrid(relay.pk, body, headers)
    assert response.status_code == 200
    assert (response.json()["recorded"], response.json()["duplicates"]) == (0, 3)
    assert events_of(carol) == ["queued", "delivered", "delivered"]
    assert events_of(dave) == ["queued", "delivered", "deferred", "bounced"]
    assert len(maildir_files(sender.alice)) == 1


def test_sendgrid_dropped_is_suppressed_or_failed_by_reason(sender, fake_sendgrid):
    relay = sendgrid_relay(sender.account, fake_sendgrid)
    [listed, invalid], requests = relayed(
        sender, relay, fake_sendgrid, "carol@dest.test", "dave@other.test"
    )
    events = [
        fake_sendgrid.event(requests["carol@dest.test"], "dropped", reason="Bounced Address"),
        fake_sendgrid.event(requests["dave@other.test"], "dropped", reason="Invalid"),
    ]

    assert post_sendgrid(relay.pk, *fake_sendgrid.webhook(events)).json()["recorded"] == 2

    listed.refresh_from_db()
    invalid.refresh_from_db()
    assert listed.status == "suppressed" and "Bounced Address" in listed.last_reply
    assert invalid.status == "failed" and "Invalid" in invalid.last_reply
    assert events_of(listed)[-1] == "suppressed" and events_of(invalid)[-1] == "failed"
    [report] = maildir_files(sender.alice)  # a DSN for the failure only
    text = report.read_bytes()
    assert b"Final-Recipient: rfc822; dave@other.test" in text
    assert b"Final-Recipient: rfc822; carol@dest.test" not in text


def test_sendgrid_spam_reports_and_unsubscribes_suppress_without_a_dsn(sender, fake_sendgrid):
    relay = sendgrid_relay(sender.account, fake_sendgrid)
    to = ("carol@dest.test", "dave@other.test", "erin@other.test")
    [carol, dave, erin], requests = relayed(sender, relay, fake_sendgrid, *to)
    events = [
        fake_sendgrid.event(requests["carol@dest.test"], "spamreport"),
        fake_sendgrid.event(requests["dave@other.test"], "unsubscribe"),
        fake_sendgrid.event(requests["erin@other.test"], "group_unsubscribe", asm_group_id=42),
        fake_sendgrid.event(requests["erin@other.test"], "group_resubscribe", asm_group_id=42),
    ]
    body, headers = fake_sendgrid.webhook(events)

    response = post_sendgrid(relay.pk, body, headers)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "received": 4,
        "recorded": 3,
        "duplicates": 0,
        "ignored": 1,
        "in_flight": 0,
    }
    for row in (carol, dave, erin):
        after = QueuedRecipient.objects.get(pk=row.pk)
        assert (after.status, after.last_reply) == ("delivered", row.last_reply)
    assert events_of(carol) == ["queued", "delivered", "complained"]
    assert events_of(dave) == ["queued", "delivered", "unsubscribed"]
    assert events_of(erin) == ["queued", "delivered", "unsubscribed"]
    spam = DeliveryEvent.objects.filter(recipient=carol).last()
    assert spam.detail == f"sendgrid event {events[0]['sg_event_id']}"
    assert sorted(Suppression.objects.values_list("address", "reason", "detail")) == [
        ("carol@dest.test", "complaint", "spam complaint reported by SendGrid"),
        ("dave@other.test", "unsubscribed", "unsubscribe reported by SendGrid"),
        (
            "erin@other.test",
            "unsubscribed",
            "unsubscribe reported by SendGrid (unsubscribe group 42)",
        ),
    ]
    assert maildir_files(sender.alice) == []

    # SendGrid retries the batch: nothing is recorded twice.
    response = post_sendgrid(relay.pk, body, headers)
    assert (response.json()["recorded"], response.json()["duplicates"]) == (0, 3)
    assert events_of(carol) == ["queued", "delivered", "complained"]
    assert Suppression.objects.count() == 3

    # The next message to them is held by the suppression list, not sent.
    held, sent = later_sends(sender, relay, fake_sendgrid, *to)
    assert ([r.status for r in held], sent) == (["suppressed"] * 3, 0)
    assert maildir_files(sender.alice) == []


def test_sendgrid_block_without_a_status_still_bounces(sender, fake_sendgrid):
    relay = sendgrid_relay(sender.account, fake_sendgrid)
    [row], requests = relayed(sender, relay, fake_sendgrid)
    event = fake_sendgrid.event(
        requests["carol@dest.test"],
        "bounce",
        reason="unable to get mx info: failed to get IPs from PTR record",
        type="blocked",
        bounce_classification="Unclassified",
    )

    assert post_sendgrid(relay.pk, *fake_sendgrid.webhook([event])).json()["recorded"] == 1

    row.refresh_from_db()
    assert row.status == "bounced" and "unable to get mx info" in row.last_reply
    [report] = maildir_files(sender.alice)
    assert b"Status: 5.0.0" in report.read_bytes()


def test_sendgrid_calls_not_signed_with_the_relay_key_are_refused(sender, fake_sendgrid):
    relay = sendgrid_relay(sender.account, fake_sendgrid)
    [row], requests = relayed(sender, relay, fake_sendgrid)
    event = fake_sendgrid.event(
        requests["carol@dest.test"], "bounce", reason="550 5.1.1 unknown", status="5.1.1"
    )
    body, headers = fake_sendgrid.webhook([event])
    stranger = ec.generate_private_key(ec.SECP256R1())
    signature, timestamp = (
        "X-Twilio-Email-Event-Webhook-Signature",
        "X-Twilio-Email-Event-Webhook-Timestamp",
    )
    cases = [
        (*fake_sendgrid.webhook([event], key=stranger), 403, "signature_invalid"),
        (body.replace(b"5.1.1", b"5.1.2"), headers, 403, "signature_invalid"),
        (body, {**headers, timestamp: str(int(headers[timestamp]) + 1)}, 403, "signature_invalid"),
        (body, {**headers, signature: "not base64!"}, 403, "signature_invalid"),
        (body, {timestamp: headers[timestamp]}, 403, "signature_missing"),
        (body, {}, 403, "signature_missing"),
        (*fake_sendgrid.webhook({"event": "bounce"}), 400, "validation_error"),  # not an array
    ]
    not_json = b"[{"
    signed_garbage = fake_sendgrid.signing_key.sign(
        b"1700000000" + not_json, ec.ECDSA(hashes.SHA256())
    )
    cases.append(
        (
            not_json,
            {signature: base64.b64encode(signed_garbage).decode(), timestamp: "1700000000"},
            400,
            "validation_error",
        )
    )
    for case_body, case_headers, status, code in cases:
        response = post_sendgrid(relay.pk, case_body, case_headers)
        assert (response.status_code, error_code(response)) == (status, code), case_headers
    row.refresh_from_db()
    assert row.status == "delivered" and events_of(row) == ["queued", "delivered"]
    assert not Suppression.objects.exists()


# --- the relay server's webhook credentials ------------------------------------------------------


def test_webhook_credentials_are_validated_and_masked(account, fake_sendgrid):
    key = fake_sendgrid.verification_key
    pem = fake_sendgrid.signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rsa_der = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for bad in ("not-a-key", base64.b64encode(rsa_der).decode(), "", 42):
        with pytest.raises(ValidationFailed) as err:
            sendgrid_relay_with(account, fake_sendgrid, bad)
        assert list(err.value.details) == ["credentials.webhook_verification_key"]
    assert sendgrid_relay_with(account, fake_sendgrid, pem.decode()).pk  # PEM copy: fine

    sg = sendgrid_relay_with(account, fake_sendgrid, key)
    shown = account.client.get(f"/api/relay-servers/{sg.pk}/").json()["credentials"]
    assert shown["webhook_verification_key"] == "****" + key[-4:]
    mg = relay_server_create(
        organization=account.org,
        name="mg",
        provider="mailgun",
        configuration={"domain": "mg.acme.test"},
        credentials={"api_key": "key-1234567890abcdef"},
    )
    response = account.client.patch(
        f"/api/relay-servers/{mg.pk}/",
        {"credentials": {"webhook_signing_key": "whsk-0123456789abcdef"}},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["credentials"]["webhook_signing_key"] == "****cdef"
    assert "whsk-0123456789abcdef" not in response.content.decode()
    mg.refresh_from_db()
    assert mg.credentials["webhook_signing_key"] == "whsk-0123456789abcdef"


def sendgrid_relay_with(account, fake, verification_key):
    return relay_server_create(
        organization=account.org,
        name="sg",
        provider="sendgrid",
        configuration={"base_url": fake.base_url},
        credentials={"api_key": fake.api_key, "webhook_verification_key": verification_key},
    )
