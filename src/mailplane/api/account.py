"""GET /api/userinfo/ and the account's API keys."""

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
from mailplane.tenancy.models import ApiKey
from mailplane.tenancy.selectors import api_key_list, organization_userinfo
from mailplane.tenancy.services import api_key_create, api_key_revoke


class OrganizationSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()


class UserInfoSerializer(serializers.Serializer[Any]):
    """The account behind the key and where its mail clients connect."""

    id = serializers.IntegerField(help_text="The account owner's user id.")
    username = serializers.CharField()
    email = serializers.EmailField()
    first_name = serializers.CharField()
    last_name = serializers.CharField()
    organization = OrganizationSerializer()
    plan = serializers.CharField()
    api_sending = serializers.BooleanField(help_text="Whether the plan allows API sending.")
    single_tenant = serializers.BooleanField(
        help_text="True once the account has dedicated SMTP/IMAP hosts."
    )
    ibx_smtp = serializers.CharField(help_text="SMTP host for this account's mailboxes.")
    ibx_imap = serializers.CharField(help_text="IMAP host for this account's mailboxes.")
    smtp_port = serializers.IntegerField(help_text="SMTP submission, implicit TLS.")
    submission_port = serializers.IntegerField(help_text="SMTP submission, STARTTLS.")
    imap_port = serializers.IntegerField(help_text="IMAP, implicit TLS.")
    mailboxes = serializers.IntegerField()
    mailboxes_limit = serializers.IntegerField(allow_null=True, help_text="null: no limit.")
    domains = serializers.IntegerField()
    projects = serializers.IntegerField()
    relay_servers = serializers.IntegerField()
    relay_servers_limit = serializers.IntegerField(allow_null=True, help_text="null: no limit.")


class UserInfoView(APIView):
    @extend_schema(operation_id="userinfo", responses=UserInfoSerializer)
    def get(self, request: Request) -> Response:
        return Response(organization_userinfo(organization=organization_of(request)))


class ApiKeySerializer(serializers.ModelSerializer[ApiKey]):
    serializer_field_mapping = BOUNDED_FIELD_MAPPING

    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]


class ApiKeyIssuedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The key itself: shown this once.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = [*ApiKeySerializer.Meta.read_only_fields, "key"]


class ApiKeyListView(APIView):
    pagination_class = LimitOffsetPagination

    @extend_schema(responses=ApiKeySerializer(many=True))
    def get(self, request: Request) -> Response:
        keys = api_key_list(organization=organization_of(request))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(keys, request, view=self) or []
        return paginator.get_paginated_response(ApiKeySerializer(page, many=True).data)

    @extend_schema(request=ApiKeySerializer, responses={201: ApiKeyIssuedSerializer})
    def post(self, request: Request) -> Response:
        body = ApiKeySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        issued = api_key_create(organization=organization_of(request), **body.validated_data)
        shown: dict[str, Any] = dict(ApiKeySerializer(issued.api_key).data)
        shown["key"] = issued.secret  # shown once, never again
        return Response(shown, status=status.HTTP_201_CREATED)


class ApiKeyDetailView(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        api_key_revoke(organization=organization_of(request), key_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
