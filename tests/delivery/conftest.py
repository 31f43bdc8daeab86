"""Delivery test helpers: a sending account with a DKIM-keyed domain and hosted mailboxes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from mailplane.domains.models import Domain
from mailplane.mailboxes.models import Mailbox
from mailplane.queue.models import OutboundMessage
from mailplane.queue.services import message_enqueue
from mailplane.relays.models import RelayServer
from tests.support.fixtures import Account, verified_domain
from tests.support.http_providers import fake_mailgun, fake_sendgrid  # noqa: F401
from tests.support.smtp_sink import mx_port, mx_sinks  # noqa: F401


def mailbox_make(account: Account, domain: Domain, local_part: str) -> Mailbox:
    return Mailbox.objects.create(
        organization=account.org,
        domain=domain,
        relay_server=account.relay,
        local_part=local_part,
        address=f"{local_part}@{domain.name}",
        password="not-used-here",
        password_hash="x",
    )


def raw_message(
    *, sender: str, to: str, subject: str = "Hello", body: str = "Hi there.\r\n"
) -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@acme.test>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()


@dataclass
class Sender:
    account: Account
    domain: Domain
    alice: Mailbox
    bob: Mailbox

    @property
    def relay(self) -> RelayServer:
        return self.account.relay

    def send(self, *to: str, relay: RelayServer | None = None, **kwargs: Any) -> OutboundMessage:
        return message_enqueue(
            organization=self.account.org,
            mail_from=self.alice.address,
            recipients=list(to),
            raw=raw_message(sender=self.alice.address, to=to[0], **kwargs),
            mailbox=self.alice,
            relay_server=relay or self.relay,
        )


@pytest.fixture
def sender(account: Account, settings: Any, tmp_path: Any) -> Sender:
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "DELIVERY_SMTP_TIMEOUT": 2.0,
        "STORAGE_ROOT": str(tmp_path / "storage"),  # each test its own Maildirs
    }
    domain = verified_domain(account)
    return Sender(
        account=account,
        domain=domain,
        alice=mailbox_make(account, domain, "alice"),
        bob=mailbox_make(account, domain, "bob"),
    )
