"""The checklist each claimed recipient goes through (Postal's outgoing processor shape).

prepare():  hold_if_suppressed → fail_if_no_relay → deliver_locally_if_hosted (DKIM:
            what signing needs; the worker signs on the event loop)
send():     the relay server's provider (worker.py)
record():   one terminal or retry decision per recipient, written through the queue's
            transitions (queue/transitions.py: row, event, suppression), then for
            failures a DSN to the sender (dsn.py).
Each step either returns an Outcome (stop) or None (continue).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from mailplane.delivery.bounce_classes import (
    BounceRule,
    bounce_class,
    bounce_rules_of,
    retried,
    suppresses,
)
from mailplane.delivery.bounces import verp_address
from mailplane.delivery.dsn import FailedRecipient, dsn_send
from mailplane.delivery.providers.base import Envelope
from mailplane.delivery.results import SendResult, Status
from mailplane.delivery.retry import retry_delay
from mailplane.delivery.signing import SignRequest
from mailplane.mailboxes.models import Mailbox, MailboxStatus
from mailplane.pools.selectors import PoolChoice, Source, pool_choices
from mailplane.pools.warmup import warmup_admit, warmup_bounces_record
from mailplane.queue.models import (
    BounceClass,
    EventType,
    MessageBody,
    OutboundMessage,
    QueuedRecipient,
    RecipientStatus,
    Suppression,
    SuppressionReason,
    WaitReason,
)
from mailplane.queue.transitions import Transition, transitions_apply
from mailplane.relays.models import RelayStatus
from mailplane.reputation.caps import caps_admit, caps_release
from mailplane.servers.selectors import ServerLink, server_links
from mailplane.storage.maildir import maildir_deliver

log = logging.getLogger("mailplane.delivery")


@dataclass(slots=True)
class Outcome:
    row: QueuedRecipient
    result: SendResult
    kind: EventType | None = None  # SUPPRESSED / FAILED override; else from result.status
    # Held without an attempt until then (a warm-up or volume cap, a pause), not a backoff.
    retry_at: datetime | None = None
    source: Source | None = None  # the pool address it was sent from
    # Why it waits, when a step here held it (the queue view shows it: queue/waiting.py).
    hold: WaitReason | None = None


@dataclass(frozen=True, slots=True)
class SignSpec:
    """What signing a message needs, detached from the ORM (signing runs on the event loop,
    off the database thread)."""

    domain: str
    selector: str
    private_pem: str


@dataclass(slots=True)
class Job:
    row: QueuedRecipient
    envelope: Envelope
    # What DKIM-signing the envelope needs, until the worker has signed it (then None).
    sign: SignSpec | None = None
    # The message's IP pool address (pools/), or None: the relay's own source, if any.
    source: Source | None = None


@dataclass(slots=True)
class BatchContext:
    """What the steps need, loaded once per batch (no query per recipient)."""

    bodies: dict[int, bytes]
    # (organization, address, stream or None for the whole account)
    suppressed: set[tuple[int, str, int | None]]
    local: dict[str, Mailbox]
    streams: dict[int, int | None]  # message -> its server stream (None: no server)
    pools: dict[int, PoolChoice]  # by message id, for messages with an IP pool
    links: dict[int, ServerLink]  # by message id, for messages sent through a server


def batch_context_load(rows: Sequence[QueuedRecipient]) -> BatchContext:
    message_ids = {r.message_id for r in rows}
    bodies = {
        b.message_id: bytes(b.raw) for b in MessageBody.objects.filter(message_id__in=message_ids)
    }
    addresses = {r.rcpt_to.lower() for r in rows}
    suppressed: set[tuple[int, str, int | None]] = set(
        Suppression.objects.filter(
            organization_id__in={r.message.organization_id for r in rows}, address__in=addresses
        ).values_list("organization_id", "address", "stream_id")
    )
    # Read once: stream suppressions, pools and caps all need the messages' server links.
    links = server_links(message_ids)
    # A stream's suppression holds for that stream only (queue/transitions.py).
    streams: dict[int, int | None] = {}
    if suppressed:
        streams = {m: (links[m].stream_id if m in links else None) for m in message_ids}
    local = {
        m.address: m
        for m in Mailbox.objects.filter(address__in=addresses, status=MailboxStatus.ACTIVE)
    }
    pools = pool_choices(
        list({(r.message_id, r.message.organization_id) for r in rows}), links=links
    )
    return BatchContext(
        bodies=bodies,
        suppressed=suppressed,
        local=local,
        streams=streams,
        pools=pools,
        links=links,
    )


# --- the checklist -------------------------------------------------------------------


def hold_if_suppressed(row: QueuedRecipient, ctx: BatchContext) -> Outcome | None:
    org, address = row.message.organization_id, row.rcpt_to.lower()
    stream = ctx.streams.get(row.message_id)
    if (org, address, None) in ctx.suppressed or (
        stream is not None and (org, address, stream) in ctx.suppressed
    ):
        return Outcome(
            row,
            SendResult.permanent("550 5.7.1 recipient is on the suppression list"),
            EventType.SUPPRESSED,
        )
    return None


def deliver_locally_if_hosted(row: QueuedRecipient, ctx: BatchContext) -> Outcome | None:
    """A hosted mailbox gets the message straight into its Maildir: no DNS, no SMTP hop."""
    mailbox = ctx.local.get(row.rcpt_to.lower())
    if mailbox is None:
        return None
    # RFC 5321 §4.4: the final delivery adds Return-Path with the envelope sender.
    trace = f"Return-Path: <{row.message.mail_from}>\r\nDelivered-To: {mailbox.address}\r\n"
    maildir_deliver(
        organization_id=mailbox.organization_id,
        address=mailbox.address,
        raw=trace.encode() + ctx.bodies[row.message_id],
    )
    return Outcome(row, SendResult.delivered("250 2.0.0 delivered to local mailbox", "local"))


def fail_if_no_relay(row: QueuedRecipient, ctx: BatchContext) -> Outcome | None:
    relay = row.message.relay_server
    if row.rcpt_to.lower() in ctx.local:
        return None  # local delivery needs no relay
    if relay is None or relay.status != RelayStatus.ACTIVE:
        return Outcome(
            row,
            SendResult.permanent("550 5.3.5 no active relay server for this message"),
            EventType.FAILED,
        )
    return None


def defer_if_the_pool_has_no_address(row: QueuedRecipient, ctx: BatchContext) -> Outcome | None:
    """A message whose pool has no enabled address waits (and the operator sees why) rather
    than leaving from an address that is not its pool's: a dedicated key's reputation
    must not be spent elsewhere, nor another's on it."""
    choice = ctx.pools.get(row.message_id)
    if choice is None or choice.sources:
        return None
    return Outcome(
        row,
        SendResult.temporary(f"451 4.3.2 IP pool {choice.pool} has no enabled address", "local"),
        hold=WaitReason.POOL,
    )


