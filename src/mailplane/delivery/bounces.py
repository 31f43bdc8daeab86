"""VERP return paths and matching inbound DSNs back to the recipient they report on.

The envelope sender of every outbound attempt is bounces+<recipient id>-<tag>@<return
path host>, where tag is an HMAC of the id: a bounce for it names exactly one queue row,
and a forged one fails the HMAC. (VERP: https://cr.yp.to/proto/verp.txt.)

Tags are made with the newest secret key and checked against every configured one
(MAILPLANE_SECRET_KEY, newest first): bounces arrive days after the send, so mail sent
before a key rotation must still be recognised while its key stays configured.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from mailplane.delivery.late import LateOutcome, late_failures_report, late_outcomes_store
from mailplane.delivery.results import SendResult
from mailplane.queue.models import EventType, QueuedRecipient

VERP_LOCAL = "bounces"
_VERP = re.compile(r"^bounces\+(\d+)-([0-9a-f]{10})@", re.I)


def _tag(recipient_id: int, secret: str) -> str:
    key = ("mailplane-verp:" + secret).encode()
    return hmac.new(key, str(recipient_id).encode(), hashlib.sha256).hexdigest()[:10]


def verp_address(*, recipient_id: int, return_path_host: str) -> str:
    tag = _tag(recipient_id, settings.SECRET_KEYS[0])
    return f"{VERP_LOCAL}+{recipient_id}-{tag}@{return_path_host}"


def verp_recipient_id(address: str) -> int | None:
    """The queue row id a VERP address stands for, or None if it is not one of ours."""
    match = _VERP.match(address.strip().strip("<>"))
    if not match:
        return None
    recipient_id, tag = int(match.group(1)), match.group(2).lower()
    # Every key compared (no early exit), so timing tells nothing of which one matched.
    matches = [hmac.compare_digest(tag, _tag(recipient_id, k)) for k in settings.SECRET_KEYS]
    return recipient_id if any(matches) else None


@dataclass(frozen=True, slots=True)
class ReportedFailure:
    action: str  # RFC 3464 §2.3.3: failed, delayed, delivered, relayed, expanded
    status: str  # RFC 3463 code, e.g. 5.1.1
    diagnostic: str
    remote_mta: str


def dsn_parse(raw: bytes) -> list[ReportedFailure]:
    """Per-recipient blocks of a message/delivery-status part (empty if not a DSN)."""
    message = message_from_bytes(raw)
    found: list[ReportedFailure] = []
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        # The stdlib parses message/delivery-status into a list of header blocks: the
        # per-message block first, then one per recipient (RFC 3464 §2.1).
        blocks = [b for b in payload if isinstance(b, Message)] if isinstance(payload, list) else []
        for block in blocks[1:]:
            if block.get("Action") is None:
                continue
            found.append(
                ReportedFailure(
                    action=str(block.get("Action", "")).strip().lower(),
                    status=str(block.get("Status", "")).strip(),
                    diagnostic=" ".join(str(block.get("Diagnostic-Code", "")).split()),
                    remote_mta=str(block.get("Remote-MTA", "")).partition(";")[2].strip(),
                )
            )
    return found


def bounce_match(rcpt: str, raw: bytes) -> int | None:
    """For the MX: mail to a VERP address is a bounce report about one queue row.

    Returns the QueuedRecipient id it was matched to (the MX then accepts and consumes the
    message) or None (not one of our VERP addresses, or a forged tag: treat as ordinary
    mail / reject). A report with Action: failed (or a 5.x.x Status) is a late outcome
    (late.py): a "bounced" event; a row still open is marked bounced, the address
    suppressed and the sender told.
    """
    recipient_id = verp_recipient_id(rcpt)
    if recipient_id is None:
        return None
    failures = [f for f in dsn_parse(raw) if f.action == "failed" or f.status.startswith("5.")]
    now = timezone.now()
    with transaction.atomic():
        row = (
            QueuedRecipient.objects.select_for_update(of=("self",))
            .select_related("message")
            .filter(pk=recipient_id)
            .first()
        )
        if row is None:
            return None
        if not failures:
            return row.pk  # delayed/relayed reports: nothing to change
        report = failures[0]
        reply = report.diagnostic or f"{report.status} reported failed by {report.remote_mta}"
        bounced = LateOutcome(
            row,
            EventType.BOUNCED,
            SendResult.permanent(reply, report.remote_mta),
            "asynchronous bounce (inbound DSN to the VERP return path)",
        )
        to_report = late_outcomes_store([bounced], now=now)
    late_failures_report(to_report, now=now)
    return row.pk
