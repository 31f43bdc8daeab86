"""Bounce classes: real receivers' replies classified, and only hard bounces suppress
(a 550 that is a rate limit is retried; a block or a full mailbox bounces unsuppressed)."""

from __future__ import annotations

import pytest

from mailplane.delivery.bounce_classes import BounceRule, bounce_class, retried, suppresses
from mailplane.delivery.late import LateOutcome, late_outcomes_store
from mailplane.delivery.results import SendResult
from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import (
    BounceClass,
    DeliveryEvent,
    EventType,
    QueuedRecipient,
    Suppression,
)
from tests.support.fixtures import verified_domain
from tests.support.servers import send_body, server_make

# Replies as the big receivers word them (their published reference pages), and the class.
REPLIES = [
    (
        "550 5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos",
        "hard",
    ),
    (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        "hard",
    ),
    ("550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", "hard"),
    ("550 Requested action not taken: mailbox unavailable", "hard"),
    ("550 5.2.1 The email account that you tried to reach is disabled.", "hard"),
    ("554 5.4.4 SMTPSEND.DNS.NonExistentDomain; nonexistent domain", "hard"),
    ("552 5.2.2 The email account that you tried to reach is over quota.", "mailbox_full"),
    ("452 4.2.2 The email account that you tried to reach is over quota.", "mailbox_full"),
    (
        "421 4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail "
        "originating from your IP address.",
        "rate_limit",
    ),
    ("451 4.7.500 Server busy. Please try again later from [192.0.2.1]. (AS750)", "rate_limit"),
    (
        "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume "
        "or user complaints - 4.16.55.1",
        "rate_limit",
    ),
    ("550 5.7.1 Too many messages from your address, slow down", "rate_limit"),
    ("550 5.7.606 Access denied, banned sending IP [192.0.2.1].", "block"),
    (
        "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list (S3150).",
        "block",
    ),
    (
        "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.1, because the ip is in "
        "Spamhaus's list",
        "block",
    ),
    (
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
        "block",
    ),
    (
        "550 5.7.1 [192.0.2.1] Our system has detected that this message is likely unsolicited "
        "mail.",
        "spam",
    ),
    ("550 5.7.350 Remote server returned message detected as spam", "spam"),
    ("554 5.7.1 Message rejected because it contains a virus", "spam"),
    (
        "550 5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail "
        "requires all senders to authenticate with either SPF or DKIM.",
        "policy",
    ),
    ("550 5.7.25 The IP address sending this message does not have a PTR record setup", "policy"),
    ("550 5.1.8 Sender address rejected: Domain not found", "policy"),
    ("550 5.7.1 Relaying denied", "policy"),
    ("552 5.3.4 Message size exceeds fixed maximum message size", "policy"),
    ("554 5.7.9 Message not accepted for policy reasons.", "policy"),
    ("421 Service not available, closing transmission channel", "soft"),
    ("452 4.3.1 insufficient system storage", "soft"),
    ("451 4.7.1 greylisted, try again later", "rate_limit"),
]


@pytest.mark.parametrize(("reply", "expected"), REPLIES, ids=[r[:32] for r, _ in REPLIES])
def test_real_replies_are_classified(reply: str, expected: str) -> None:
    code = int(reply[:3])
    assert bounce_class(SendResult.from_smtp(code, reply[4:], "mx.test")) == expected


def test_a_connection_failure_is_soft_and_a_delivery_has_no_class() -> None:
    assert bounce_class(SendResult.temporary("connection refused")) == BounceClass.SOFT
    assert bounce_class(SendResult.delivered("250 ok", "mx.test")) is None


def test_bare_codes_follow_rfc_5321() -> None:
    assert bounce_class(SendResult.from_smtp(550, "", "mx")) == "hard"
    assert bounce_class(SendResult.from_smtp(553, "", "mx")) == "hard"
    assert bounce_class(SendResult.from_smtp(552, "", "mx")) == "mailbox_full"
    assert bounce_class(SendResult.from_smtp(554, "transaction failed", "mx")) == "policy"


