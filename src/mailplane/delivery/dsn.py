"""RFC 3464 delivery status notifications (multipart/report; report-type=delivery-status)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, make_msgid

from django.conf import settings

from mailplane.delivery.results import SendResult
from mailplane.mailboxes.models import Mailbox, MailboxStatus
from mailplane.queue.models import MessageBody, MessageSource, OutboundMessage
from mailplane.queue.services import message_enqueue
from mailplane.storage.maildir import maildir_deliver


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    address: str
    result: SendResult


def _headers_of(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    return raw if end < 0 else raw[: end + 2]


def dsn_build(
    *,
    reporting_mta: str,
    to: str,
    original: bytes,
    arrival: datetime,
    now: datetime,
    failed: Sequence[FailedRecipient],
) -> bytes:
    """A failure report for `failed` recipients of one message, sent from MAILER-DAEMON.

    Parts (RFC 3462/6522 §3): human-readable text, message/delivery-status (RFC 3464 §2),
    then the original headers (text/rfc822-headers) rather than the whole message.
    """
    boundary = f"=_mailplane_{secrets.token_hex(12)}"
    lines = [
        f"The message you sent to {', '.join(f.address for f in failed)} could not be delivered.",
        "",
    ]
    for f in failed:
        lines.append(f"<{f.address}>: {f.result.reply or 'delivery failed'}")
        if f.result.remote_host:
            lines.append(f"    (remote host {f.result.remote_host})")
    human = "\r\n".join(lines) + "\r\n"
    # RFC 3464 §2.2: per-message fields, then one block per recipient (§2.3).
    status = [
        f"Reporting-MTA: dns; {reporting_mta}",
        f"Arrival-Date: {format_datetime(arrival)}",
        "",
    ]
    for f in failed:
        code = f.result.enhanced_status
        if not code.startswith("5."):
            # Action: failed is permanent (RFC 3464 §2.3.3); an expired retry is 5.4.7
            # "delivery time expired" (RFC 3463 §3.5), whatever the last 4xx said.
            code = "5.4.7"
        status += [f"Final-Recipient: rfc822; {f.address}", "Action: failed", f"Status: {code}"]
        if f.result.remote_host:
            status.append(f"Remote-MTA: dns; {f.result.remote_host}")
        if f.result.reply:
            status.append(f"Diagnostic-Code: smtp; {' '.join(f.result.reply.split())}")
        status.append(f"Last-Attempt-Date: {format_datetime(now)}")
        status.append("")
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{to}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {format_datetime(now)}",
        f"Message-ID: {make_msgid(domain=reporting_mta)}",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5: no auto-replies to this
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
    ]
    parts = [
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{human}",
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n" + "\r\n".join(status),
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n",
    ]
    body = "\r\n".join(head).encode() + "\r\n".join(parts[:2]).encode() + b"\r\n"
    body += parts[2].encode() + _headers_of(original)
    body += f"\r\n--{boundary}--\r\n".encode()
    return body


def reporting_mta() -> str:
    conf = settings.MAILPLANE
    return str(conf.get("MX_HOST") or conf["PLATFORM_DOMAIN"])


def dsn_send(*, message: OutboundMessage, failed: Sequence[FailedRecipient], now: datetime) -> None:
    """Return a failure report to the sender: into its INBOX if it is a hosted mailbox,
    else through the queue with the null sender. Never for null-sender mail (RFC 5321
    §4.5.5: no DSN about a DSN)."""
    if not message.mail_from or message.source == MessageSource.SYSTEM:
        return
    body = MessageBody.objects.filter(message_id=message.pk).values_list("raw", flat=True).first()
    report = dsn_build(
        reporting_mta=reporting_mta(),
        to=message.mail_from,
        original=bytes(body or b""),
        arrival=message.created_at,
        now=now,
        failed=failed,
    )
    sender = (
        message.mailbox
        or Mailbox.objects.filter(
            address=message.mail_from.lower(), status=MailboxStatus.ACTIVE
        ).first()
    )
    if sender is not None:
        trace = f"Return-Path: <>\r\nDelivered-To: {sender.address}\r\n".encode()
        maildir_deliver(
            organization_id=sender.organization_id, address=sender.address, raw=trace + report
        )
        return
    message_enqueue(
        organization=message.organization,
        mail_from="",
        recipients=[message.mail_from],
        raw=report,
        source=MessageSource.SYSTEM,
        relay_server=message.relay_server,
    )
