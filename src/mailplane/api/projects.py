"""/api/projects/: CRUD."""

from __future__ import annotations

from django.db import IntegrityError
from rest_framework import generics, serializers
from rest_framework.request import Request

from mailplane.api.authentication import organization_of
from mailplane.core.errors import Conflict
from mailplane.projects.models import Project


class ProjectSerializer(serializers.ModelSerializer[Project]):
    mailboxes = serializers.IntegerField(source="mailboxes.count", read_only=True)
    domains = serializers.IntegerField(source="domains.count", read_only=True)

    class Meta:
        model = Project
        fields = ["id", "name", "description", "mailboxes", "domains", "created_at"]
        # Uniqueness per account is enforced by the database and reported as a field error.
        validators: list[object] = []

    def save(self, **kwargs: object) -> Project:
        try:
            return super().save(**kwargs)
        except IntegrityError as exc:
            raise Conflict(
                "a project with this name exists",
                details={"name": ["a project with this name exists"]},
            ) from exc


class _AccountProjects:
    request: Request

    def get_queryset(self) -> object:
        return Project.objects.filter(organization=organization_of(self.request))


class ProjectListView(_AccountProjects, generics.ListCreateAPIView):  # type: ignore[type-arg]
    serializer_class = ProjectSerializer

    def perform_create(self, serializer: ProjectSerializer) -> None:
        serializer.save(organization=organization_of(self.request))


class ProjectDetailView(_AccountProjects, generics.RetrieveUpdateDestroyAPIView):  # type: ignore[type-arg]
    serializer_class = ProjectSerializer
