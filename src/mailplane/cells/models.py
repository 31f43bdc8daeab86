from __future__ import annotations

from django.db import models

from mailplane.core.fields import EncryptedTextField

SHARED = "shared"  # the cell every account starts on: the default database and storage root


class CellState(models.TextChoices):
    PENDING = "pending"  # registered, not provisioned yet
    PROVISIONING = "provisioning"  # database, migrations and storage root under way
    READY = "ready"  # accounts may be assigned; `mailplane serve --cell` may start
    FAILED = "failed"  # provisioning stopped: `progress` says where and why


class Cell(models.Model):
    """One data plane: a database, a storage root, host names and listen addresses of its
    own. The shared cell has no row: it is the deployment's own DATABASE_URL and
    MAILPLANE_STORAGE_ROOT (cells/selectors.py shared_cell)."""

    name = models.SlugField(max_length=40, unique=True)
    state = models.CharField(max_length=20, choices=CellState.choices, default=CellState.PENDING)
    # It carries the database password: encrypted at rest, never returned or logged (the
    # CLI shows it with the password masked).
    database_url = EncryptedTextField()
    storage_root = models.CharField(max_length=1024)
    smtp_host = models.CharField(max_length=253, blank=True)
    imap_host = models.CharField(max_length=253, blank=True)
    # Addresses the cell's listeners bind (empty: MAILPLANE_SMTP_BIND / IMAP_BIND).
    listen_addresses = models.JSONField(default=list, blank=True)
    # The last provisioning step reached and, on failure, why it stopped.
    progress = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"
