from __future__ import annotations

from django.db import models

from mailplane.core.fields import EncryptedJSONField
from mailplane.domains.models import Domain, RecordPurpose
from mailplane.tenancy.models import Organization


class DnsProviderKind(models.TextChoices):
    CLOUDFLARE = "cloudflare", "Cloudflare"
    GODADDY = "godaddy", "GoDaddy"


class ConnectionStatus(models.TextChoices):
    UNTESTED = "untested"
    VALID = "valid"
    INVALID = "invalid"  # the provider refused the credentials
    ERROR = "error"  # the test could not finish (provider unreachable, rate limited)


class DnsProviderConnection(models.Model):
    """An account's credentials for one DNS-provider account."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="dns_providers"
    )
    name = models.CharField(max_length=200)
    provider = models.CharField(max_length=20, choices=DnsProviderKind.choices)
    # Never returned by the API (only masked), never logged.
    credentials = EncryptedJSONField(default=dict)
    status = models.CharField(
        max_length=10, choices=ConnectionStatus.choices, default=ConnectionStatus.UNTESTED
    )
    status_detail = models.TextField(blank=True)
    tested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider})"


class DomainDnsPublication(models.Model):
    """Mailplane publishes this domain's records through this connection."""

    domain = models.OneToOneField(Domain, on_delete=models.CASCADE, related_name="dns_publication")
    connection = models.ForeignKey(
        DnsProviderConnection, on_delete=models.CASCADE, related_name="publications"
    )
    zone_id = models.CharField(max_length=64, blank=True)
    zone_name = models.CharField(max_length=253, blank=True)
    # One publish at a time per domain: set by an atomic claim, cleared when it ends.
    publishing_since = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    last_result = models.JSONField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.domain} via {self.connection}"


class PublishedRecord(models.Model):
    """A record Mailplane wrote into a customer's zone (the ledger).

    This is how Mailplane knows which records are its own: by id on Cloudflare (whose
    records also carry Mailplane's comment), by exact type, name and content on GoDaddy,
    whose records have neither. A row is written before the provider is asked to write
    (so a crash in between still leaves the record recognisable) and removed once the
    record is replaced or deleted. `spf_term` rows record the one mechanism Mailplane
    added to the customer's own SPF record (merge_spf); that record stays theirs.
    """

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="published_records")
    provider = models.CharField(max_length=20, choices=DnsProviderKind.choices)
    zone_name = models.CharField(max_length=253)
    purpose = models.CharField(max_length=20, choices=RecordPurpose.choices)
    type = models.CharField(max_length=10)
    name = models.CharField(max_length=253)
    content = models.TextField()
    priority = models.PositiveIntegerField(null=True, blank=True)
    provider_record_id = models.CharField(max_length=64, blank=True)
    spf_term = models.CharField(max_length=255, blank=True)
    # When the record stopped being wanted (an old DKIM selector): kept a while, then deleted.
    retired_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["domain", "provider", "zone_name"], name="published_record_zone")
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.name} ({self.purpose}, {self.provider})"
