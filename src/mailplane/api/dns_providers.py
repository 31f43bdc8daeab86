"""/api/dns-providers/: an account's Cloudflare or GoDaddy connections (credentials go in,
never out), their test, and publishing a domain's records through one of them."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import BoundedCharField
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.api.schema import LIMIT_REACHED, TaskStartedSerializer, task_started
from mailplane.core.errors import NotFound
from mailplane.core.ids import MAX_ID, id_or_none
from mailplane.dnsproviders.models import DnsProviderConnection, DnsProviderKind
from mailplane.dnsproviders.selectors import dns_provider_list
from mailplane.dnsproviders.services import (
    dns_provider_create,
    dns_provider_delete,
    dns_provider_get,
    dns_provider_test,
    dns_provider_update,
    domain_dns_publish_request,
)
from mailplane.domains.selectors import domain_get
from mailplane.relays.schemas import mask_credentials


class DnsProviderSerializer(serializers.ModelSerializer[DnsProviderConnection]):
    credentials = serializers.SerializerMethodField(help_text="Masked: never shown in full.")
    domains = serializers.SerializerMethodField(
        help_text="Ids of the domains whose records this connection publishes."
    )

    class Meta:
        model = DnsProviderConnection
        fields = [
            "id",
            "name",
            "provider",
            "credentials",
            "status",
            "status_detail",
            "tested_at",
            "domains",
            "created_at",
        ]

    def get_credentials(self, connection: DnsProviderConnection) -> dict[str, str]:
        return mask_credentials(connection.credentials)

    def get_domains(self, connection: DnsProviderConnection) -> list[int]:
        return sorted(p.domain_id for p in connection.publications.all())


class DnsProviderCreateSerializer(serializers.Serializer[Any]):
    name = BoundedCharField(max_length=200)
    provider = serializers.ChoiceField(choices=DnsProviderKind.choices)
    credentials = serializers.DictField(
        help_text='Cloudflare: `{"api_token"}`; GoDaddy: `{"api_key", "api_secret"}`.'
    )


class DnsProviderUpdateSerializer(serializers.Serializer[Any]):
    name = BoundedCharField(max_length=200, required=False)
    credentials = serializers.DictField(required=False)


class DomainPublishDnsSerializer(serializers.Serializer[Any]):
    dns_provider = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, required=False, allow_null=True
    )
    merge_spf = serializers.BooleanField(default=False)


def _shown(request: Request, connection: DnsProviderConnection) -> dict[str, Any]:
    """The connection as the list shows it (with its domains), after a write."""
    shown = dns_provider_list(organization=organization_of(request)).get(pk=connection.pk)
    return dict(DnsProviderSerializer(shown).data)


class DnsProviderListView(APIView):
    pagination_class = LimitOffsetPagination

    @extend_schema(responses=DnsProviderSerializer(many=True))
    def get(self, request: Request) -> Response:
        connections = dns_provider_list(organization=organization_of(request))
        paginator = self.pagination_class()
        page: list[DnsProviderConnection] = (
            paginator.paginate_queryset(connections, request, view=self) or []
        )
        return paginator.get_paginated_response(DnsProviderSerializer(page, many=True).data)

    @extend_schema(
        request=DnsProviderCreateSerializer,
        responses={201: DnsProviderSerializer, 403: LIMIT_REACHED},
    )
    def post(self, request: Request) -> Response:
        data = DnsProviderCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        connection = dns_provider_create(
            organization=organization_of(request), **data.validated_data
        )
        return Response(_shown(request, connection), status=status.HTTP_201_CREATED)


class DnsProviderDetailView(APIView):
    @extend_schema(responses=DnsProviderSerializer)
    def get(self, request: Request, pk: int) -> Response:
        connection = dns_provider_get(organization=organization_of(request), connection_id=pk)
        return Response(_shown(request, connection))

    @extend_schema(request=DnsProviderUpdateSerializer, responses=DnsProviderSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        connection = dns_provider_get(organization=organization_of(request), connection_id=pk)
        data = DnsProviderUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        connection = dns_provider_update(connection=connection, **data.validated_data)
        return Response(_shown(request, connection))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        connection = dns_provider_get(organization=organization_of(request), connection_id=pk)
        dns_provider_delete(connection=connection)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DnsProviderTestView(APIView):
    """Check the credentials with the provider now; 200 with the verdict in `status`."""

    @extend_schema(request=None, responses=DnsProviderSerializer)
    def post(self, request: Request, pk: int) -> Response:
        connection = dns_provider_get(organization=organization_of(request), connection_id=pk)
        return Response(_shown(request, dns_provider_test(connection=connection)))


class DomainPublishDnsView(APIView):
    """Publish the domain's records through a DNS-provider connection: 202 with a task."""

    @extend_schema(
        request=DomainPublishDnsSerializer,
        responses={202: TaskStartedSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        org = organization_of(request)
        if id_or_none(pk) is None:
            raise NotFound("domain not found")
        domain = domain_get(organization=org, domain_id=pk)
        body = DomainPublishDnsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = domain_dns_publish_request(organization=org, domain=domain, **body.validated_data)
        return task_started(job)