def sign_spec(message: OutboundMessage) -> SignSpec | None:
    domain = message.domain
    if domain is None or not domain.dkim_private_key or not domain.dkim_selector:
        return None
    return SignSpec(domain.name, domain.dkim_selector, domain.dkim_private_key)


def sign_requests(jobs: Sequence[Job]) -> dict[int, SignRequest]:
    """What still needs signing in `jobs`, once per message (no ORM access)."""
    todo: dict[int, SignRequest] = {}
    for job in jobs:
        spec = job.sign
        if spec is not None and job.row.message_id not in todo:
            todo[job.row.message_id] = (
                job.envelope.data,
                spec.domain,
                spec.selector,
                spec.private_pem,
            )
    return todo


def jobs_signed(jobs: Sequence[Job], signed: dict[int, bytes]) -> None:
    """Put the signed bytes (by message id) into the jobs' envelopes."""
    for job in jobs:
        if job.sign is not None:
            job.envelope = replace(job.envelope, data=signed[job.row.message_id])
            job.sign = None


def return_path(row: QueuedRecipient) -> str:
    """VERP on the domain's bounce host; the null sender stays null (RFC 5321 §4.5.5)."""
    message = row.message
    if not message.mail_from or message.domain is None:
        return message.mail_from
    return verp_address(recipient_id=row.pk, return_path_host=message.domain.return_path_host)


STEPS: tuple[Callable[[QueuedRecipient, BatchContext], Outcome | None], ...] = (
    hold_if_suppressed,
    fail_if_no_relay,
    deliver_locally_if_hosted,
    defer_if_the_pool_has_no_address,
)


