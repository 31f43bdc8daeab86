"""/api/reputation-notices/: what the account was told about its servers' and keys'
reputation (paused because of a bounce or complaint rate, and why; resumed)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.reputation.models import NoticeKind
from mailplane.reputation.selectors import reputation_notice_list


class ReputationNoticeSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    server = serializers.IntegerField(source="server_id")
    server_key = serializers.IntegerField(source="server_key_id", allow_null=True)
    kind = serializers.ChoiceField(choices=NoticeKind.choices)
    message = serializers.CharField()
    created_at = serializers.DateTimeField()


class ReputationNoticeListView(APIView):
    pagination_class = LimitOffsetPagination

    @extend_schema(responses=ReputationNoticeSerializer(many=True))
    def get(self, request: Request) -> Response:
        notices = reputation_notice_list(organization=organization_of(request))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(notices, request, view=self) or []
        return paginator.get_paginated_response(ReputationNoticeSerializer(page, many=True).data)
