"""/api/relay-servers/: the servers assigned to the account; settings and credentials."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import BoundedCharField
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.relays.models import RelayServer, RelayStatus
from mailplane.relays.schemas import mask_credentials
from mailplane.relays.selectors import relay_server_get, relay_server_list
from mailplane.relays.services import relay_server_update


class RelayServerSerializer(serializers.ModelSerializer[RelayServer]):
    credentials = serializers.SerializerMethodField()

    class Meta:
        model = RelayServer
        fields = [
            "id",
            "name",
            "provider",
            "status",
            "configuration",
            "credentials",
            "created_at",
            "updated_at",
        ]

    def get_credentials(self, server: RelayServer) -> dict[str, str]:
        return mask_credentials(server.credentials)


class RelayServerUpdateSerializer(serializers.Serializer[Any]):
    name = BoundedCharField(required=False, max_length=200)
    status = serializers.ChoiceField(choices=RelayStatus.choices, required=False)
    configuration = serializers.DictField(required=False)
    credentials = serializers.DictField(required=False)


class RelayServerListView(APIView):
    pagination_class = LimitOffsetPagination

    @extend_schema(responses=RelayServerSerializer(many=True))
    def get(self, request: Request) -> Response:
        servers = relay_server_list(organization=organization_of(request))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(servers, request, view=self) or []
        return paginator.get_paginated_response(RelayServerSerializer(page, many=True).data)


class RelayServerDetailView(APIView):
    @extend_schema(responses=RelayServerSerializer)
    def get(self, request: Request, pk: int) -> Response:
        server = relay_server_get(organization=organization_of(request), server_id=pk)
        return Response(RelayServerSerializer(server).data)

    @extend_schema(request=RelayServerUpdateSerializer, responses=RelayServerSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        server = relay_server_get(organization=organization_of(request), server_id=pk)
        body = RelayServerUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        server = relay_server_update(server=server, **body.validated_data)
        return Response(RelayServerSerializer(server).data)

    put = patch  # every field is optional either way
