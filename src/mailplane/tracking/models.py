from __future__ import annotations

from django.db import models

from mailplane.queue.models import OutboundMessage
from mailplane.servers.models import EmailServer, MessageStream


class ServerTracking(models.Model):
    """A server's tracking domain and its open/click toggles (off until asked for).

    The domain is a CNAME the customer publishes to the platform's tracking host; nothing
    is rewritten until it is verified, so a link never points at a name that does not
    reach us."""

    server = models.OneToOneField(
        EmailServer, on_delete=models.CASCADE, primary_key=True, related_name="tracking"
    )
    domain = models.CharField(max_length=253, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    check_detail = models.CharField(max_length=500, blank=True)
    track_opens = models.BooleanField(default=False)
    track_links = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"tracking of server {self.server_id} ({self.domain or 'no domain'})"


class StreamTracking(models.Model):
    """A stream's override of its server's toggles (None: as the server)."""

    stream = models.OneToOneField(
        MessageStream, on_delete=models.CASCADE, primary_key=True, related_name="tracking"
    )
    track_opens = models.BooleanField(null=True, blank=True)
    track_links = models.BooleanField(null=True, blank=True)

    def __str__(self) -> str:
        return f"tracking of stream {self.stream_id}"


class TrackedMessage(models.Model):
    """What the tokens of one message point at: its random key (the tokens' first 16
    bytes) and the original URLs by link index. A token is looked up by key, so it can
    name only this message, and redirects only to a URL stored here."""

    message = models.OneToOneField(
        OutboundMessage, on_delete=models.CASCADE, primary_key=True, related_name="tracking"
    )
    key = models.CharField(max_length=22, unique=True)  # base64url of 16 random bytes
    links = models.JSONField(default=list)
    opens = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"tracking of message {self.message_id}"
