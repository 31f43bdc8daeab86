"""Message submission (RFC 6409) for hosted mailboxes: ports 465 (implicit TLS) and 587.

The transaction reads as a checklist: authenticated? sender is the mailbox? recipients
within limits? From header is the mailbox? then complete the headers, file the Sent copy,
queue the message, and only then answer 250. Local recipients go through the queue too:
the delivery engine routes them, so every message has one path and one record.

An email server's key is SMTP credentials too (issue 11), so an application that speaks
SMTP sends through a server as the send API does: password = the server key (`mps_…`),
username = the same key (Postmark: user and password are both the server token) or the
fixed name `apikey` (SendGrid's, for clients that want a short user name). Such a
message is checked like an API one (sending/services.py): its From must be a verified
identity of the account (550 5.7.1 otherwise), the stream is named by `X-Mailplane-Stream`
or Postmark's `X-PM-Message-Stream` (both removed before the message is queued; default:
the server's default stream), the stream's suppressions apply (a suppressed recipient is
accepted and logged as suppressed, as the API answers), and it is logged under the server
with the API's messages. No Sent copy: a server has no mailbox.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword

from mailplane.core.errors import DomainError, NotAllowed, SmtpStatus, Unavailable
from mailplane.dns import domain_ascii
from mailplane.mailboxes.models import Mailbox
from mailplane.mailboxes.services import mailbox_sending_check
from mailplane.message.cleanup import message_cleanup
from mailplane.message.headers import fields_take, from_addresses, headers_of
from mailplane.queue.models import MessageSource
from mailplane.queue.services import EnqueueRequest, message_enqueue_many
from mailplane.sending.requests import MAX_RECIPIENTS
from mailplane.sending.services import (
    SendContext,
    Sent,
    messages_send_checked,
    submitted_prepare,
)
from mailplane.servers.models import ServerKey
from mailplane.servers.services import KEY_PREFIX, server_key_authenticate
from mailplane.smtp.db import blocking
from mailplane.smtp.ingest import GroupCommitter
from mailplane.smtp.logins import (
    CredentialCache,
    LoginGate,
    LoginLimits,
    Principal,
    login_check,
    login_guard,
    mask,
)
from mailplane.smtp.protocol import MailplaneSession, MailplaneSMTP
from mailplane.storage.maildir import MaildirItem, maildir_deliver_many

log = logging.getLogger("mailplane.smtp.submission")


# The headers that choose a server message's stream; removed before queueing.
STREAM_HEADERS = frozenset({"x-mailplane-stream", "x-pm-message-stream"})
SERVER_KEY_USERNAMES = frozenset({"apikey"})  # besides the key itself


@dataclass(frozen=True, slots=True)
class ServerPrincipal:
    """A session authenticated with an email server's key."""

    key_id: int
    server_id: int
    organization_id: int
    prefix: str  # the key's first characters (shown by the API): what logs name


def server_login_check(*, username: str, password: str) -> ServerPrincipal | None:
    """Blocking: the live server key `password` is, if the username goes with it."""
    if username != password and username.lower() not in SERVER_KEY_USERNAMES:
        return None
    key = server_key_authenticate(secret=password)
    if key is None:
        return None
    return ServerPrincipal(key.pk, key.server_id, key.server.organization_id, key.prefix)


def server_submission_accept(
    *,
    principal: ServerPrincipal,
    mail_from: str,
    recipients: list[str],
    raw: bytes,
    hostname: str,
    smtputf8: bool = False,
) -> Sent:
    """Blocking: check, complete and queue a server key's message under its server, in
    one transaction; what was queued (held, maybe: the content filter). Raises a
    DomainError for a refusal."""
    key = (
        ServerKey.objects.select_related("server", "server__organization", "server__default_stream")
        .filter(pk=principal.key_id, revoked_at=None, server__organization__is_active=True)
        .first()
    )
    if key is None:  # revoked, its server deleted or the account suspended since the login
        raise NotAllowed("This server key is no longer valid")
    server = key.server
    raw, taken = fields_take(raw, STREAM_HEADERS)
    streams = {v.strip() for values in taken.values() for v in values}
    if len(streams) > 1:
        raise NotAllowed(
            f"Stream headers disagree ({', '.join(sorted(streams))})",
            smtp=SmtpStatus(550, "5.6.0"),
        )
    stream_id = streams.pop() if streams else None
    froms = from_addresses(headers_of(raw))
    ctx = SendContext.load(server)
    try:
        prepared = submitted_prepare(
            ctx=ctx,
            mail_from=mail_from,
            sender=froms[0],
            recipients=recipients,
            raw=_server_headers(raw, froms[0], hostname, smtputf8=smtputf8),
            stream_id=stream_id,
        )
        if mail_from.lower() != froms[0]:
            # RFC 6409 §6.1: the envelope sender too must be one the client may use.
            submitted_prepare(
                ctx=ctx,
                mail_from=mail_from,
                sender=mail_from,
                recipients=[],
                raw=b"",
                stream_id=stream_id,
            )
    except DomainError as refused:
        if "stream" in refused.details:  # no such stream on this server: not a syntax error
            refused.smtp = SmtpStatus(550, "5.7.1")
        raise
    # The key goes with the message: an IP pool may be assigned to it (pools/), and its
    # caps and pause apply (reputation/: over a refuse-mode cap 452 4.3.1, paused 550 5.7.1).
    (sent,) = messages_send_checked(server=server, prepared=[prepared], server_key=key)
    if isinstance(sent, DomainError):
        raise sent
    return sent


