from __future__ import annotations

import uuid

from django.db import models

from mailplane.core.fields import EncryptedJSONField
from mailplane.tenancy.models import Organization


class JobStatus(models.TextChoices):
    # The seeds poll for exactly these three strings.
    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=50)
    # Input may hold secrets (a mailbox password): encrypted at rest like them.
    payload = EncryptedJSONField(default="")
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.PENDING)
    progress = models.PositiveSmallIntegerField(default=0)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # A secret of the result (a generated mailbox password) has been shown: never again.
    secret_taken = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "created_at"], name="job_status_created")]

    def __str__(self) -> str:
        return f"{self.kind} {self.pk} ({self.status})"
