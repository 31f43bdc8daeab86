"""What provider webhooks share: reports about the mail we relayed through a provider
(each provider's receiver parses its own format: mailgun.py, sendgrid.py), recorded here.

A 2xx from a provider's send API only means "accepted". The provider then delivers, defers
or bounces from its own envelope sender, so VERP matching (bounces.py) never sees the
bounce: the provider POSTs an event to its webhook instead. Every send carries our queue
row id (providers/http_api.py, RECIPIENT_VARIABLE), and a report lands on that row as the
native outcome would (late.py, through queue/transitions.py):

    delivered            -> delivered event; the provider's reply becomes the last reply
    permanent failure    -> bounced: event, hard-bounce suppression for a 5.x.x, DSN to the
                            sender (a 4.x.x the provider gave up on bounces like an expired
                            retry: DSN, no suppression)
    temporary failure    -> a deferred event only: the provider retries, we do not requeue
    dropped / suppressed -> suppressed (on the provider's suppression list) or failed (DSN)
    spam complaint       -> complained event, suppression (reason complaint); the row stays
                            delivered and the sender gets no DSN: nothing failed
    unsubscribe          -> unsubscribed event, suppression (reason unsubscribed), likewise

Trust: the relay server named in the URL holds what authenticates the call (Mailgun's
HMAC signing key, SendGrid's ECDSA public key), and only rows relayed through that server
are touched. Providers retry webhooks: an event is recorded once, its provider id kept as
the event's detail and looked for under the row's lock.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction

from mailplane.core.errors import NotAllowed, NotFound, Unavailable, ValidationFailed
from mailplane.delivery.late import LateOutcome, late_failures_report, late_outcomes_store
from mailplane.delivery.results import SendResult
from mailplane.queue.models import (
    DeliveryEvent,
    EventType,
    QueuedRecipient,
    RecipientStatus,
)
from mailplane.relays.models import RelayServer


class SignatureRejected(NotAllowed):
    """The call did not prove that the relay server's provider sent it (403; NotAllowed's
    SMTP and IMAP answers)."""

    code = "signature_invalid"


class ReportsInFlight(Unavailable):
    """Some reported rows' sends are still being recorded here: the provider should call
    again (providers retry a 5xx). What could be recorded was; every report is recorded
    once, so the retry is safe. `details` are the receipt's counts."""

    code = "retry_later"


# What the provider is asked to wait before calling again.
RETRY_AFTER_SECONDS = 60


class SignatureMissing(SignatureRejected):
    code = "signature_missing"


class SignatureExpired(SignatureRejected):
    code = "signature_expired"


@dataclass(frozen=True, slots=True)
class ProviderReport:
    """One provider event about one of our queue rows, in our outcome terms."""

    recipient_id: int
    recipient: str  # the address the provider reports on: it must be the row's
    event_key: str  # "<provider> event <id>": the event's detail; it dedupes retries
    kind: EventType
    result: SendResult


@dataclass(slots=True)
class WebhookReceipt:
    """What one webhook call did; the provider gets it back (and shows it in its logs)."""

    received: int = 0  # events in the call
    recorded: int = 0
    duplicates: int = 0  # recorded before: the provider retried
    ignored: int = 0  # not a delivery outcome, or not about a row of this relay server
    in_flight: int = 0  # the row's send is not recorded yet: the provider should call again

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "recorded": self.recorded,
            "duplicates": self.duplicates,
            "ignored": self.ignored,
            "in_flight": self.in_flight,
        }


# --- shared parsing ---------------------------------------------------------------------------


def json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationFailed.on("body", "must be JSON") from exc


def recipient_id_of(value: Any) -> int | None:
    """Our row id as the provider echoes it (a string; Mailgun may turn it into a number)."""
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    return int(text) if text.isdigit() and len(text) < 19 else None


def report_key(provider: str, event_id: Any, event: dict[str, Any]) -> str:
    """The event's id, or when a provider leaves it out, a digest of the event itself (a
    retried call repeats the event byte for byte, so the digest dedupes it all the same)."""
    if not isinstance(event_id, str) or not event_id.strip():
        canonical = json.dumps(event, sort_keys=True, separators=(",", ":"))
        event_id = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]
    return f"{provider} event {event_id.strip()[:200]}"


_REPLY_CODE = re.compile(r"^([245])\d\d(?:[ -]|$)")
ENHANCED_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_ENHANCED_IN = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")  # as SendResult reads it


def reply_text(text: str, *, code: Any = None, enhanced: Any = None) -> str:
    """A provider's report shaped as an SMTP reply ("550 5.1.1 text"), so that the event,
    SendResult.enhanced_status and the DSN read it as they read a native one."""
    text = " ".join(str(text or "").split())
    code_text = str(code) if isinstance(code, int | str) and str(code).isdigit() else ""
    found = _REPLY_CODE.match(text)
    if found and code_text in ("", text[:3]):
        code_text, text = text[:3], text[found.end() :].strip()
    if isinstance(enhanced, str) and ENHANCED_STATUS.match(enhanced) and enhanced not in text:
        text = f"{enhanced} {text}".strip()
    return f"{code_text} {text}".strip()


