"""/api/projects/: CRUD."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, serializers

from mailplane.api.authentication import organization_of
from mailplane.api.fields import BOUNDED_FIELD_MAPPING
from mailplane.api.schema import CONFLICT
from mailplane.core.errors import Conflict
from mailplane.projects.models import Project


class ProjectSerializer(serializers.ModelSerializer[Project]):
    serializer_field_mapping = BOUNDED_FIELD_MAPPING
    mailboxes = serializers.IntegerField(source="mailboxes.count", read_only=True)
    domains = serializers.IntegerField(source="domains.count", read_only=True)

    class Meta:
        model = Project
        fields = ["id", "name", "description", "mailboxes", "domains", "created_at"]
        # Uniqueness per account is enforced by the database and reported as a field error.
        validators: list[object] = []

    def save(self, **kwargs: Any) -> Project:
        try:
            return super().save(**kwargs)
        except IntegrityError as exc:
            raise Conflict(
                "a project with this name exists",
                details={"name": ["a project with this name exists"]},
            ) from exc


_CONFLICT = {409: CONFLICT}


@extend_schema_view(post=extend_schema(responses={201: ProjectSerializer, **_CONFLICT}))
class ProjectListView(generics.ListCreateAPIView[Project]):
    serializer_class = ProjectSerializer

    def get_queryset(self) -> QuerySet[Project]:
        return Project.objects.filter(organization=organization_of(self.request))

    def perform_create(self, serializer: serializers.BaseSerializer[Project]) -> None:
        serializer.save(organization=organization_of(self.request))


@extend_schema_view(
    put=extend_schema(responses={200: ProjectSerializer, **_CONFLICT}),
    patch=extend_schema(responses={200: ProjectSerializer, **_CONFLICT}),
)
class ProjectDetailView(generics.RetrieveUpdateDestroyAPIView[Project]):
    serializer_class = ProjectSerializer

    def get_queryset(self) -> QuerySet[Project]:
        return Project.objects.filter(organization=organization_of(self.request))
