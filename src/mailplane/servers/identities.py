"""Single-address sender identities (Postmark's Sender Signatures): add, confirm by a
link mailed to the address, resend, delete.

Why a link and not a code: the person who reads the mailbox proves it by one click, and
the account never sees the token (only its digest is kept, as for keys). The link's GET
shows a page with a button and its POST confirms: mail scanners fetch every link in a
message, so a GET that confirmed would let a scanner confirm an address nobody owns.

The confirmation is a real message through our own outbound queue (source `system`, no
DSN back), so it is delivered, retried and logged like any other. Each one goes to an
address the account typed, so the number of identities and the rate of resends are
bounded: otherwise this would be a way to mail strangers from our infrastructure.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError
from django.utils import timezone

from mailplane.cells.routing import data_atomic
from mailplane.core import crypto
from mailplane.core.errors import (
    Conflict,
    LimitReached,
    NotFound,
    RateLimited,
    ValidationFailed,
)
from mailplane.domains.models import Domain, VerificationState
from mailplane.message.cleanup import message_cleanup
from mailplane.queue.models import MessageSource, OutboundMessage
from mailplane.queue.services import message_enqueue
from mailplane.relays.models import RelayServer, RelayStatus
from mailplane.servers.models import EmailServer, IdentityStatus, SenderIdentity
from mailplane.tenancy.models import Organization

TOKEN_PREFIX = "mpi_"
TOKEN_LIFETIME = timedelta(hours=48)  # as long as DNS may take: the same patience
RESEND_INTERVAL = timedelta(seconds=60)
IDENTITIES_MAX = 100  # per account; a verified domain covers any number of addresses
CONFIRMATIONS_PER_DAY = 200  # per account, so delete-and-add cannot mail strangers at will
ADDRESS_MAX = 254  # RFC 5321 §4.5.3.1.3 (path) less the angle brackets
_TOKEN = re.compile(r"mpi_[A-Za-z0-9_-]{43}")
CONFIRM_PATH = "/api/sender-identities/confirm/"


class TooSoon(RateLimited):
    """A resend before RESEND_INTERVAL has passed since the last confirmation mail
    (RateLimited's 429; 451 4.3.0 and NO [UNAVAILABLE] elsewhere: later)."""

    code = "throttled"


@dataclass(frozen=True, slots=True)
class IdentityMail:
    """The confirmation just queued (tests and the CLI read the link from it)."""

    message: OutboundMessage
    token: str


def _address_clean(address: str) -> str:
    address = address.strip()
    if not address:
        raise ValidationFailed.on("address", "must not be blank")
    if len(address) > ADDRESS_MAX:
        raise ValidationFailed.on("address", f"must be at most {ADDRESS_MAX} characters")
    if any(c in address for c in "\r\n\0<>,;\"' ") or not address.isprintable():
        raise ValidationFailed.on("address", "must be a bare address (user@domain)")
    try:
        validate_email(address)
    except ValidationError as exc:
        raise ValidationFailed.on("address", "is not an email address") from exc
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}".lower()


def _covering_domain(organization: Organization, address: str) -> Domain | None:
    return Domain.objects.filter(
        organization=organization,
        name=address.rpartition("@")[2],
        verification_state=VerificationState.VERIFIED,
    ).first()


def confirm_url(token: str) -> str:
    base = str(settings.MAILPLANE["PUBLIC_URL"]).rstrip("/")
    return f"{base}{CONFIRM_PATH}?token={token}"


def _confirmation_raw(identity: SenderIdentity, token: str, expires: datetime) -> bytes:
    sender = str(settings.MAILPLANE["SYSTEM_SENDER"])
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr(("Mailplane", sender))
    message["To"] = identity.address
    message["Subject"] = "Confirm your sender address"
    # RFC 3834 §5: an automatic message; auto-responders should not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f"Someone asked to send email as {identity.address} through Mailplane "
        f"(account {identity.organization.name}).\n\n"
        f"To allow it, open this link and press Confirm:\n\n{confirm_url(token)}\n\n"
        f"The link works until {expires:%Y-%m-%d %H:%M} UTC. If you did not ask for "
        "this, ignore this message: nothing is sent as you until the link is used.\n"
    )
    raw = message.as_bytes(policy=SMTP)
    host = settings.MAILPLANE["SHARED_SMTP_HOST"]
    return message_cleanup(raw, sender=sender, received=f"by {host} with HTTP")


def _relay_of(organization: Organization) -> RelayServer | None:
    return (
        RelayServer.objects.filter(organization=organization, status=RelayStatus.ACTIVE)
        .order_by("id")
        .first()
    )


