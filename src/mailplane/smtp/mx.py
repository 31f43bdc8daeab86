"""Inbound MX: mail for hosted mailboxes, and nothing else (never an open relay).

RCPT decides routing against the database (active mailbox → accept; hosted domain without
that mailbox → 550 5.1.1; any other domain → 550 5.7.1 relay denied). DATA authenticates
the message (SPF, DKIM, DMARC), records the outcome in Authentication-Results, files it
into each recipient's Maildir and answers 250 only once every copy is on disk.

Filing is group-committed like submission (smtp/ingest.py): the sessions' messages go to
one writer that writes a batch of them and makes the whole batch durable with one sync
(`maildir_deliver_many`), instead of an fsync of the file and of its directory per copy.

Bounces: bounces+<row>-<tag>@<return path host of a hosted domain> is one of our VERP
return paths (mailplane.delivery.bounces). RCPT accepts it only when the tag is genuine and
names a queue row of that domain (else 550 5.1.1); DATA hands such a report to
bounce_match instead of a Maildir. unsubscribe+<token>@ the same host is a broadcast
message's List-Unsubscribe mailto (RFC 2369 §3.2, sending/unsubscribe.py): RCPT accepts
it only for a live token, and DATA unsubscribes its recipient from its stream.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.smtp import Envelope
from django.db import connection

from mailplane.core.errors import DomainError, NotAllowed, NotFound, SmtpStatus, ValidationFailed
from mailplane.delivery.bounces import bounce_match, verp_recipient_id
from mailplane.dns import domain_ascii
from mailplane.domains.models import Domain
from mailplane.inbound.parse import MimeRefused, message_parse
from mailplane.inbound.services import InboundRoute, inbound_accept, inbound_host, inbound_route
from mailplane.mailboxes.models import Mailbox, MailboxStatus
from mailplane.message.headers import address_domain, prepend, rfc5322_date
from mailplane.queue.models import QueuedRecipient
from mailplane.sending.unsubscribe import mailto_token, unsubscribe_apply, unsubscribe_check
from mailplane.smtp.authres import AuthOutcome, message_authenticate
from mailplane.smtp.db import blocking
from mailplane.smtp.ingest import GroupCommitter
from mailplane.smtp.protocol import MailplaneSession, MailplaneSMTP
from mailplane.storage.maildir import MaildirItem, maildir_deliver_many

log = logging.getLogger("mailplane.smtp.mx")


@dataclass(frozen=True, slots=True)
class LocalRecipient:
    organization_id: int
    address: str


@dataclass(frozen=True, slots=True)
class BounceRecipient:
    """A VERP return path: the message is a report about queue row `recipient_id`."""

    recipient_id: int
    address: str


@dataclass(frozen=True, slots=True)
class UnsubscribeRecipient:
    """A List-Unsubscribe mailto: the message asks to unsubscribe the token's recipient."""

    token: str
    address: str


def bounce_route(address: str) -> BounceRecipient | UnsubscribeRecipient | None:
    """Blocking: None if `address` is not at a hosted domain's return path host; else the
    bounce or unsubscribe route. A local part that is neither a genuine VERP tag nor a
    live unsubscribe token of ours is NotFound."""
    host = address_domain(address)
    if not Domain.objects.filter(return_path_host=host).exists():
        return None
    token = mailto_token(address)
    if token is not None:
        unsubscribe_check(token=token)  # NotFound: 550 5.1.1
        return UnsubscribeRecipient(token, address)
    recipient_id = verp_recipient_id(address)
    if recipient_id is not None and (
        QueuedRecipient.objects.filter(
            pk=recipient_id, message__domain__return_path_host=host
        ).exists()
    ):
        return BounceRecipient(recipient_id, address)
    raise NotFound("No such bounce address here")  # 550 5.1.1


@functools.cache
def _mailbox_sql(vendor: str) -> str:
    sql, _params = (
        Mailbox.objects.filter(address="")
        .values_list("organization_id", "status")[:1]
        .query.sql_with_params()
    )
    return str(sql)