def _server_headers(raw: bytes, sender: str, hostname: str, *, smtputf8: bool) -> bytes:
    protocol = "UTF8SMTPSA" if smtputf8 else "ESMTPSA"  # RFC 3848 §3, RFC 6531 §4.3
    return message_cleanup(raw, sender=sender, received=f"by {hostname} with {protocol}")


@dataclass(slots=True)
class Accepted:
    message_id: int
    sent_copy: Path


@dataclass(frozen=True, slots=True)
class Submission:
    """One message a session has checked and wants stored."""

    principal: Principal
    mail_from: str
    recipients: list[str]
    raw: bytes
    smtputf8: bool = False  # MAIL came with the SMTPUTF8 parameter (RFC 6531)


def _complete_headers(mailbox: Mailbox, raw: bytes, hostname: str, *, smtputf8: bool) -> bytes:
    # RFC 5321 §4.4 trace field; "ESMTPSA" = ESMTP + TLS + AUTH (RFC 3848 §3), and
    # "UTF8SMTPSA" the same with SMTPUTF8 (RFC 6531 §3.7.3 and §4.3).
    protocol = "UTF8SMTPSA" if smtputf8 else "ESMTPSA"
    return message_cleanup(
        raw,
        sender=mailbox.address,
        received=f"by {hostname} with {protocol}",
        reply_to=mailbox.reply_to,
    )


def submission_accept_many(
    submissions: list[Submission], *, hostname: str
) -> list[Accepted | DomainError]:
    """Blocking: complete the headers, file the Sent copies, queue; one outcome per message.

    The durable work is shared by the batch: one directory fsync per Sent folder and ONE
    database transaction for every message. A message may be refused on its own (mailbox
    suspended since login); any storage failure raises for the whole batch, and then
    nothing of it is left: no rows (one transaction) and no Sent copies (removed).
    """
    ids = {s.principal.mailbox_id for s in submissions}
    mailboxes = Mailbox.objects.select_related("organization", "domain", "relay_server").in_bulk(
        ids
    )
    outcomes: list[Accepted | DomainError] = []
    storing: list[tuple[int, Mailbox, Submission, bytes]] = []
    for index, sub in enumerate(submissions):
        try:
            mailbox = mailbox_sending_check(mailbox=mailboxes.get(sub.principal.mailbox_id))
        except DomainError as refused:  # this message alone: 550 5.7.1
            outcomes.append(refused)
            continue
        outcomes.append(Unavailable("Not stored"))  # 451 4.3.0; replaced below once committed
        raw = _complete_headers(mailbox, sub.raw, hostname, smtputf8=sub.smtputf8)
        storing.append((index, mailbox, sub, raw))
    if not storing:
        return outcomes
    sent = maildir_deliver_many(
        [
            MaildirItem(mailbox.organization_id, mailbox.address, raw, "Sent")
            for _, mailbox, _, raw in storing
        ]
    )
    try:
        messages = message_enqueue_many(
            [
                EnqueueRequest(
                    organization=mailbox.organization,
                    mailbox=mailbox,
                    mail_from=sub.mail_from,
                    recipients=sub.recipients,
                    raw=raw,
                    source=MessageSource.SMTP,
                )
                for _, mailbox, sub, raw in storing
            ]
        )
    except BaseException:
        for path in sent:  # no 250, so no Sent copy either: nothing half-stored
            path.unlink(missing_ok=True)
        raise
    for (index, *_), message, path in zip(storing, messages, sent, strict=True):
        outcomes[index] = Accepted(message.pk, path)
    return outcomes


