from __future__ import annotations

from django.conf import settings
from django.db import models

from mailplane.tenancy.plans import PLANS, Plan, PlanName


class Organization(models.Model):
    """A tenant. Every customer-owned row hangs off one of these."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=63, unique=True)
    plan = models.CharField(max_length=20, choices=[(p.value, p.value) for p in PlanName])
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="organizations"
    )
    # Operator overrides of the plan's limits (None: the plan decides).
    mailboxes_limit_override = models.PositiveIntegerField(null=True, blank=True)
    relay_servers_limit_override = models.PositiveIntegerField(null=True, blank=True)
    # Days the message logs and bodies are kept (None: the plan's, 30 days by default).
    log_retention_days_override = models.PositiveIntegerField(null=True, blank=True)
    # Single-tenant: dedicated host names; empty means the shared hosts.
    dedicated_smtp_host = models.CharField(max_length=253, blank=True)
    dedicated_imap_host = models.CharField(max_length=253, blank=True)
    # The cell (cells.Cell.name) holding the account's data; "shared": the default database.
    cell = models.CharField(max_length=40, default="shared", db_default="shared", db_index=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.slug

    @property
    def plan_limits(self) -> Plan:
        return PLANS[PlanName(self.plan)]

    @property
    def mailboxes_limit(self) -> int | None:
        if self.mailboxes_limit_override is not None:
            return self.mailboxes_limit_override
        return self.plan_limits.mailboxes_included

    @property
    def relay_servers_limit(self) -> int | None:
        if self.relay_servers_limit_override is not None:
            return self.relay_servers_limit_override
        return self.plan_limits.relay_servers_allowed

    @property
    def log_retention_days(self) -> int:
        if self.log_retention_days_override is not None:
            return self.log_retention_days_override
        return self.plan_limits.log_retention_days


class ApiKey(models.Model):
    """An account API key. Only a keyed digest is stored; the key is shown once."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True)
    key_digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