def test_only_hard_suppresses_and_only_a_5xx_rate_limit_is_retried() -> None:
    assert [k for k in BounceClass if suppresses(k)] == [BounceClass.HARD]
    limit = SendResult.from_smtp(550, "5.7.1 rate limit exceeded", "mx")
    assert retried(limit, bounce_class(limit))
    assert not retried(SendResult.from_smtp(550, "5.1.1 unknown", "mx"), BounceClass.HARD)


def test_an_override_rule_wins_over_the_table() -> None:
    reply = SendResult.from_smtp(550, "5.1.1 mailbox unavailable (policy CX-17)", "mx")
    assert bounce_class(reply) == "hard"
    assert bounce_class(reply, [BounceRule("Policy CX-17", "", BounceClass.POLICY)]) == "policy"
    assert bounce_class(reply, [BounceRule("", "5.1", BounceClass.SOFT)]) == "soft"
    assert bounce_class(reply, [BounceRule("", "5.1.1", BounceClass.SOFT)]) == "soft"
    assert bounce_class(reply, [BounceRule("", "550", BounceClass.SOFT)]) == "soft"
    # A status prefix is a whole part: 5.1.1 is not 5.1.10, 5.7 is not 5.1.
    assert bounce_class(reply, [BounceRule("", "5.1.10", BounceClass.SOFT)]) == "hard"
    assert bounce_class(reply, [BounceRule("", "5.7", BounceClass.SOFT)]) == "hard"
    assert bounce_class(reply, [BounceRule("cx-17", "4.1", BounceClass.SOFT)]) == "hard"
    assert bounce_class(reply, [BounceRule("", "551", BounceClass.SOFT)]) == "hard"


def _events(message: object) -> dict[str, tuple[str, str]]:
    return {
        e.recipient.rcpt_to: (e.type, e.bounce_class)  # type: ignore[union-attr]
        for e in DeliveryEvent.objects.filter(message=message).exclude(type="queued")
    }


def test_at_the_mx_only_the_unknown_user_is_suppressed(sender, dns_server, mx_sinks) -> None:  # type: ignore[no-untyped-def]
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", sink.address)
    replies = {
        "gone@dest.test": "550 5.1.1 The email account that you tried to reach does not exist",
        "listed@dest.test": "550 5.7.1 part of their network is on our block list (S3150)",
        "full@dest.test": "552 5.2.2 The email account that you tried to reach is over quota",
        "busy@dest.test": "550 5.7.1 Too many messages from your address, slow down",
    }
    sink.handler.rcpt_replies.update(replies)
    # "fine" first: after the sender-wide "slow down" the connection's remaining messages
    # wait unattempted (delivery/politeness.py), which is not what this test is about.
    message = sender.send("fine@dest.test", *replies)

    DeliveryWorker().run_once()

    status = dict(QueuedRecipient.objects.filter(message=message).values_list("rcpt_to", "status"))
    assert status == {
        "gone@dest.test": "bounced",
        "listed@dest.test": "bounced",
        "full@dest.test": "bounced",
        "busy@dest.test": "deferred",  # a 550 rate limit: retried, not a bounce
        "fine@dest.test": "delivered",
    }
    assert _events(message) == {
        "gone@dest.test": ("bounced", "hard"),
        "listed@dest.test": ("bounced", "block"),
        "full@dest.test": ("bounced", "mailbox_full"),
        "busy@dest.test": ("deferred", "rate_limit"),
        "fine@dest.test": ("delivered", ""),
    }
    assert list(Suppression.objects.values_list("address", "reason")) == [
        ("gone@dest.test", "hard_bounce")
    ]


def test_a_late_bounce_suppresses_only_when_hard(sender) -> None:  # type: ignore[no-untyped-def]
    message = sender.send("late-block@dest.test", "late-gone@dest.test")
    rows = {r.rcpt_to: r for r in QueuedRecipient.objects.filter(message=message)}
    outcomes = [
        LateOutcome(
            rows["late-block@dest.test"],
            EventType.BOUNCED,
            SendResult.permanent("554 5.7.1 blocked using zen.spamhaus.org"),
            "provider event 1",
        ),
        LateOutcome(
            rows["late-gone@dest.test"],
            EventType.BOUNCED,
            SendResult.permanent("550 5.1.1 user unknown"),
            "provider event 2",
        ),
    ]
    from django.utils import timezone

    late_outcomes_store(outcomes, now=timezone.now())
    assert _events(message) == {
        "late-block@dest.test": ("bounced", "block"),
        "late-gone@dest.test": ("bounced", "hard"),
    }
    assert list(Suppression.objects.values_list("address", flat=True)) == ["late-gone@dest.test"]


