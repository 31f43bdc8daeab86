from __future__ import annotations

from django.db import models

from mailplane.queue.models import BounceClass, OutboundMessage
from mailplane.tenancy.models import Organization


class StreamKind(models.TextChoices):
    TRANSACTIONAL = "transactional"  # one-to-one mail a user triggered (receipts, resets)
    BROADCAST = "broadcast"  # one-to-many mail (newsletters, announcements)
    # Mail received for the server (inbound/): parsed and posted to its webhooks; it sends
    # nothing, so no send request may name it.
    INBOUND = "inbound"


class ContentFilter(models.TextChoices):
    REJECT = "reject"  # over the threshold: refused at the API with the reasons (shield/)
    # Over the threshold: accepted (durable, 200 / 250) and held in the queue, where
    # delivery never claims it, until an operator releases or cancels it (queue/waiting.py).
    HOLD = "hold"
    OFF = "off"


class CapMode(models.TextChoices):
    """What a server key's mail over its (or its server's) hourly or daily cap gets."""

    HOLD = "hold"  # accepted and queued; delivery holds it until the window allows
    REFUSE = "refuse"  # the send API answers 429 with the time it would be accepted


class Reputation(models.Model):
    """Volume caps and the automatic pause (reputation/), on a server and on a key."""

    # Counted in recipients, per clock hour and day (UTC); null: no cap.
    hourly_cap = models.PositiveIntegerField(null=True, blank=True)
    daily_cap = models.PositiveIntegerField(null=True, blank=True)
    # Paused (reputation/pause.py): sends refused until an operator resumes it.
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_reason = models.CharField(max_length=300, blank=True)
    # The last resume: the rates that paused it are judged again only from then on.
    resumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class EmailServer(Reputation):
    """Seed 004's server: a project or environment boundary for API sending."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="email_servers"
    )
    name = models.CharField(max_length=100)
    color = models.CharField(max_length=7, blank=True)  # "#rrggbb" or ""
    # Null only between the server's insert and its streams' (servers.services).
    default_stream = models.ForeignKey(
        "MessageStream", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    auto_suppress_bounces = models.BooleanField(default=True)
    auto_suppress_complaints = models.BooleanField(default=True)
    # Sandbox: messages are accepted, validated and recorded as delivered, and never sent.
    sandbox = models.BooleanField(default=False)
    # MI Shield, the pre-send content check (shield/): what a score at the threshold does.
    content_filter = models.CharField(
        max_length=10, choices=ContentFilter.choices, default=ContentFilter.REJECT
    )
    content_threshold = models.FloatField(default=10.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="one_server_name")
        ]

    def __str__(self) -> str:
        return self.name


class MessageStream(models.Model):
    """A channel of one server for one kind of mail (Postmark's message streams).

    `stream_id` is what a send request names (`"stream": "outbound"`), as Postmark's
    `MessageStream` does; each server is created with `outbound` (transactional),
    `broadcast` and `inbound` (received mail: inbound/), Postmark's default ids."""

    server = models.ForeignKey(EmailServer, on_delete=models.CASCADE, related_name="streams")
    stream_id = models.SlugField(max_length=50)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=StreamKind.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["server", "stream_id"], name="one_stream_id")
        ]

    def __str__(self) -> str:
        return f"{self.server_id}/{self.stream_id}"


class ServerKeyKind(models.TextChoices):
    FULL = "full"  # send, and read and change the server's settings
    SEND_ONLY = "send_only"  # send, nothing else


