from __future__ import annotations

from django.db import models

from mailplane.tenancy.models import Organization


class Project(models.Model):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="projects"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="project_name_per_org")
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name
