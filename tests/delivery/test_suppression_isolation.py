"""Suppression lists are per organization: one tenant's bounce, complaint or unsubscribe
must never hold another tenant's mail to the same address, nor be written to its list.

Every entry here is earned the way production earns it (a real 5xx from a sink, an inbound
DSN to the VERP return path, a signed provider complaint), and every check reads the
outcome where a customer sees it: the queue rows, the sink, the API.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mailplane.delivery.bounces import bounce_match, verp_address
from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import OutboundMessage, QueuedRecipient, Suppression
from tests.delivery.conftest import Sender, mailbox_make
from tests.delivery.test_bounce_match import remote_dsn
from tests.delivery.test_provider_webhooks import mailgun_relay, post_mailgun
from tests.support.fixtures import Account, verified_domain
from tests.support.smtp_sink import Sink

pytestmark = pytest.mark.timeout(60)

ADDRESS = "ghost@dest.test"


def deliver_due() -> int:
    """One pass of the delivery engine over what is due (the jitter source is irrelevant
    here: no test in this file retries)."""
    return DeliveryWorker(rng=lambda: 0.5).run_once()


def status_of(message: OutboundMessage) -> str:
    return QueuedRecipient.objects.get(message=message).status


def suppression_list() -> set[tuple[int, str]]:
    return set(Suppression.objects.values_list("organization_id", "address"))


def api_events(account: Account, message: OutboundMessage) -> list[str]:
    response = account.client.get(f"/api/messages/{message.pk}/")
    assert response.status_code == 200, response.content
    return [e["type"] for e in response.json()["events"]]


@pytest.fixture
def other_sender(sender: Sender, other_account: Account) -> Sender:
    """A second tenant sending from its own verified domain (after `sender`, so that the
    storage settings are already in place)."""
    domain = verified_domain(other_account, "beta.test")
    return Sender(
        account=other_account,
        domain=domain,
        alice=mailbox_make(other_account, domain, "alice"),
        bob=mailbox_make(other_account, domain, "bob"),
    )


@pytest.fixture
def dest_mx(dns_server, mx_sinks) -> Callable[[str], Sink]:
    """dest.test's MX: a sink in the mode asked for."""

    def make(mode: str) -> Sink:
        sink = mx_sinks(mode)
        dns_server.mx("dest.test", "mx1.dest.test")
        dns_server.a("mx1.dest.test", sink.address)
        return sink

    return make


def test_a_bounce_holds_only_its_own_organizations_mail(sender, other_sender, dest_mx):
    sink = dest_mx("reject")
    first = sender.send(ADDRESS, subject="To a ghost")
    deliver_due()
    assert status_of(first) == "bounced"
    assert suppression_list() == {(sender.account.org.pk, ADDRESS)}

    # The address works again. Both tenants write to it and one pass handles both rows, so
    # a check that matched the address alone would hold the other tenant's message here.
    sink.set_mode("accept")
    held = sender.send(ADDRESS, subject="Again from A")
    theirs = other_sender.send("Ghost@dest.test", subject="Hello from B")
    assert deliver_due() == 2

    assert status_of(held) == "suppressed"
    assert status_of(theirs) == "delivered"
    [got] = sink.received
    assert got.rcpt_tos == ["Ghost@dest.test"]
    assert b"Subject: Hello from B" in got.data
    # Only the tenant that bounced is on a list, and each sees its own outcome.
    assert suppression_list() == {(sender.account.org.pk, ADDRESS)}
    assert api_events(sender.account, held)[-1] == "suppressed"
    assert api_events(other_sender.account, theirs)[-1] == "delivered"
    assert other_sender.account.client.get(f"/api/messages/{held.pk}/").status_code == 404


def test_the_other_organization_alone_is_not_held(sender, other_sender, dest_mx):
    sink = dest_mx("reject")
    sender.send(ADDRESS)
    deliver_due()
    sink.set_mode("accept")

    theirs = other_sender.send(ADDRESS, subject="Only B this time")
    deliver_due()

    assert status_of(theirs) == "delivered"
    assert len(sink.received) == 1


@pytest.mark.parametrize("one_pass", [False, True], ids=["in-turn", "same-pass"])
def test_each_organization_keeps_its_own_entry_for_one_address(
    sender, other_sender, dest_mx, one_pass
):
    dest_mx("reject")
    ours = sender.send(ADDRESS)
    if not one_pass:
        deliver_due()
    # The other tenant bounces on the same address: the first tenant's entry must not
    # stand in for its own (the list is unique per organization and address).
    theirs = other_sender.send(ADDRESS)
    deliver_due()

    assert (status_of(ours), status_of(theirs)) == ("bounced", "bounced")
    entries = set(Suppression.objects.values_list("organization_id", "address", "message_id"))
    assert entries == {
        (sender.account.org.pk, ADDRESS, ours.pk),
        (other_sender.account.org.pk, ADDRESS, theirs.pk),
    }


def test_an_inbound_dsn_suppresses_for_the_bounced_messages_organization(
    sender, other_sender, dest_mx
):
    sink = dest_mx("accept")
    ours = sender.send(ADDRESS)
    deliver_due()
    row = QueuedRecipient.objects.get(message=ours)
    verp = verp_address(recipient_id=row.pk, return_path_host=sender.domain.return_path_host)
    assert bounce_match(verp, remote_dsn(verp)) == row.pk
    assert suppression_list() == {(sender.account.org.pk, ADDRESS)}

    held = sender.send(ADDRESS)
    theirs = other_sender.send(ADDRESS)
    deliver_due()
    assert (status_of(held), status_of(theirs)) == ("suppressed", "delivered")
    assert len(sink.received) == 2  # the first message, then B's


def test_a_provider_complaint_suppresses_for_the_complained_messages_organization(
    sender, other_sender, fake_mailgun
):
    ours = mailgun_relay(sender.account, fake_mailgun)
    theirs_relay = mailgun_relay(other_sender.account, fake_mailgun)
    first = sender.send(ADDRESS, relay=ours)
    deliver_due()
    assert status_of(first) == "delivered"
    [request] = fake_mailgun.requests
    complaint = fake_mailgun.webhook(request, event="complained")
    assert post_mailgun(ours.pk, complaint).json()["recorded"] == 1
    assert set(Suppression.objects.values_list("organization_id", "address", "reason")) == {
        (sender.account.org.pk, ADDRESS, "complaint")
    }

    held = sender.send(ADDRESS, relay=ours)
    theirs = other_sender.send(ADDRESS, relay=theirs_relay)
    deliver_due()
    assert (status_of(held), status_of(theirs)) == ("suppressed", "delivered")
    assert [r.recipient for r in fake_mailgun.requests] == [ADDRESS, ADDRESS]