class ServerKey(Reputation):
    """A key scoped to one server. As account keys: only a digest is kept, shown once."""

    server = models.ForeignKey(EmailServer, on_delete=models.CASCADE, related_name="keys")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=ServerKeyKind.choices)
    prefix = models.CharField(max_length=16, db_index=True)
    key_digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    cap_mode = models.CharField(max_length=10, choices=CapMode.choices, default=CapMode.HOLD)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class ServerMessage(models.Model):
    """What the send API knows of a queued message beyond the queue's row: its server,
    stream, tags and metadata. One row per OutboundMessage sent through a server, written
    in the enqueue's transaction; the queue itself stays unaware of servers."""

    message = models.OneToOneField(
        OutboundMessage, on_delete=models.CASCADE, primary_key=True, related_name="server_link"
    )
    server = models.ForeignKey(EmailServer, on_delete=models.CASCADE, related_name="messages")
    stream = models.ForeignKey(MessageStream, on_delete=models.CASCADE, related_name="messages")
    # The key it was sent with (None over SMTP, or once the key is gone): IP pools can be
    # assigned per key (pools/).
    server_key = models.ForeignKey(
        ServerKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    tags = models.JSONField(default=list)
    metadata = models.JSONField(default=dict)
    sandbox = models.BooleanField(default=False)
    # A broadcast message's List-Unsubscribe token, as a digest (crypto.digest): the
    # token in the message's link finds this row, and so its server, stream and (one)
    # recipient (sending/unsubscribe.py). None on other streams.
    unsubscribe_digest = models.CharField(max_length=64, null=True, blank=True, unique=True)
    # Why the content filter held it (`content_filter: hold`): {"score": 12.5, "symbols":
    # [{"name", "score", "description"}]}; None for a message it did not hold.
    content_verdict = models.JSONField(null=True, blank=True)

    def __str__(self) -> str:
        return f"message {self.message_id} on server {self.server_id}"


class IdempotencyStatus(models.TextChoices):
    PROCESSING = "processing"
    DONE = "done"


class IdempotencyKey(models.Model):
    """A client's `Idempotency-Key` on one server and the answer it got (sending/
    idempotency.py). Kept 24 hours, as Resend, useSend and Hyvor Relay keep theirs."""

    server = models.ForeignKey(
        EmailServer, on_delete=models.CASCADE, related_name="idempotency_keys"
    )
    key = models.CharField(max_length=256)
    request_digest = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=IdempotencyStatus.choices)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["server", "key"], name="one_idempotency_key")
        ]

    def __str__(self) -> str:
        return f"{self.key} on server {self.server_id} ({self.status})"


class MessageTag(models.Model):
    """One tag of a server message, as a row so the logs can search by tag with an index
    (ServerMessage.tags keeps them in order for reading; SQLite has no JSON containment)."""

    message = models.ForeignKey(ServerMessage, on_delete=models.CASCADE, related_name="tag_rows")
    server = models.ForeignKey(EmailServer, on_delete=models.CASCADE, related_name="+")
    tag = models.CharField(max_length=100)

    class Meta:
        indexes = [models.Index(fields=["server", "tag"], name="server_tag")]

    def __str__(self) -> str:
        return self.tag


class MessageMetadata(models.Model):
    """One metadata pair of a server message, as a row: the logs' `metadata_key` /
    `metadata_value` search is an index lookup on (server, key, value) in both databases
    (ServerMessage.metadata keeps the dict for reading; a JSON containment index would be
    PostgreSQL's alone)."""

    message = models.ForeignKey(
        ServerMessage, on_delete=models.CASCADE, related_name="metadata_rows"
    )
    server = models.ForeignKey(EmailServer, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=100)
    value = models.CharField(max_length=1000)

    class Meta:
        indexes = [
            models.Index(fields=["server", "key", "value"], name="server_metadata"),
        ]

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


class IdentityStatus(models.TextChoices):
    PENDING = "pending"  # the confirmation link was mailed; not used to send yet
    VERIFIED = "verified"


class SenderIdentity(models.Model):
    """A single address an account may send from (Postmark's Sender Signatures), verified
    by a link mailed to it. A verified domain of the account covers every address of the
    domain without one (sending/services.py).

    `server` null: every server of the account may send from it (Postmark: signatures
    belong to the account); set: only that server (seed 004: "each server has its own
    sender identities"), and it goes with the server. Only the token's digest is kept."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="sender_identities"
    )
    server = models.ForeignKey(
        EmailServer,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="sender_identities",
    )
    address = models.CharField(max_length=320)  # lower-case
    name = models.CharField(max_length=100, blank=True)  # display name for the From
    status = models.CharField(
        max_length=10, choices=IdentityStatus.choices, default=IdentityStatus.PENDING
    )
    token_digest = models.CharField(max_length=64, blank=True, db_index=True)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    confirmation_sent_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "address"], name="one_identity")
        ]

    def __str__(self) -> str:
        return f"{self.address} ({self.status})"


class BounceRule(models.Model):
    """An account's override of the bounce class for replies to this server's mail
    (delivery/bounce_classes.py): the oldest matching rule wins over the built-in table.

    A substring and a status prefix rather than a regular expression: a crafted pattern
    would cost the delivery worker exponential time on every reply (no timeout in `re`).
    """

    server = models.ForeignKey(EmailServer, on_delete=models.CASCADE, related_name="bounce_rules")
    contains = models.CharField(max_length=200, blank=True)  # case-insensitive
    status = models.CharField(max_length=11, blank=True)  # "550", "5.7", "5.7.1"
    bounce_class = models.CharField(max_length=12, choices=BounceClass.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.status or '*'} {self.contains!r} -> {self.bounce_class}"
