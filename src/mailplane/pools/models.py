from __future__ import annotations

from django.db import models

from mailplane.servers.models import EmailServer, MessageStream, ServerKey
from mailplane.tenancy.models import Organization


class IpPool(models.Model):
    """A named set of source addresses, managed by the operator (`mailplane pool …`)."""

    name = models.SlugField(max_length=50, unique=True)
    # Dedicated: assigned to one server key and nothing else.
    dedicated = models.BooleanField(default=False)
    # The warm-up ramp of its new addresses: [{"daily": n, "hourly": m}, …] by day; empty:
    # pools/warmup.py's DEFAULT_RAMP.
    warmup_schedule = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class PoolAddress(models.Model):
    """One source address and the name it introduces itself with (EHLO, RFC 5321 §4.1.1.1;
    receivers check it against the address's PTR record)."""

    pool = models.ForeignKey(IpPool, on_delete=models.CASCADE, related_name="addresses")
    address = models.GenericIPAddressField(unique=True)  # in one pool only
    helo_name = models.CharField(max_length=253)
    enabled = models.BooleanField(default=True)
    # Warm-up stage: day n of the pool's ramp (its caps apply), 0 once warm (no caps).
    warmup_day = models.PositiveIntegerField(default=0)
    warmup_checked_on = models.DateField(null=True, blank=True)  # the last day judged
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.address} ({self.helo_name})"


class PoolAssignment(models.Model):
    """Whose mail leaves from a pool: an account's, or one server's, stream's or key's of
    it (the narrower fields left null for a wider scope). One pool per scope: checked by
    pools/services.py under the account's row lock (a unique constraint treats NULLs as
    distinct on SQLite and PostgreSQL < 15)."""

    pool = models.ForeignKey(IpPool, on_delete=models.CASCADE, related_name="assignments")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    server = models.ForeignKey(EmailServer, on_delete=models.CASCADE, null=True, related_name="+")
    stream = models.ForeignKey(MessageStream, on_delete=models.CASCADE, null=True, related_name="+")
    server_key = models.ForeignKey(ServerKey, on_delete=models.CASCADE, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.pool_id} for org {self.organization_id}"


class AddressUsage(models.Model):
    """What one address sent (and how much of it bounced) in one clock hour (UTC): the
    warm-up's counts, reserved before sending so that concurrent workers share a cap."""

    address = models.ForeignKey(PoolAddress, on_delete=models.CASCADE, related_name="usage")
    hour = models.DateTimeField()  # the hour's start
    sent = models.PositiveIntegerField(default=0)
    bounced = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["address", "hour"], name="one_usage_per_hour")
        ]
        # The pruning's filter (core/windows.py window_prune): `hour` leads no other index.
        indexes = [models.Index(fields=["hour"], name="address_usage_hour")]

    def __str__(self) -> str:
        return f"{self.address_id} at {self.hour:%Y-%m-%d %H}: {self.sent}"
