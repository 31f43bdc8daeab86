from __future__ import annotations

__all__ = ["Provider", "RelayServer", "RelayStatus"]

from django.db import models

from mailplane.core.fields import EncryptedJSONField
from mailplane.relays.providers import Provider
from mailplane.tenancy.models import Organization


class RelayStatus(models.TextChoices):
    ACTIVE = "active"
    INACTIVE = "inactive"


class RelayServer(models.Model):
    """A sending back end assigned by the operator to one account."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="relay_servers", null=True, blank=True
    )
    name = models.CharField(max_length=200)
    provider = models.CharField(max_length=20, choices=Provider.choices)
    configuration = models.JSONField(default=dict, blank=True)
    credentials = EncryptedJSONField(blank=True, default="")
    status = models.CharField(
        max_length=10, choices=RelayStatus.choices, default=RelayStatus.ACTIVE
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider})"
