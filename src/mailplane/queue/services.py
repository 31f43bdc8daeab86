"""Putting messages on the queue. Callers answer 250/2xx only after this returns."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from email.parser import BytesHeaderParser
from email.policy import SMTP

from django.db import transaction
from django.utils import timezone

from mailplane.domains.models import Domain
from mailplane.mailboxes.models import Mailbox
from mailplane.queue.models import (
    DeliveryEvent,
    EventType,
    MessageBody,
    MessageSource,
    OutboundMessage,
    QueuedRecipient,
)
from mailplane.relays.models import RelayServer
from mailplane.tenancy.models import Organization

# How long temporary failures are retried before the message bounces (Postfix: 5 days;
# the delivery issue asks for 72 hours by default).
DEFAULT_EXPIRY = timedelta(hours=72)


def _header(raw: bytes, name: str) -> str:
    value = BytesHeaderParser(policy=SMTP).parsebytes(raw, headersonly=True).get(name, "")
    return str(value)[:998]


def message_enqueue(
    *,
    organization: Organization,
    mail_from: str,
    recipients: Sequence[str],
    raw: bytes,
    source: str = MessageSource.SMTP,
    mailbox: Mailbox | None = None,
    relay_server: RelayServer | None = None,
    domain: Domain | None = None,
    expiry: timedelta = DEFAULT_EXPIRY,
) -> OutboundMessage:
    """Persist a message and one queue row per recipient in a single transaction."""
    now = timezone.now()
    with transaction.atomic():
        message = OutboundMessage.objects.create(
            organization=organization,
            mailbox=mailbox,
            relay_server=relay_server or (mailbox.relay_server if mailbox else None),
            domain=domain or (mailbox.domain if mailbox else None),
            source=source,
            mail_from=mail_from,
            message_id=_header(raw, "Message-ID"),
            subject=_header(raw, "Subject"),
            size=len(raw),
        )
        MessageBody.objects.create(message=message, raw=raw)
        rows = QueuedRecipient.objects.bulk_create(
            QueuedRecipient(
                message=message,
                rcpt_to=rcpt,
                rcpt_domain=rcpt.rpartition("@")[2].lower(),
                next_attempt_at=now,
                expires_at=now + expiry,
            )
            for rcpt in recipients
        )
        DeliveryEvent.objects.bulk_create(
            DeliveryEvent(
                organization=organization, message=message, recipient=row, type=EventType.QUEUED
            )
            for row in rows
        )
    return message
