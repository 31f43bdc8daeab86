from __future__ import annotations

from django.db import models

from mailplane.queue.models import OutboundMessage
from mailplane.servers.models import EmailServer
from mailplane.tenancy.models import Organization


class WebhookEventType(models.TextChoices):
    """What an endpoint can subscribe to (issue 12). The queue's `failed` (could not be
    attempted) is `rejected` here, the name senders know from Postmark and Resend."""

    QUEUED = "queued"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    REJECTED = "rejected"
    SUPPRESSED = "suppressed"
    OPENED = "opened"
    CLICKED = "clicked"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    INBOUND = "inbound"
    # Never to be sent: a scheduled message cancelled, or queued mail an operator cancelled.
    CANCELLED = "cancelled"
    # Accepted and held by the server's content filter (MI Shield) until an operator
    # releases it (then `delivered`, or a failure) or cancels it (`cancelled`).
    HELD = "held"


class WebhookEndpoint(models.Model):
    """A URL of one email server's that receives the events it subscribed to."""

    server = models.ForeignKey(EmailServer, on_delete=models.CASCADE, related_name="webhooks")
    url = models.CharField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list)  # WebhookEventType values
    enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    # `whsec_` + base64, encrypted at rest (core/crypto.py); the previous one stays valid
    # until previous_secret_expires_at, and both sign meanwhile.
    secret = models.TextField()
    previous_secret = models.TextField(blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    max_concurrency = models.PositiveSmallIntegerField(default=5)
    # The first failure since the last success: a long run of failures disables it.
    failing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"webhook {self.pk} of server {self.server_id}"


class WebhookCursor(models.Model):
    """The consumer's position in the event stream: the seq of the last event turned into
    deliveries. One row, moved in the transaction that writes those deliveries."""

    name = models.CharField(max_length=50, unique=True)
    seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} at {self.seq}"


class DeliveryState(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # the schedule ran out, or the endpoint went away: given up


class WebhookDelivery(models.Model):
    """One event for one endpoint (the outbox row): the exact body signed and sent, and
    where its retries stand. `webhook_id` stays the same across retries and replays, so a
    receiver drops duplicates by it (Standard Webhooks)."""

    webhook_id = models.CharField(max_length=40, unique=True)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    # The ordering key: a message's later event waits for its earlier ones per endpoint.
    message = models.ForeignKey(
        OutboundMessage, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    event_seq = models.BigIntegerField(null=True, blank=True)  # the source DeliveryEvent's
    type = models.CharField(max_length=20, choices=WebhookEventType.choices)
    body = models.TextField()  # the JSON payload, exactly as signed
    event_at = models.DateTimeField(db_index=True)
    state = models.CharField(
        max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    claimed_by = models.CharField(max_length=100, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="webhook_due"),
            # The claim's "no earlier pending event of this message" test: all equality
            # but the seq, so neither database scans the endpoint's whole history.
            models.Index(
                fields=["message", "endpoint", "state", "event_seq"], name="webhook_message_order"
            ),
            # Leases (a claim's `claimed_until`, cleared when its attempt is recorded): at
            # most every endpoint's max_concurrency rows, however long the backlog, so
            # counting what is in flight reads these and not every pending row.
            models.Index(
                fields=["endpoint"],
                name="webhook_leased",
                condition=models.Q(state="pending", claimed_until__isnull=False),
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_seq"], name="one_delivery_per_event")
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.webhook_id} ({self.state})"


class WebhookAttempt(models.Model):
    """One POST of a delivery: what the receiver answered, and how fast."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_rows"
    )
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="attempts")
    started_at = models.DateTimeField(db_index=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    error = models.CharField(max_length=500, blank=True)  # no answer: why
    response_excerpt = models.TextField(blank=True)  # the first bytes of the body

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"attempt of {self.delivery_id}: {self.status_code or self.error}"


class WebhookNotice(models.Model):
    """What the account must be told about its endpoints (one disabled, and why)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="notices")
    kind = models.CharField(max_length=30)
    message = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.kind} on webhook {self.endpoint_id}"