def batch_prepare(
    rows: Sequence[QueuedRecipient], *, now: datetime | None = None
) -> tuple[list[Outcome], list[Job]]:
    """Run the checklist up to sending: outcomes decided here, and envelopes to send.

    DKIM is left to the caller (sign_requests, jobs_signed): the worker signs on the event
    loop, off its single database thread."""
    if not rows:
        return [], []
    now = now or timezone.now()
    ctx = batch_context_load(rows)
    done: list[Outcome] = []
    jobs: list[Job] = []
    for row in rows:
        if row.message_id not in ctx.bodies:
            done.append(
                Outcome(
                    row, SendResult.permanent("550 5.3.0 message body missing"), EventType.FAILED
                )
            )
            continue
        for step in STEPS:
            outcome = step(row, ctx)
            if outcome is not None:
                done.append(outcome)
                break
        else:
            envelope = Envelope(
                recipient_id=row.pk,
                mail_from=return_path(row),
                rcpt_to=row.rcpt_to,
                rcpt_domain=row.rcpt_domain,
                data=ctx.bodies[row.message_id],
            )
            choice = ctx.pools.get(row.message_id)
            source = choice.source_for(row.message_id) if choice is not None else None
            jobs.append(Job(row, envelope, sign_spec(row.message), source))
    with transaction.atomic():  # caps and warm-up reserve together, or neither
        jobs, charged = _within_volume_caps(jobs, ctx, done, now=now)
        admitted = _within_warmup_caps(jobs, ctx, done, now=now)
        sent = {job.row.pk for job in admitted}
        caps_release([c for pk, c in charged.items() if pk not in sent], now=now)
    return done, admitted


def _within_volume_caps(
    jobs: list[Job], ctx: BatchContext, done: list[Outcome], *, now: datetime
) -> tuple[list[Job], dict[int, list[str]]]:
    """The jobs their servers' and keys' volume caps admit (hold mode) and whose server
    and key are not paused; the others wait, unattempted (reputation/caps.py)."""
    if not jobs:
        return jobs, {}
    admission = caps_admit([job.row for job in jobs], now=now, links=ctx.links)
    if not admission.held:
        return jobs, admission.charged
    admitted = []
    for job in jobs:
        held = admission.held.get(job.row.pk)
        if held is None:
            admitted.append(job)
            continue
        reply, retry = held
        hold = WaitReason.PAUSED if job.row.pk in admission.paused else WaitReason.CAP
        done.append(
            Outcome(job.row, SendResult.temporary(reply, "local"), retry_at=retry, hold=hold)
        )
    return admitted, admission.charged


def _within_warmup_caps(
    jobs: list[Job], ctx: BatchContext, done: list[Outcome], *, now: datetime
) -> list[Job]:
    """The jobs the pools' warm-up caps admit (each on the address it may use); the others
    wait, unattempted, until their pool has room (pools/warmup.py)."""
    pooled = [
        (i, ctx.pools[job.row.message_id], job.source)
        for i, job in enumerate(jobs)
        if job.source is not None
    ]
    if not pooled:
        return jobs
    admission = warmup_admit(pooled, now=now)
    admitted = []
    for i, job in enumerate(jobs):
        if i in admission.held:
            pool, retry = admission.held[i]
            reply = (
                f"451 4.7.0 warm-up: IP pool {pool} is at its caps until {retry:%Y-%m-%d %H:%M} UTC"
            )
            done.append(
                Outcome(
                    job.row,
                    SendResult.temporary(reply, "local"),
                    retry_at=retry,
                    hold=WaitReason.WARMUP,
                )
            )
            continue
        if i in admission.sources:
            job.source = admission.sources[i]
        admitted.append(job)
    return admitted


# --- recording ------------------------------------------------------------------------


def _event_kind(outcome: Outcome, result: SendResult, *, expired: bool) -> EventType:
    if outcome.kind is not None:
        return outcome.kind
    if result.status is Status.DELIVERED:
        return EventType.DELIVERED
    if result.status is Status.PERMANENT or expired:
        return EventType.BOUNCED
    return EventType.DEFERRED


