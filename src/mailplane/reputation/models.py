from __future__ import annotations

from django.db import models

from mailplane.servers.models import EmailServer, ServerKey
from mailplane.tenancy.models import Organization


class CapUsage(models.Model):
    """Recipients counted against one cap owner (`server:<id>` or `key:<id>`) in one clock
    hour (UTC): reserved before the send (refuse mode: at the API; hold mode: at delivery)
    under the owner's row lock, so every process shares one count (core/windows.py)."""

    scope = models.CharField(max_length=40)
    hour = models.DateTimeField()  # the hour's start
    recipients = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "hour"], name="one_cap_usage_per_hour")
        ]
        # The pruning's filter (core/windows.py window_prune): `hour` leads no other index.
        indexes = [models.Index(fields=["hour"], name="cap_usage_hour")]

    def __str__(self) -> str:
        return f"{self.scope} at {self.hour:%Y-%m-%d %H}: {self.recipients}"


class NoticeKind(models.TextChoices):
    PAUSED = "paused"
    RESUMED = "resumed"


class ReputationNotice(models.Model):
    """What the account is told about its servers' and keys' reputation: one paused (and
    why), one resumed. Read through GET /api/reputation-notices/."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    server = models.ForeignKey(EmailServer, on_delete=models.CASCADE, related_name="+")
    server_key = models.ForeignKey(
        ServerKey, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=NoticeKind.choices)
    message = models.CharField(max_length=500)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["organization", "-id"], name="reputation_notice_org")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"
