from __future__ import annotations

from django.db import models

from mailplane.domains.models import Domain
from mailplane.mailboxes.models import Mailbox
from mailplane.relays.models import RelayServer
from mailplane.tenancy.models import Organization


class MessageSource(models.TextChoices):
    SMTP = "smtp"  # submitted by a mailbox over SMTP
    API = "api"  # sent through the send API
    SYSTEM = "system"  # generated here (DSNs)


class OutboundMessage(models.Model):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="outbound_messages"
    )
    mailbox = models.ForeignKey(
        Mailbox, on_delete=models.SET_NULL, null=True, blank=True, related_name="outbound_messages"
    )
    relay_server = models.ForeignKey(
        RelayServer, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The sender's domain: its DKIM key signs the message.
    domain = models.ForeignKey(
        Domain, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    source = models.CharField(max_length=10, choices=MessageSource.choices)
    mail_from = models.CharField(max_length=320, blank=True)  # envelope sender; "" = null sender
    message_id = models.CharField(max_length=998, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"message {self.pk} from {self.mail_from or '<>'}"


class MessageBody(models.Model):
    """Raw RFC 5322 bytes, apart from the queue rows so that claims scan narrow rows."""

    message = models.OneToOneField(
        OutboundMessage, on_delete=models.CASCADE, primary_key=True, related_name="body"
    )
    raw = models.BinaryField()

    def __str__(self) -> str:
        return f"body of message {self.message_id}"


class RecipientStatus(models.TextChoices):
    QUEUED = "queued"
    DEFERRED = "deferred"  # temporary failure; retried at next_attempt_at
    DELIVERED = "delivered"
    BOUNCED = "bounced"  # permanent failure (5xx or expired): DSN sent
    FAILED = "failed"  # could not be attempted (no route, config error)
    SUPPRESSED = "suppressed"  # recipient on the suppression list
    HELD = "held"
    # `send_at` (the send API): waits for next_attempt_at like a deferred row, untried.
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"  # cancelled before it was sent (scheduled, or by an operator)


class WaitReason(models.TextChoices):
    """Why a waiting recipient is not sent yet (queue/waiting.py shows it, with until when).

    Stored on the row (`QueuedRecipient.wait_reason`) where only the step that held it
    knows why: delivery's caps, warm-up and pool checks, a rate-limit reply. The rest is
    read from the row's state (scheduled, held, in a worker's hands) or from its server's
    and key's pause, as they are now."""

    SCHEDULED = "scheduled"  # a send time (`send_at`) ahead
    HELD = "held"  # held by the server's content filter (MI Shield) until released
    SENDING = "sending"  # a delivery worker holds it under a live lease
    PAUSED = "paused"  # its server or key is paused (reputation/pause.py)
    CAP = "cap"  # its server's or key's hourly or daily volume cap is full
    WARMUP = "warmup"  # its IP pool's warm-up caps are full
    POOL = "pool"  # its IP pool has no enabled address
    THROTTLED = "throttled"  # the destination answered with a rate limit (421 4.7.28 …)
    RETRY = "retry"  # backing off after a temporary failure
    DUE = "due"  # due now: waits for a delivery worker
    # Stored only: an operator released it past the cap and pause holds (queue_release).
    RELEASED = "released"


class Priority(models.IntegerChoices):
    """The claim's lanes (delivery/claims.py): interactive rows are claimed before bulk
    ones, and bulk rows never fill the whole window, so a broadcast backlog cannot delay
    one-to-one mail (issue 11; docs/architecture.md, "Two lanes")."""

    INTERACTIVE = 0  # SMTP submissions, transactional streams, DSNs
    BULK = 1  # broadcast streams


class QueuedRecipient(models.Model):
    """One delivery unit: a message to one recipient."""

    message = models.ForeignKey(
        OutboundMessage, on_delete=models.CASCADE, related_name="recipients"
    )
    rcpt_to = models.CharField(max_length=320)
    rcpt_domain = models.CharField(max_length=253)  # batching key: one connection per domain
    status = models.CharField(
        max_length=10, choices=RecipientStatus.choices, default=RecipientStatus.QUEUED
    )
    attempts = models.PositiveIntegerField(default=0)
    priority = models.PositiveSmallIntegerField(
        choices=Priority.choices, default=Priority.INTERACTIVE
    )
    next_attempt_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    claimed_by = models.CharField(max_length=100, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_reply = models.TextField(blank=True)
    # What held it, where its state alone does not say (WaitReason; "" for none).
    wait_reason = models.CharField(max_length=10, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="rcpt_due"),
            # The claim's interactive lane: due rows of one priority without walking a
            # bulk backlog's index entries first.
            models.Index(fields=["priority", "status", "next_attempt_at"], name="rcpt_due_lane"),
            models.Index(fields=["rcpt_domain", "status"], name="rcpt_domain_status"),
        ]

    def __str__(self) -> str:
        return f"{self.rcpt_to} ({self.status})"


class EventType(models.TextChoices):
    QUEUED = "queued"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    # Reported after delivery by the recipient's mailbox provider (through our relay's
    # provider): the row stays delivered, the address is suppressed.
    COMPLAINED = "complained"  # marked as spam
    UNSUBSCRIBED = "unsubscribed"  # asked for no more mail (not a spam report)
    # Engagement, seen by the open pixel and click redirects (tracking/): the row keeps
    # its status; `detail` says first, repeat or machine (queue/transitions.py).
    OPENED = "opened"
    CLICKED = "clicked"
    SCHEDULED = "scheduled"  # held until a send time (`send_at`), or moved to another
    CANCELLED = "cancelled"  # cancelled before it was sent (scheduled, or by an operator)
    # An operator released a held recipient or had a deferred one retried now (detail: which).
    RELEASED = "released"
    # The server's content filter held it for review (`content_filter: hold`; detail: the
    # symbols): it waits, never claimed, until released or cancelled.
    HELD = "held"


class BounceClass(models.TextChoices):
    """What kind of failure a deferral or bounce was (delivery/bounce_classes.py)."""

    HARD = "hard"  # the address or domain does not exist: suppressed
    SOFT = "soft"  # temporary, none of the below
    MAILBOX_FULL = "mailbox_full"
    RATE_LIMIT = "rate_limit"
    BLOCK = "block"  # sending address or domain on a block list, reputation
    SPAM = "spam"  # content refused
    POLICY = "policy"  # authentication, relaying, size, local policy


class DeliveryEvent(models.Model):
    """One transition of a message or recipient, in the outbox (queue/transitions.py).

    `seq` numbers every event of this database without gaps, in commit order: a consumer
    that has read up to N reads the rest with seq > N (queue/events.py) and can neither
    miss an event nor see one twice."""

    seq = models.BigIntegerField(unique=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey(OutboundMessage, on_delete=models.CASCADE, related_name="events")
    recipient = models.ForeignKey(
        QueuedRecipient, on_delete=models.CASCADE, null=True, blank=True, related_name="events"
    )
    type = models.CharField(max_length=12, choices=EventType.choices)
    remote_reply = models.TextField(blank=True)
    remote_host = models.CharField(max_length=253, blank=True)
    detail = models.TextField(blank=True)
    # Deferrals and bounces: what kind of failure ("" for every other event).
    bounce_class = models.CharField(max_length=12, choices=BounceClass.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["seq"]
        indexes = [
            # The automatic pause's aggregate (reputation/pause.py) reads a window of
            # created_at for a few types: one range scan of this index.
            models.Index(fields=["created_at", "type"], name="event_created_type"),
        ]

    def __str__(self) -> str:
        return f"{self.type} for message {self.message_id}"


class EventSequence(models.Model):
    """The last `DeliveryEvent.seq` handed out: one row, taken under its row lock by every
    transaction that appends events, so numbers are gap-free (a rollback gives them back)
    and follow commit order (a database sequence has neither property)."""

    last = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"event sequence at {self.last}"


class SuppressionReason(models.TextChoices):
    HARD_BOUNCE = "hard_bounce"  # a 5xx reply or an inbound DSN with Action: failed
    COMPLAINT = "complaint"  # the recipient marked a message as spam
    UNSUBSCRIBED = "unsubscribed"  # the recipient unsubscribed (provider's list-unsubscribe)
    MANUAL = "manual"


class Suppression(models.Model):
    """An address this organization no longer sends to (RFC 3463 5.x.x bounces and the like).

    Per organization: one tenant's hard bounce says nothing about another's list hygiene.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="suppressions"
    )
    address = models.CharField(max_length=320)  # lower-case
    reason = models.CharField(max_length=20, choices=SuppressionReason.choices)
    detail = models.TextField(blank=True)  # the remote reply that caused it
    message = models.ForeignKey(
        OutboundMessage, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The one stream of an email server it holds for (Postmark: suppressions are per
    # stream); null: the whole account (mailbox mail, and every stream). Named by string,
    # so the queue imports nothing of servers (servers imports the queue); the stream's
    # server deletes its suppressions with it.
    stream = models.ForeignKey(
        "servers.MessageStream",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="suppressions",
    )  # None: every message of the organization
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "address"],
                condition=models.Q(stream__isnull=True),
                name="one_suppression",
            ),
            models.UniqueConstraint(
                fields=["organization", "address", "stream"],
                condition=models.Q(stream__isnull=False),
                name="one_stream_suppression",
            ),
        ]
        indexes = [models.Index(fields=["stream", "created_at"], name="stream_suppressions")]

    def __str__(self) -> str:
        return f"{self.address} suppressed ({self.reason})"