# The row status each recorded event leaves.
_STATUS = {
    EventType.DELIVERED: RecipientStatus.DELIVERED,
    EventType.DEFERRED: RecipientStatus.DEFERRED,
    EventType.BOUNCED: RecipientStatus.BOUNCED,
    EventType.FAILED: RecipientStatus.FAILED,
    EventType.SUPPRESSED: RecipientStatus.SUPPRESSED,
}


def outcome_transition(
    outcome: Outcome,
    *,
    now: datetime,
    rng: Callable[[], float],
    rules: Sequence[BounceRule] = (),
) -> tuple[Transition, SendResult]:
    """The queue transition an attempt's outcome makes: retry time and expiry for
    temporary failures (and 5xx rate limits), a bounce class for every failure, a
    suppression for hard bounces only (delivery/bounce_classes.py)."""
    row, result = outcome.row, outcome.result
    if outcome.retry_at is not None:  # held before any attempt: no backoff, no class
        return (
            Transition(
                row=row,
                event=EventType.DEFERRED,
                status=RecipientStatus.DEFERRED,
                reply=result.reply,
                remote_host=result.remote_host,
                detail="held, not attempted",
                attempts=row.attempts,
                next_attempt_at=outcome.retry_at,
                wait_reason=outcome.hold or WaitReason.RETRY,
            ),
            result,
        )
    attempted = outcome.kind not in (EventType.SUPPRESSED, EventType.FAILED)
    attempts = row.attempts + (1 if attempted else 0)
    klass = bounce_class(result, rules) if attempted else None
    if retried(result, klass):  # a 5xx that is really a rate limit: later, not a bounce
        result = SendResult(Status.TEMPORARY, result.reply, result.remote_host, result.code)
    expired = False
    next_attempt: datetime | None = None
    if result.status is Status.TEMPORARY:
        next_attempt = now + retry_delay(attempts=attempts, rng=rng)
        expired = next_attempt >= row.expires_at
        if expired:
            result = SendResult(
                Status.TEMPORARY,
                f"{result.reply} (gave up: retry deadline reached)".strip(),
                result.remote_host,
                result.code,
            )
    kind = _event_kind(outcome, result, expired=expired)
    wait = ""
    if kind is EventType.DEFERRED:
        wait = outcome.hold or (
            WaitReason.THROTTLED if klass == BounceClass.RATE_LIMIT else WaitReason.RETRY
        )
    hard = kind is EventType.BOUNCED and result.status is Status.PERMANENT and suppresses(klass)
    transition = Transition(
        row=row,
        event=kind,
        status=_STATUS[kind],
        reply=result.reply,
        remote_host=result.remote_host,
        detail=f"attempt {attempts}" if attempted else "",
        attempts=attempts,
        next_attempt_at=next_attempt,
        suppress=SuppressionReason.HARD_BOUNCE if hard else None,
        bounce_class=(klass or "") if kind in (EventType.BOUNCED, EventType.DEFERRED) else "",
        wait_reason=wait,
    )
    return transition, result


def outcomes_record(
    outcomes: Sequence[Outcome], *, worker_id: str, now: datetime, rng: Callable[[], float]
) -> None:
    """Record every outcome through the queue's transitions (row, event, suppression in
    one transaction), then send DSNs for the failures."""
    rules = bounce_rules_of(
        o.row.message_id for o in outcomes if o.result.status is not Status.DELIVERED
    )
    decided = [
        outcome_transition(o, now=now, rng=rng, rules=rules.get(o.row.message_id, ()))
        for o in outcomes
    ]
    results = {t.row.pk: result for t, result in decided}
    applied = transitions_apply([t for t, _ in decided], now=now, claimed_by=worker_id)
    sources = {o.row.pk: o.source for o in outcomes if o.source is not None}
    bounced: Counter[str] = Counter(
        source.address
        for t in applied
        if t.event is EventType.BOUNCED and (source := sources.get(t.row.pk)) is not None
    )
    warmup_bounces_record(dict(bounced), now=now)
    failures: dict[int, list[tuple[QueuedRecipient, SendResult]]] = defaultdict(list)
    for t in applied:
        if t.event in (EventType.BOUNCED, EventType.FAILED):
            failures[t.row.message_id].append((t.row, results[t.row.pk]))
    for rows_results in failures.values():
        dsn_send(
            message=rows_results[0][0].message,
            failed=[FailedRecipient(r.rcpt_to, res) for r, res in rows_results],
            now=now,
        )