def failure_result(reply: str, remote_host: str, code: int | None) -> SendResult:
    """A final failure: permanent, unless the reply's own status is 4.x.x (or 4xx without
    one): the provider gave up retrying, which bounces as our expired retries do (a DSN,
    no suppression). A reply with no status at all is permanent (5.0.0)."""
    enhanced, leading = _ENHANCED_IN.search(reply), _REPLY_CODE.match(reply)
    klass = enhanced.group(1) if enhanced else leading.group(1) if leading else "5"
    if klass == "4":
        return SendResult.temporary(reply, remote_host, code)
    return SendResult.permanent(reply, remote_host, code)


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def recipient_result(kind: EventType, provider: str, how: str = "") -> SendResult:
    """A complaint or an unsubscribe as the event's reply and the suppression's detail.
    Delivered: it is news about a delivered message, not a failure (no SMTP code)."""
    what = "spam complaint" if kind is EventType.COMPLAINED else "unsubscribe"
    return SendResult.delivered(f"{what} reported by {provider}{how}", "", None)


# --- Mailgun ---------------------------------------------------------------------------------


# --- SendGrid --------------------------------------------------------------------------------


# --- recording ------------------------------------------------------------------------------


def relay_and_key(relay_server_id: int, provider: str, credential: str) -> tuple[RelayServer, str]:
    """The relay server the URL names and its webhook secret. Without one, there is no
    receiver for it (a 404 alike for absent servers, other providers and unset keys)."""
    relay = RelayServer.objects.filter(pk=relay_server_id, provider=provider).first()
    key = (
        relay.credentials.get(credential) if relay and isinstance(relay.credentials, dict) else None
    )
    if relay is None or not isinstance(key, str) or not key:
        raise NotFound(
            f"no {provider} webhook receiver for this relay server "
            f"(a {provider} server with credentials.{credential} set)"
        )
    return relay, key


def _in_flight(row: QueuedRecipient, now: datetime) -> bool:
    """A worker holds the row: the provider answered its send, but the worker has not
    recorded that yet. Changing the row now would make it drop its record (lost claim)."""
    return bool(
        row.status in (RecipientStatus.QUEUED, RecipientStatus.DEFERRED)
        and row.claimed_by
        and row.claimed_until is not None
        and row.claimed_until > now
    )


def _rows(relay: RelayServer, ids: set[int]) -> dict[int, QueuedRecipient]:
    """This relay server's rows among `ids`, locked until the transaction ends (PostgreSQL;
    SQLite has one writer anyway), in id order so that concurrent calls cannot deadlock.
    Chunked under SQLite's variable limit."""
    found: dict[int, QueuedRecipient] = {}
    ordered = sorted(ids)
    for i in range(0, len(ordered), 500):
        rows = (
            QueuedRecipient.objects.select_for_update(of=("self",))
            .select_related("message")
            .filter(pk__in=ordered[i : i + 500], message__relay_server=relay)
            .order_by("pk")
        )
        found.update((row.pk, row) for row in rows)
    return found


def _recorded(row_ids: list[int], *, prefix: str) -> set[tuple[int, str]]:
    """(row id, event key) of the provider events already recorded on these rows: a row has
    a handful of events, so reading them all beats a long IN list of event keys."""
    seen: set[tuple[int, str]] = set()
    for i in range(0, len(row_ids), 500):
        seen.update(
            DeliveryEvent.objects.filter(
                recipient_id__in=row_ids[i : i + 500], detail__startswith=prefix
            ).values_list("recipient_id", "detail")
        )
    return seen


def reports_record(
    *, relay: RelayServer, reports: Sequence[ProviderReport], received: int, now: datetime
) -> WebhookReceipt:
    """Put provider reports on the relay server's rows (late.py: as a native outcome is
    recorded), then tell the senders. Each report at most once (its event key is the
    event's detail). ReportsInFlight (after recording the others) when a row's send is
    still being recorded."""
    receipt = WebhookReceipt(received=received, ignored=received - len(reports))
    outcomes: list[LateOutcome] = []
    with transaction.atomic():
        rows = _rows(relay, {r.recipient_id for r in reports})
        seen = _recorded(sorted(rows), prefix=f"{relay.provider} event ")
        for report in reports:
            row = rows.get(report.recipient_id)
            if row is None or row.rcpt_to.lower() != report.recipient.strip().lower():
                receipt.ignored += 1  # not ours: unknown id, another relay server's row
                continue
            if _in_flight(row, now):
                receipt.in_flight += 1
                continue
            if (row.pk, report.event_key) in seen:
                receipt.duplicates += 1
                continue
            seen.add((row.pk, report.event_key))
            outcomes.append(LateOutcome(row, report.kind, report.result, report.event_key))
        failures = late_outcomes_store(outcomes, now=now)
    receipt.recorded = len(outcomes)
    late_failures_report(failures, now=now)
    if receipt.in_flight:
        raise ReportsInFlight(
            "a reported message is still being recorded here; call again",
            details={name: [str(count)] for name, count in receipt.as_dict().items()},
            retry_after=RETRY_AFTER_SECONDS,
        )
    return receipt
