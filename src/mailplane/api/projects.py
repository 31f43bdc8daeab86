"""/api/projects/: CRUD.

The API idiom (docs/architecture.md), in its smallest form: `ProjectSerializer` validates
the body (and is what the schema shows), `projects.services` writes, `projects.selectors`
reads, and each view method only connects them.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import BOUNDED_FIELD_MAPPING
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.api.schema import CONFLICT
from mailplane.projects.models import Project
from mailplane.projects.selectors import project_get, project_list
from mailplane.projects.services import project_create, project_delete, project_update


class ProjectSerializer(serializers.ModelSerializer[Project]):
    """A named group of the account's mailboxes and domains."""

    serializer_field_mapping = BOUNDED_FIELD_MAPPING
    # Counted by project_list's annotations.
    mailboxes = serializers.IntegerField(source="mailbox_count", read_only=True)
    domains = serializers.IntegerField(source="domain_count", read_only=True)

    class Meta:
        model = Project
        fields = ["id", "name", "description", "mailboxes", "domains", "created_at"]
        # Uniqueness per account is the service's (the database's) to say: a 409.
        validators: list[object] = []


_CONFLICT = {409: CONFLICT}


def _valid(request: Request, *, partial: bool = False) -> dict[str, Any]:
    body = ProjectSerializer(data=request.data, partial=partial)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


def _shown(request: Request, project: Project) -> dict[str, Any]:
    project = project_get(organization=organization_of(request), project_id=project.pk)
    return dict(ProjectSerializer(project).data)


class ProjectListView(APIView):
    pagination_class = LimitOffsetPagination

    @extend_schema(responses=ProjectSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        projects = project_list(organization=organization_of(request))
        page: list[Project] = paginator.paginate_queryset(projects, request, view=self) or []
        return paginator.get_paginated_response(ProjectSerializer(page, many=True).data)

    @extend_schema(request=ProjectSerializer, responses={201: ProjectSerializer, **_CONFLICT})
    def post(self, request: Request) -> Response:
        project = project_create(organization=organization_of(request), **_valid(request))
        return Response(_shown(request, project), status=status.HTTP_201_CREATED)


class ProjectDetailView(APIView):
    @extend_schema(responses=ProjectSerializer)
    def get(self, request: Request, pk: int) -> Response:
        project = project_get(organization=organization_of(request), project_id=pk)
        return Response(ProjectSerializer(project).data)

    @extend_schema(request=ProjectSerializer, responses={200: ProjectSerializer, **_CONFLICT})
    def put(self, request: Request, pk: int) -> Response:
        project = project_get(organization=organization_of(request), project_id=pk)
        project = project_update(project=project, **_valid(request))
        return Response(_shown(request, project))

    @extend_schema(request=ProjectSerializer, responses={200: ProjectSerializer, **_CONFLICT})
    def patch(self, request: Request, pk: int) -> Response:
        project = project_get(organization=organization_of(request), project_id=pk)
        project = project_update(project=project, **_valid(request, partial=True))
        return Response(_shown(request, project))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        project_delete(project=project_get(organization=organization_of(request), project_id=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