# --- a server's own rules ----------------------------------------------------------------


def test_rules_through_the_api_and_their_hostile_bodies(account) -> None:  # type: ignore[no-untyped-def]
    server = server_make(account).server
    path = f"/api/servers/{server.pk}/bounce-rules/"
    made = account.client.post(
        path, {"contains": "CX-17", "status": "5.1", "bounce_class": "soft"}, format="json"
    )
    assert made.status_code == 201, made.json()
    assert {k: made.json()[k] for k in ("contains", "status", "bounce_class")} == {
        "contains": "CX-17",
        "status": "5.1",
        "bounce_class": "soft",
    }
    assert account.client.get(path).json()["count"] == 1
    bad = [
        ({"bounce_class": "soft"}, "contains"),
        ({"status": "5.x", "bounce_class": "soft"}, "status"),
        ({"status": "600", "bounce_class": "soft"}, "status"),
        ({"status": "5.7.1.1", "bounce_class": "soft"}, "status"),
        ({"contains": "x", "bounce_class": "fatal"}, "bounce_class"),
        ({"contains": "x" * 201, "bounce_class": "soft"}, "contains"),
        ({"contains": ["x"], "bounce_class": "soft"}, "contains"),
        ({"contains": "x\x00", "bounce_class": "soft"}, "contains"),
    ]
    for body, field in bad:
        reply = account.client.post(path, body, format="json")
        assert reply.status_code == 400, (body, reply.content)
        assert field in reply.json()["error"]["details"], (body, reply.json())
    assert account.client.get(path).json()["count"] == 1
    rule_id = made.json()["id"]
    assert account.client.delete(f"/api/bounce-rules/{rule_id}/").status_code == 204
    assert account.client.delete(f"/api/bounce-rules/{rule_id}/").status_code == 404


def test_a_server_has_a_bounded_number_of_rules(account) -> None:  # type: ignore[no-untyped-def]
    from mailplane.servers.services import BOUNCE_RULES_PER_SERVER, bounce_rule_create

    server = server_make(account).server
    for n in range(BOUNCE_RULES_PER_SERVER):
        bounce_rule_create(server=server, contains=f"r{n}", bounce_class="soft")
    reply = account.client.post(
        f"/api/servers/{server.pk}/bounce-rules/",
        {"contains": "one more", "bounce_class": "soft"},
        format="json",
    )
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "limit_reached"


def test_a_servers_rule_overrides_the_class_of_its_mail_only(  # type: ignore[no-untyped-def]
    account, dns_server, mx_sinks, settings, tmp_path
) -> None:
    """The receiver answers 550 5.1.1 for a policy of its own (its text says so): with the
    server's rule the recipient bounces as `policy` and is not suppressed; the same reply
    to another server's mail stays `hard` and suppresses."""
    from mailplane.sending.requests import send_request_parse
    from mailplane.sending.services import message_send
    from mailplane.servers.services import bounce_rule_create

    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(tmp_path / "storage")}
    verified_domain(account, "acme.test")
    ruled, plain = server_make(account, "ruled").server, server_make(account, "plain").server
    bounce_rule_create(server=ruled, contains="policy cx-17", status="5.1", bounce_class="policy")
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", sink.address)
    reply = "550 5.1.1 Mailbox unavailable (Policy CX-17)"
    sink.handler.rcpt_replies.update({"a@dest.test": reply, "b@dest.test": reply})
    first = message_send(server=ruled, request=send_request_parse(send_body(to="a@dest.test")))
    second = message_send(server=plain, request=send_request_parse(send_body(to="b@dest.test")))

    DeliveryWorker().run_once()

    assert _events(first.message) == {"a@dest.test": ("bounced", "policy")}
    assert _events(second.message) == {"b@dest.test": ("bounced", "hard")}
    assert list(Suppression.objects.values_list("address", flat=True)) == ["b@dest.test"]