def _mailbox_row(address: str) -> tuple[int, str] | None:
    """Blocking: (organization id, status) of the mailbox at `address`, or None.

    The ORM's own SQL for the lookup, compiled once per database vendor: compiling the
    queryset cost more CPU than running it, once per RCPT (py-spy, issue 15).
    """
    with connection.cursor() as cursor:
        cursor.execute(_mailbox_sql(connection.vendor), [address])
        row = cursor.fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def recipient_route(
    address: str,
) -> LocalRecipient | BounceRecipient | UnsubscribeRecipient | InboundRoute:
    """Blocking: the hosted mailbox or VERP route for `address`; a refusal is a domain
    error that carries its SMTP reply."""
    address = address.strip().lower()
    local, at, domain = address.rpartition("@")
    if at and not domain.isascii():
        # Hosted domains are stored as the DNS has them (A-labels); RFC 6531 §3.7 lets an
        # SMTPUTF8 client name the same domain by its U-label.
        try:
            address = f"{local}@{domain_ascii(domain)}"
        except UnicodeError:
            raise ValidationFailed(
                "Recipient domain is not a valid internationalised domain name",
                smtp=SmtpStatus(553, "5.1.2"),  # RFC 3463 §3.2: bad destination system
            ) from None
    row = _mailbox_row(address)
    if row is not None:
        organization_id, status = row
        if status != MailboxStatus.ACTIVE:
            # RFC 3463 §3.3: X.2.1 mailbox disabled, not accepting messages.
            raise NotAllowed("Mailbox disabled", smtp=SmtpStatus(550, "5.2.1"))
        return LocalRecipient(organization_id, address)
    inbound = inbound_route(address)
    if inbound is not None:
        return inbound
    if address_domain(address) == inbound_host():
        raise NotFound("No such inbound address here")  # 550 5.1.1
    bounce = bounce_route(address)
    if bounce is not None:
        return bounce
    if Domain.objects.filter(name=address_domain(address)).exists():
        raise NotFound("No such mailbox here")  # 550 5.1.1
    # RFC 5321 §3.6.2 / §7.1: relaying for foreign domains is refused.
    raise NotAllowed("Relay access denied")  # 550 5.7.1


@dataclass(frozen=True, slots=True)
class Filing:
    """One accepted message and where its copies go."""

    recipients: list[LocalRecipient]
    raw: bytes
    folder: str


def mx_deliver_many(filings: list[Filing]) -> list[list[Path]]:
    """Blocking: one durable copy per recipient of every message, the syncs shared by the
    batch; per message its paths. All or nothing: on a failure no copy is left."""
    paths = maildir_deliver_many(
        [
            MaildirItem(rcpt.organization_id, rcpt.address, filing.raw, filing.folder)
            for filing in filings
            for rcpt in filing.recipients
        ]
    )
    out: list[list[Path]] = []
    start = 0
    for filing in filings:
        out.append(paths[start : start + len(filing.recipients)])
        start += len(filing.recipients)
    return out


def mx_deliver(*, recipients: list[LocalRecipient], raw: bytes, folder: str) -> list[Path]:
    """Blocking, one message: the batch path with a batch of one."""
    return mx_deliver_many([Filing(recipients, raw, folder)])[0]


def bounces_consume(*, bounces: list[BounceRecipient | UnsubscribeRecipient], raw: bytes) -> None:
    """Blocking: match each report to its queue row (bounced, suppressed, sender told);
    each unsubscribe request unsubscribes its token's recipient (idempotent)."""
    for bounce in bounces:
        if isinstance(bounce, UnsubscribeRecipient):
            try:
                unsubscribe_apply(token=bounce.token, how="mailto")
            except NotFound:  # its message went away between RCPT and DATA
                log.info("unsubscribe request for %s matched no message", bounce.address)
            continue
        if bounce_match(bounce.address, raw) is None:
            # The row went away between RCPT and DATA; the report has nothing to update.
            log.info("bounce report for %s matched no queue row", bounce.address)


