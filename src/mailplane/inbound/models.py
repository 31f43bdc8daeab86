from __future__ import annotations

from django.db import models

from mailplane.servers.models import EmailServer, MessageStream
from mailplane.tenancy.models import Organization


class ServerInbound(models.Model):
    """Where a server receives mail, as Postmark's inbound streams do: a generated address
    `<token>@<inbound host>` (made on first read), and optionally a domain of the
    customer's whose MX points at us, every address of which reaches the server once the
    MX record is verified."""

    server = models.OneToOneField(
        EmailServer, on_delete=models.CASCADE, primary_key=True, related_name="inbound"
    )
    token = models.CharField(max_length=32, unique=True)  # the address's local part
    domain = models.CharField(max_length=253, blank=True, db_index=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    check_detail = models.CharField(max_length=500, blank=True)

    def __str__(self) -> str:
        return f"inbound of server {self.server_id} ({self.domain or 'no domain'})"


class InboundMessage(models.Model):
    """One message received for a server: the raw bytes as the MX stored them (with our
    Authentication-Results and Received on top), and what lists and searches show.
    Written with its webhook deliveries in one transaction before the MX answers 250."""

    server = models.ForeignKey(
        EmailServer, on_delete=models.CASCADE, related_name="inbound_messages"
    )
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    stream = models.ForeignKey(MessageStream, on_delete=models.CASCADE, related_name="+")
    mail_from = models.CharField(max_length=320, blank=True)  # the envelope sender
    rcpt_to = models.CharField(max_length=320)  # the address it came in on
    from_header = models.CharField(max_length=1000, blank=True)
    subject = models.CharField(max_length=1000, blank=True)
    message_id_header = models.CharField(max_length=1000, blank=True)
    spf = models.CharField(max_length=12)
    dkim = models.CharField(max_length=12)  # the best of the signatures' results
    dmarc = models.CharField(max_length=12)
    size = models.PositiveIntegerField()
    raw = models.BinaryField()
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["server", "-id"], name="inbound_server_newest")]

    def __str__(self) -> str:
        return f"inbound message {self.pk} for server {self.server_id}"