def submission_accept(
    *, principal: Principal, mail_from: str, recipients: list[str], raw: bytes, hostname: str
) -> Accepted:
    """Blocking, one message: the batch path with a batch of one. All or nothing."""
    (outcome,) = submission_accept_many(
        [Submission(principal, mail_from, recipients, raw)], hostname=hostname
    )
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


class SubmissionHandler:
    def __init__(
        self,
        *,
        hostname: str,
        max_recipients: int = 100,
        guard: LoginLimits | None = None,
        cache: CredentialCache | None = None,
        failure_delay: float = 1.0,
        max_batch: int = 200,
    ) -> None:
        self.hostname = hostname
        self.max_recipients = max_recipients
        # Failed-login limits: in Redis when configured, so every submission and IMAP
        # process counts against the same windows.
        self.guard = guard or login_guard()
        self.gate = LoginGate()  # parallel guesses are checked one after another
        self.cache = cache or CredentialCache()
        self.failure_delay = failure_delay  # slows guessing; costs the attacker, not us
        # Every accepted message goes through one writer: group commit (see ingest.py).
        self.committer: GroupCommitter[Submission, Accepted | DomainError] = GroupCommitter(
            self._store_batch, max_batch=max_batch, name="mailplane-submission-writer"
        )

    def _store_batch(self, batch: list[Submission]) -> list[Accepted | DomainError]:
        return submission_accept_many(batch, hostname=self.hostname)

    async def aclose(self) -> None:
        await self.committer.aclose()

    async def authenticate(
        self,
        server: MailplaneSMTP,
        session: MailplaneSession,
        mechanism: str,
        credentials: LoginPassword,
    ) -> AuthResult:
        login = credentials.login.decode("utf-8", "replace").strip()
        address = login.lower()
        if credentials.password.startswith(KEY_PREFIX.encode()):
            # Never the key itself in a log line or a Redis key: its public prefix.
            prefix = credentials.password[: len(KEY_PREFIX) + 6].decode("ascii", "replace")
            address = f"server-key:{prefix}"
        ip = session.client_ip
        async with self.gate.turn(address=address, ip=ip):
            return await self._authenticate(session, mechanism, credentials, address, ip)

    async def _authenticate(
        self,
        session: MailplaneSession,
        mechanism: str,
        credentials: LoginPassword,
        address: str,
        ip: str,
    ) -> AuthResult:
        attempt = self.guard.attempt(address=address, ip=ip)
        if attempt.refused:
            log.warning("%s auth refused (rate limit) ip=%s user=%s", session.id, ip, address)
            await asyncio.sleep(self.failure_delay)
            # RFC 4954 §6: 454 4.7.0 temporary authentication failure.
            return AuthResult(
                success=False,
                handled=False,
                message="454 4.7.0 Too many failed logins; try again later",
            )
        if attempt.delay:
            # This client has been failing: its next guess waits (never the loop, never
            # another client).
            log.info("%s auth delayed %.1fs ip=%s user=%s", session.id, attempt.delay, ip, address)
            await asyncio.sleep(attempt.delay)
        try:
            password = credentials.password.decode("utf-8")
        except UnicodeDecodeError:
            password = None
        principal: Principal | ServerPrincipal | None = None
        if password is not None and password.startswith(KEY_PREFIX):
            login = credentials.login.decode("utf-8", "replace").strip()
            principal = await blocking(server_login_check, username=login, password=password)
        elif password is not None:
            async with self.gate.slot(ip=ip):
                principal = await blocking(
                    login_check, address=address, password=password, cache=self.cache
                )
        if principal is None:
            self.guard.failed(attempt)
            log.info(
                "%s auth failed mech=%s ip=%s user=%s password=%s",
                session.id,
                mechanism,
                ip,
                address,
                mask(credentials.password),
            )
            await asyncio.sleep(self.failure_delay)
            return AuthResult(
                success=False, handled=False, message="535 5.7.8 Authentication credentials invalid"
            )
        self.guard.succeeded(attempt)
        log.info("%s auth ok mech=%s ip=%s user=%s", session.id, mechanism, ip, address)
        return AuthResult(success=True, auth_data=principal)

    async def handle_MAIL(
        self,
        server: MailplaneSMTP,
        session: MailplaneSession,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        principal = session.auth_data
        if session.authenticated and isinstance(principal, ServerPrincipal):
            # The identity is checked at DATA, with the From header (one query for both).
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            return "250 2.1.0 Sender OK"
        if not session.authenticated or not isinstance(principal, Principal):
            return "530 5.7.0 Authentication required"
        if address.lower() != principal.address:
            # RFC 6409 §6.1: the MSA checks the submitter is authorised to use this sender.
            log.info("%s sender refused %s for %s", session.id, address, principal.address)
            return f"553 5.7.1 Sender <{address}> is not the authenticated mailbox"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self,
        server: MailplaneSMTP,
        session: MailplaneSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        limit = self.max_recipients
        if isinstance(session.auth_data, ServerPrincipal):
            limit = min(limit, MAX_RECIPIENTS)  # a server's messages: the send API's limit
        if len(envelope.rcpt_tos) >= limit:
            # RFC 5321 §4.5.3.1.10: 452 for too many recipients; the client sends the rest
            # in another transaction.
            return "452 4.5.3 Too many recipients"
        local, at, domain = address.rpartition("@")
        if not at or not local or "." not in domain:
            return "553 5.1.3 Recipient address must be a full address (user@domain)"
        try:
            domain_ascii(domain)  # what delivery will ask the DNS for (RFC 5890 A-label)
        except UnicodeError:
            # Refused now rather than bounced later: RFC 6531 §3.3 domains are IDNA names.
            return "553 5.1.2 Recipient domain is not a valid internationalised domain name"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(
        self, server: MailplaneSMTP, session: MailplaneSession, envelope: Envelope
    ) -> str:
        principal = session.auth_data
        raw = envelope.original_content or b""
        froms = from_addresses(headers_of(raw))
        if not froms:
            return "550 5.6.0 Message has no From header field (RFC 5322 section 3.6)"
        if isinstance(principal, ServerPrincipal):
            return await self._server_data(session, envelope, principal, raw, froms)
        assert isinstance(principal, Principal) and envelope.mail_from
        if any(a != principal.address for a in froms):
            # 550 rather than 553: RFC 5321 §4.3.2 lists 550, not 553, after DATA.
            return f"550 5.7.1 From header {', '.join(froms)} is not the authenticated mailbox"
        submission = Submission(
            principal=principal,
            mail_from=envelope.mail_from,
            recipients=list(dict.fromkeys(envelope.rcpt_tos)),
            raw=raw,
            smtputf8=envelope.smtp_utf8,
        )
        try:
            outcome = await self.committer.submit(submission)
        except DomainError as refused:  # this message alone (the committer raises outcomes)
            return refused.smtp_reply()
        except Exception:
            # Temporary: the client keeps the message and retries; nothing was stored.
            log.exception("%s not stored; answering 451", session.id)
            return "451 4.3.0 Message not stored; try again later"
        if isinstance(outcome, DomainError):
            return outcome.smtp_reply()
        accepted = outcome
        log.info(
            "%s queued id=%s from=%s rcpts=%d size=%d",
            session.id,
            accepted.message_id,
            principal.address,
            len(envelope.rcpt_tos),
            len(raw),
        )
        return f"250 2.0.0 OK queued as {accepted.message_id}"

    async def _server_data(
        self,
        session: MailplaneSession,
        envelope: Envelope,
        principal: ServerPrincipal,
        raw: bytes,
        froms: list[str],
    ) -> str:
        if len(froms) != 1:
            # RFC 5322 §3.6.2 allows a list with a Sender field; an identity is one address.
            return "550 5.7.1 From header must hold one address (a sender identity)"
        try:
            sent = await blocking(
                server_submission_accept,
                principal=principal,
                mail_from=envelope.mail_from or "",
                recipients=list(dict.fromkeys(envelope.rcpt_tos)),
                raw=raw,
                hostname=self.hostname,
                smtputf8=envelope.smtp_utf8,
            )
        except DomainError as refused:
            log.info("%s server %s refused: %s", session.id, principal.server_id, refused)
            return refused.smtp_reply()
        except Exception:
            log.exception("%s not stored; answering 451", session.id)
            return "451 4.3.0 Message not stored; try again later"
        log.info(
            "%s %s id=%s server=%s key=%s rcpts=%d size=%d",
            session.id,
            "held" if sent.held else "queued",
            sent.message.pk,
            principal.server_id,
            principal.prefix,
            len(envelope.rcpt_tos),
            len(raw),
        )
        if sent.held:
            # Accepted and durable (RFC 5321 §6.1: the 250 takes responsibility), held for
            # review by the server's content filter: the sender learns it now.
            return f"250 2.0.0 OK held as {sent.message.pk} for review by the content filter"
        return f"250 2.0.0 OK queued as {sent.message.pk}"

    async def handle_exception(self, error: Exception) -> str:
        log.exception("submission failed: %s", type(error).__name__)
        # Temporary: the client keeps the message and retries; nothing was half-stored.
        return "451 4.3.0 Internal error; try again later"
