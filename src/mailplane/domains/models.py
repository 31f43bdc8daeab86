from __future__ import annotations

from django.db import models

from mailplane.core.fields import EncryptedTextField
from mailplane.projects.models import Project
from mailplane.relays.models import RelayServer
from mailplane.tenancy.models import Organization


class VerificationState(models.TextChoices):
    DNS_PENDING = "dns_pending"
    VERIFIED = "verified"


class Domain(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="domains")
    relay_server = models.ForeignKey(RelayServer, on_delete=models.PROTECT, related_name="domains")
    project = models.ForeignKey(
        Project, on_delete=models.SET_NULL, null=True, blank=True, related_name="domains"
    )
    # Stored lower-case, IDNA (A-label) form: one spelling per domain.
    name = models.CharField(max_length=253, unique=True)
    redirect = models.URLField(blank=True)
    dkim_selector = models.CharField(max_length=63)
    dkim_private_key = EncryptedTextField()
    dkim_public_key = models.TextField()  # base64 DER SubjectPublicKeyInfo, as in p=
    return_path_host = models.CharField(max_length=253)
    verification_state = models.CharField(
        max_length=20, choices=VerificationState.choices, default=VerificationState.DNS_PENDING
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_verified(self) -> bool:
        return self.verification_state == VerificationState.VERIFIED


class RecordPurpose(models.TextChoices):
    MX = "mx"
    SPF = "spf"
    DKIM = "dkim"
    DMARC = "dmarc"
    RETURN_PATH = "return_path"


class RecordStatus(models.TextChoices):
    PENDING = "pending"
    OK = "ok"
    MISSING = "missing"
    INVALID = "invalid"
    ERROR = "error"  # the lookup itself failed (timeout, SERVFAIL): try again later


class DnsRecord(models.Model):
    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="dns_records")
    purpose = models.CharField(max_length=20, choices=RecordPurpose.choices)
    type = models.CharField(max_length=10)
    name = models.CharField(max_length=253)
    value = models.TextField()
    priority = models.PositiveIntegerField(null=True, blank=True)
    required = models.BooleanField(default=True)
    status = models.CharField(
        max_length=10, choices=RecordStatus.choices, default=RecordStatus.PENDING
    )
    detail = models.TextField(blank=True)  # what was found, or why it failed
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "purpose"], name="one_record_per_purpose")
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.name} ({self.purpose}: {self.status})"