def _confirmation_send(identity: SenderIdentity, *, now: datetime) -> IdentityMail:
    """A new token (the old one stops working) and its message on the queue, in the
    caller's transaction."""
    sent = OutboundMessage.objects.filter(
        organization=identity.organization,
        source=MessageSource.SYSTEM,
        mail_from=str(settings.MAILPLANE["SYSTEM_SENDER"]),
        created_at__gte=now - timedelta(days=1),
    ).count()
    if sent >= CONFIRMATIONS_PER_DAY:
        raise LimitReached(
            f"{CONFIRMATIONS_PER_DAY} confirmation messages were sent for this account in "
            "the last 24 hours: try again later",
            details={"address": ["too many confirmation messages today"]},
        )
    token = f"{TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
    identity.token_digest = crypto.digest(token)
    identity.token_expires_at = now + TOKEN_LIFETIME
    identity.confirmation_sent_at = now
    identity.save(update_fields=["token_digest", "token_expires_at", "confirmation_sent_at"])
    message = message_enqueue(
        organization=identity.organization,
        mail_from=str(settings.MAILPLANE["SYSTEM_SENDER"]),
        recipients=[identity.address],
        raw=_confirmation_raw(identity, token, identity.token_expires_at),
        source=MessageSource.SYSTEM,  # no DSN about it to anyone (delivery/dsn.py)
        relay_server=_relay_of(identity.organization),
    )
    return IdentityMail(message=message, token=token)


def sender_identity_create(
    *,
    organization: Organization,
    address: str,
    name: str = "",
    server: EmailServer | None = None,
) -> tuple[SenderIdentity, IdentityMail | None]:
    """Add an address; mail it a confirmation link, unless a verified domain of the
    account covers it already (then it is verified at once, as Postmark does)."""
    address = _address_clean(address)
    name = name.strip()
    if any(c in name for c in "\r\n\0"):
        raise ValidationFailed.on("name", "must be one line")
    now = timezone.now()
    with data_atomic():
        Organization.objects.select_for_update().filter(pk=organization.pk).first()
        if organization.sender_identities.count() >= IDENTITIES_MAX:
            raise LimitReached(
                f"an account may have {IDENTITIES_MAX} sender identities: verify the "
                "domain instead, which covers every address of it",
                details={"address": [f"limit of {IDENTITIES_MAX} reached"]},
            )
        verified = _covering_domain(organization, address) is not None
        try:
            with data_atomic():
                identity = SenderIdentity.objects.create(
                    organization=organization,
                    server=server,
                    address=address,
                    name=name,
                    status=IdentityStatus.VERIFIED if verified else IdentityStatus.PENDING,
                    confirmed_at=now if verified else None,
                )
        except IntegrityError as exc:
            raise Conflict(
                f"{address} is a sender identity already",
                details={"address": ["this address is a sender identity already"]},
            ) from exc
        mail = None if verified else _confirmation_send(identity, now=now)
    return identity, mail


def sender_identity_resend(*, organization: Organization, identity_id: int) -> IdentityMail:
    now = timezone.now()
    with data_atomic():
        identity = (
            SenderIdentity.objects.select_for_update()
            .select_related("organization")
            .filter(organization=organization, pk=identity_id)
            .first()
        )
        if identity is None:
            raise NotFound("sender identity not found")
        if identity.status == IdentityStatus.VERIFIED:
            raise Conflict(
                f"{identity.address} is confirmed already",
                details={"status": ["the identity is verified"]},
            )
        last = identity.confirmation_sent_at
        if last is not None and now - last < RESEND_INTERVAL:
            wait = int((RESEND_INTERVAL - (now - last)).total_seconds()) + 1
            raise TooSoon(
                f"a confirmation was sent {int((now - last).total_seconds())} s ago: "
                f"try again in {wait} s",
                details={"retry_after": [str(wait)]},
            )
        return _confirmation_send(identity, now=now)


def _token_check(token: object) -> str:
    if not isinstance(token, str) or not token:
        raise ValidationFailed.on("token", "is required")
    if not _TOKEN.fullmatch(token):
        raise ValidationFailed.on("token", "is not a confirmation token")
    return token


def sender_identity_pending(*, token: object) -> SenderIdentity:
    """The identity a token would confirm (the GET page), or a refusal naming `token`."""
    token = _token_check(token)
    identity = (
        SenderIdentity.objects.select_related("organization")
        .filter(token_digest=crypto.digest(token))
        .first()
    )
    if identity is None or identity.token_expires_at is None:
        raise ValidationFailed.on("token", "is unknown, used or replaced by a newer link")
    if identity.token_expires_at <= timezone.now():
        raise ValidationFailed.on("token", "has expired: ask for a new link")
    return identity


def sender_identity_confirm(*, token: object) -> SenderIdentity:
    """Verify the identity the token was mailed for; the token works once."""
    with data_atomic():
        identity = sender_identity_pending(token=token)
        updated = SenderIdentity.objects.filter(
            pk=identity.pk, token_digest=identity.token_digest
        ).update(
            status=IdentityStatus.VERIFIED,
            confirmed_at=timezone.now(),
            token_digest="",
            token_expires_at=None,
        )
        if not updated:  # confirmed (or resent) meanwhile by another request
            raise ValidationFailed.on("token", "is unknown, used or replaced by a newer link")
    identity.refresh_from_db()
    return identity


def sender_identity_delete(*, organization: Organization, identity_id: int) -> None:
    deleted, _ = SenderIdentity.objects.filter(organization=organization, pk=identity_id).delete()
    if not deleted:
        raise NotFound("sender identity not found")