def strip_our_results(raw: bytes, authserv_id: str) -> bytes:
    """Drop Authentication-Results claiming to be ours (RFC 8601 §5: forgeries)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return raw
    head, body = raw[: end + 2], raw[end + 2 :]
    fields = re.split(rb"\r\n(?![ \t])", head)
    pattern = re.compile(
        rb"authentication-results:\s*" + re.escape(authserv_id.encode()) + rb"\s*(;|$)",
        re.IGNORECASE,
    )
    kept = [f for f in fields if f and not pattern.match(f)]
    return b"\r\n".join(kept) + b"\r\n" + body


def _printable(helo: str) -> str:
    # RFC 6531 §3.7.1: EHLO names are ASCII (LDH labels or A-labels); whatever else a
    # client sends goes into our trace field escaped, never as bytes that were not UTF-8.
    return helo if helo.isascii() else helo.encode("ascii", "backslashreplace").decode()


class MXHandler:
    def __init__(self, *, hostname: str, max_recipients: int = 100, max_batch: int = 200) -> None:
        self.hostname = hostname
        self.max_recipients = max_recipients
        self.committer: GroupCommitter[Filing, list[Path]] = GroupCommitter(
            mx_deliver_many, max_batch=max_batch, name="mailplane-mx-writer"
        )

    async def aclose(self) -> None:
        await self.committer.aclose()

    async def handle_EHLO(
        self,
        server: MailplaneSMTP,
        session: MailplaneSession,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # An MX takes no logins: do not advertise AUTH at all.
        return [r for r in responses if not r[4:].upper().startswith("AUTH")]

    async def handle_RCPT(
        self,
        server: MailplaneSMTP,
        session: MailplaneSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        # Counted per RCPT command, duplicates included: the limit bounds the work done.
        count = getattr(envelope, "rcpt_count", 0) + 1
        envelope.rcpt_count = count  # type: ignore[attr-defined]
        if count > self.max_recipients:
            return "452 4.5.3 Too many recipients"
        try:
            route = await blocking(recipient_route, address)
        except DomainError as refused:
            log.info("%s rcpt refused %s: %s", session.id, address, refused.smtp_reply())
            return refused.smtp_reply()
        if isinstance(route, BounceRecipient | UnsubscribeRecipient):
            bounces: list[BounceRecipient | UnsubscribeRecipient] = getattr(envelope, "bounces", [])
            if route not in bounces:
                bounces.append(route)
                envelope.rcpt_tos.append(route.address)
            envelope.bounces = bounces  # type: ignore[attr-defined]
            return "250 2.1.5 Recipient OK"
        if isinstance(route, InboundRoute):
            inbound: list[InboundRoute] = getattr(envelope, "inbound", [])
            if route not in inbound:
                inbound.append(route)
                envelope.rcpt_tos.append(route.address)
            envelope.inbound = inbound  # type: ignore[attr-defined]
            return "250 2.1.5 Recipient OK"
        if route.address not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(route.address)
        routes: list[LocalRecipient] = getattr(envelope, "routes", [])
        if route not in routes:
            routes.append(route)
        envelope.routes = routes  # type: ignore[attr-defined]
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(
        self, server: MailplaneSMTP, session: MailplaneSession, envelope: Envelope
    ) -> str:
        raw = strip_our_results(envelope.original_content or b"", self.hostname)
        mail_from = envelope.mail_from or ""
        bounces: list[BounceRecipient | UnsubscribeRecipient] = getattr(envelope, "bounces", [])
        routes: list[LocalRecipient] = getattr(envelope, "routes", [])
        inbound: list[InboundRoute] = getattr(envelope, "inbound", [])
        if not routes and not inbound:
            # Only VERP recipients: a report for the delivery engine, not for a person.
            # DSNs come from the null sender (RFC 3464 §2) of arbitrary MTAs, so no DMARC
            # verdict applies; the HMAC tag checked at RCPT is what authenticates them.
            await blocking(bounces_consume, bounces=bounces, raw=raw)
            log.info("%s bounce reports consumed: %d", session.id, len(bounces))
            return "250 2.0.0 OK bounce report processed"
        helo = session.host_name or ""
        outcome: AuthOutcome = await blocking(
            message_authenticate, ip=session.client_ip, helo=helo, mail_from=mail_from, raw=raw
        )
        if outcome.dmarc == "fail" and outcome.dmarc_policy == "reject":
            # RFC 7489 §6.7 / §10.3: honour p=reject with a 5.7.1 naming DMARC.
            log.info("%s rejected by DMARC policy of %s", session.id, outcome.from_domain)
            return "550 5.7.1 Rejected by the DMARC policy of " + outcome.from_domain
        folder = (
            "Junk" if outcome.dmarc == "fail" and outcome.dmarc_policy == "quarantine" else "INBOX"
        )
        # RFC 3848 §3 and RFC 6531 §3.7.3 / §4.3: the WITH protocol names the extensions used.
        protocol = ("UTF8SMTP" if envelope.smtp_utf8 else "ESMTP") + (
            "S" if server.tls_active else ""
        )
        helo = _printable(helo)
        received = (
            f"from {helo} ([{session.client_ip}])\r\n\tby {self.hostname} with {protocol}"
            f" for <{envelope.rcpt_tos[0]}>; {rfc5322_date()}"
            if len(envelope.rcpt_tos) == 1
            else f"from {helo} ([{session.client_ip}])\r\n\tby {self.hostname} with {protocol};"
            f" {rfc5322_date()}"
        )
        raw = prepend(
            raw,
            [
                ("Authentication-Results", outcome.header_value(self.hostname)),
                ("Received", received),
            ],
        )
        parsed = None
        if inbound:
            try:
                # Before anything is written: a refusal leaves no copy anywhere.
                parsed = await blocking(message_parse, raw)
            except MimeRefused as refused:
                log.info("%s inbound refused: %s", session.id, refused.smtp_reply())
                return refused.smtp_reply()
        if routes:
            await self.committer.submit(Filing(list(routes), raw, folder))
        if inbound:
            await blocking(
                inbound_accept,
                routes=inbound,
                raw=raw,
                mail_from=mail_from,
                outcome=outcome,
                authserv_id=self.hostname,
                parsed=parsed,
            )
        if bounces:
            await blocking(bounces_consume, bounces=bounces, raw=raw)
        log.info(
            "%s delivered from=%s rcpts=%d inbound=%d size=%d spf=%s dmarc=%s folder=%s",
            session.id,
            mail_from or "<>",
            len(routes),
            len(inbound),
            len(raw),
            outcome.spf,
            outcome.dmarc,
            folder,
        )
        return "250 2.0.0 OK delivered"

    async def handle_exception(self, error: Exception) -> str:
        log.exception("mx transaction failed: %s", type(error).__name__)
        return "451 4.3.0 Internal error; try again later"
