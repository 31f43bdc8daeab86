from __future__ import annotations

from django.db import models

from mailplane.core.fields import EncryptedTextField
from mailplane.domains.models import Domain
from mailplane.projects.models import Project
from mailplane.relays.models import RelayServer
from mailplane.tenancy.models import Organization


class MailboxStatus(models.TextChoices):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Mailbox(models.Model):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="mailboxes"
    )
    domain = models.ForeignKey(Domain, on_delete=models.PROTECT, related_name="mailboxes")
    relay_server = models.ForeignKey(
        RelayServer, on_delete=models.PROTECT, related_name="mailboxes"
    )
    project = models.ForeignKey(
        Project, on_delete=models.SET_NULL, null=True, blank=True, related_name="mailboxes"
    )
    local_part = models.CharField(max_length=64)
    # Full address, lower-case: the SMTP/IMAP login and the routing key for inbound mail.
    address = models.CharField(max_length=320, unique=True)
    # Encrypted so exports and clients can be handed the password; the hash serves logins.
    password = EncryptedTextField()
    password_hash = models.CharField(max_length=200)
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    reply_to = models.EmailField(blank=True)
    status = models.CharField(
        max_length=10, choices=MailboxStatus.choices, default=MailboxStatus.ACTIVE
    )
    daily_limit = models.PositiveIntegerField(default=50)
    warmup_enabled = models.BooleanField(default=False)
    warmup_per_day = models.PositiveIntegerField(default=20)
    warmup_daily_rampup = models.PositiveIntegerField(default=2)
    sent_this_cycle = models.PositiveIntegerField(default=0)
    signature = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["organization", "id"], name="mailbox_org_id")]

    def __str__(self) -> str:
        return self.address

    @property
    def display_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)
