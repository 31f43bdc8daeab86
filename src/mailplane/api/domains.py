"""/api/domains/: create on a relay server, list the DNS records, verify."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import BoundedCharField, OwnedField, optional_int_param
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.api.schema import CONFLICT
from mailplane.core.ids import MAX_ID
from mailplane.dnsproviders.services import domain_create_published
from mailplane.domains.models import DnsRecord, Domain
from mailplane.domains.selectors import domain_get, domain_list
from mailplane.domains.services import (
    domain_delete,
    domain_update,
    domain_verify,
    reserved_accepted,
)
from mailplane.domains.verification import reserved_acceptance
from mailplane.projects.models import Project
from mailplane.relays.models import RelayServer
from mailplane.relays.selectors import relay_server_list
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
    dns_provider = serializers.SerializerMethodField()
    verification_detail = serializers.SerializerMethodField()

    class Meta:
        model = Domain
        fields = [
            "id",
            "name",
            "relay_server",
            "project",
            "redirect",
            "verification_state",
            "verification_detail",
            "verified_at",
            "last_checked_at",
            "dkim_selector",
            "return_path_host",
            "records",
            "dns_provider",
            "created_at",
        ]

    def get_verification_detail(self, domain: Domain) -> str:
        """One sentence on how the domain got (or gets) verified."""
        if reserved_accepted(domain.name):
            return reserved_acceptance(domain.name)
        if domain.is_verified:
            return "verified: every required DNS record was found"
        return (
            "not verified yet: publish the records listed in `records`, then "
            f"POST /api/domains/{domain.pk}/verify/ (pending domains are re-checked every "
            "5 minutes); mailboxes can be created once it is verified"
        )

    def get_dns_provider(self, domain: Domain) -> int | None:
        """The DNS-provider connection that publishes this domain's records, if any."""
        publication = getattr(domain, "dns_publication", None)
        return publication.connection_id if publication is not None else None


class DomainCreatedSerializer(DomainSerializer):
    dns_publish_task_id = serializers.UUIDField(
        required=False,
        help_text="Only with `dns_provider` in the request: the task publishing the records.",
    )

    class Meta(DomainSerializer.Meta):
        fields = [*DomainSerializer.Meta.fields, "dns_publish_task_id"]


class DomainCreateSerializer(serializers.Serializer[Any]):
    name = BoundedCharField(max_length=253)
    # Optional when the account has exactly one relay server (a new account's): that one.
    relay_server = OwnedField(RelayServer, required=False)
    project = OwnedField(Project, required=False, allow_null=True)
    redirect = serializers.URLField(required=False, allow_blank=True, default="")

    # Publish the records through this DNS-provider connection once created (a task).
    dns_provider = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, required=False, allow_null=True
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "relay_server" not in attrs:
            org: Organization = self.context["organization"]
            servers = list(relay_server_list(organization=org)[:2])
            if len(servers) != 1:
                raise serializers.ValidationError(
                    {
                        "relay_server": [
                            "this field is required (the account has "
                            f"{'no' if not servers else 'several'} relay servers)"
                        ]
                    }
                )
            attrs["relay_server"] = servers[0]
        return attrs


class DomainUpdateSerializer(serializers.Serializer[Any]):
    # The relay server new mailboxes of the domain get by default; existing mailboxes keep
    # theirs (PATCH a mailbox's relay_server to move it).
    relay_server = OwnedField(RelayServer, required=False)
    project = OwnedField(Project, required=False, allow_null=True)
    redirect = serializers.URLField(required=False, allow_blank=True)


def _shown(request: Request, domain: Domain) -> dict[str, Any]:
    """The domain as `domain_get` reads it (records, DNS provider), serialized."""
    domain = domain_get(organization=organization_of(request), domain_id=domain.pk)
    return dict(DomainSerializer(domain).data)


PROJECT_FILTER = OpenApiParameter("project", int, description="Only this project's.")


class DomainListView(APIView):
    pagination_class = LimitOffsetPagination

    @extend_schema(parameters=[PROJECT_FILTER], responses=DomainSerializer(many=True))
    def get(self, request: Request) -> Response:
        domains = domain_list(
            organization=organization_of(request), project=optional_int_param(request, "project")
        )
        paginator = self.pagination_class()
        page: list[Domain] = paginator.paginate_queryset(domains, request, view=self) or []
        return paginator.get_paginated_response(DomainSerializer(page, many=True).data)

    @extend_schema(
        request=DomainCreateSerializer,
        responses={201: DomainCreatedSerializer, 409: CONFLICT},
        description="Add a domain; the response lists the DNS records to publish.",
    )
    def post(self, request: Request) -> Response:
        org = organization_of(request)
        body = DomainCreateSerializer(data=request.data, context={"organization": org})
        body.is_valid(raise_exception=True)
        domain, job = domain_create_published(organization=org, **body.validated_data)
        shown = _shown(request, domain)
        if job is not None:
            shown["dns_provider"] = job.payload["connection_id"]
            shown["dns_publish_task_id"] = str(job.pk)
        return Response(shown, status=status.HTTP_201_CREATED)


class DomainDetailView(APIView):
    @extend_schema(responses=DomainSerializer)
    def get(self, request: Request, pk: int) -> Response:
        domain = domain_get(organization=organization_of(request), domain_id=pk)
        return Response(DomainSerializer(domain).data)

    @extend_schema(request=DomainUpdateSerializer, responses=DomainSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        org = organization_of(request)
        domain = domain_get(organization=org, domain_id=pk)
        body = DomainUpdateSerializer(data=request.data, context={"organization": org})
        body.is_valid(raise_exception=True)
        return Response(_shown(request, domain_update(domain=domain, **body.validated_data)))

    @extend_schema(responses={204: None, 409: CONFLICT}, description="409 while it has mailboxes.")
    def delete(self, request: Request, pk: int) -> Response:
        domain_delete(domain=domain_get(organization=organization_of(request), domain_id=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DomainVerifyView(APIView):
    """Check the domain's DNS records now; 200 with the per-record results either way."""

    @extend_schema(request=None, responses=DomainSerializer)
    def post(self, request: Request, pk: int) -> Response:
        domain = domain_get(organization=organization_of(request), domain_id=pk)
        return Response(_shown(request, domain_verify(domain=domain)))
