"""/api/domains/: create on a relay server, list the DNS records, verify."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import optional_int_param
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.core.ids import MAX_ID, id_or_none
from mailplane.domains.models import DnsRecord, Domain
from mailplane.domains.services import (
    domain_create,
    domain_delete,
    domain_get,
    domain_update,
    domain_verify,
)
from mailplane.projects.models import Project
from mailplane.relays.models import RelayServer
from mailplane.tenancy.models import Organization


class DnsRecordSerializer(serializers.ModelSerializer[DnsRecord]):
    class Meta:
        model = DnsRecord
        fields = [
            "purpose",
            "type",
            "name",
            "value",
            "priority",
            "required",
            "status",
            "detail",
            "checked_at",
        ]


class DomainSerializer(serializers.ModelSerializer[Domain]):
    records = DnsRecordSerializer(source="dns_records", many=True, read_only=True)

    class Meta:
        model = Domain
        fields = [
            "id",
            "name",
            "relay_server",
            "project",
            "redirect",
            "verification_state",
            "verified_at",
            "last_checked_at",
            "dkim_selector",
            "return_path_host",
            "records",
            "created_at",
        ]


class _OwnedField(serializers.PrimaryKeyRelatedField[Any]):
    """A reference to one of the caller's own objects; others' ids read as 'not found'.

    The id is bounded before the lookup (core/ids.py): a 20-digit number is a 400 naming
    the field, not an OverflowError from the database.
    """

    def __init__(self, model: type[Any], **kwargs: Any) -> None:
        self.model = model
        super().__init__(**kwargs)

    def get_queryset(self) -> Any:
        org: Organization = self.context["organization"]
        return self.model.objects.filter(organization=org)

    def to_internal_value(self, data: Any) -> Any:
        pk = id_or_none(data)
        if pk is None:
            raise serializers.ValidationError(f"must be an id from 1 to {MAX_ID}")
        found = self.get_queryset().filter(pk=pk).first()
        if found is None:
            label = (self.field_name or "object").replace("_", " ")
            raise serializers.ValidationError(f"{label} {pk} not found")
        return found


class DomainCreateSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=253)
    relay_server = _OwnedField(RelayServer)
    project = _OwnedField(Project, required=False, allow_null=True)
    redirect = serializers.URLField(required=False, allow_blank=True, default="")


class DomainUpdateSerializer(serializers.Serializer[Any]):
    # The relay server new mailboxes of the domain get by default; existing mailboxes keep
    # theirs (PATCH a mailbox's relay_server to move it).
    relay_server = _OwnedField(RelayServer, required=False)
    project = _OwnedField(Project, required=False, allow_null=True)
    redirect = serializers.URLField(required=False, allow_blank=True)


def _domains(org: Organization) -> Any:
    return Domain.objects.filter(organization=org).prefetch_related("dns_records")


class DomainListView(APIView):
    def get(self, request: Request) -> Response:
        qs = _domains(organization_of(request))
        if (project := optional_int_param(request, "project")) is not None:
            qs = qs.filter(project_id=project)
        paginator = LimitOffsetPagination()
        page: list[Domain] = paginator.paginate_queryset(qs, request, view=self) or []
        return paginator.get_paginated_response(DomainSerializer(page, many=True).data)

    def post(self, request: Request) -> Response:
        org = organization_of(request)
        data = DomainCreateSerializer(data=request.data, context={"organization": org})
        data.is_valid(raise_exception=True)
        domain = domain_create(organization=org, **data.validated_data)
        return Response(
            DomainSerializer(_domains(org).get(pk=domain.pk)).data, status=status.HTTP_201_CREATED
        )


class DomainDetailView(APIView):
    def get(self, request: Request, pk: int) -> Response:
        org = organization_of(request)
        domain = domain_get(organization=org, domain_id=pk)
        return Response(DomainSerializer(_domains(org).get(pk=domain.pk)).data)

    def patch(self, request: Request, pk: int) -> Response:
        org = organization_of(request)
        domain = domain_get(organization=org, domain_id=pk)
        data = DomainUpdateSerializer(data=request.data, context={"organization": org})
        data.is_valid(raise_exception=True)
        domain_update(domain=domain, **data.validated_data)
        return Response(DomainSerializer(_domains(org).get(pk=domain.pk)).data)

    def delete(self, request: Request, pk: int) -> Response:
        domain_delete(domain=domain_get(organization=organization_of(request), domain_id=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DomainVerifyView(APIView):
    """Check the domain's DNS records now; 200 with the per-record results either way."""

    def post(self, request: Request, pk: int) -> Response:
        org = organization_of(request)
        domain = domain_verify(domain=domain_get(organization=org, domain_id=pk))
        return Response(DomainSerializer(_domains(org).get(pk=domain.pk)).data)
