"""GET /api/: where everything is (the banner and the README point here first).

Public, like the docs: it lists paths, not data, so a new user's first request answers
without a key and says how to get one.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

# (name, path, what it is): the collections a client starts from.
RESOURCES = [
    ("userinfo", "/api/userinfo/", "the account: plan, limits, SMTP/IMAP hosts and ports"),
    ("status", "/api/status/", "the account's cell: its mail services up or down, its queue"),
    ("api_keys", "/api/api-keys/", "API keys (a new key is shown once)"),
    ("relay_servers", "/api/relay-servers/", "relay servers that send the account's mail"),
    ("projects", "/api/projects/", "projects grouping domains and mailboxes"),
    ("domains", "/api/domains/", "sending domains, their DNS records and verification"),
    ("dns_providers", "/api/dns-providers/", "Cloudflare/GoDaddy connections that publish DNS"),
    ("mailboxes", "/api/mailboxes/", "mailboxes (POST answers a task id)"),
    ("mailboxes_bulk", "/api/mailboxes/bulk/", "POST a CSV to create many mailboxes"),
    ("tasks", "/api/tasks/{task_id}/", "the outcome of an asynchronous request"),
    ("messages", "/api/messages/", "outbound messages, recipients and delivery events"),
    ("exports", "/mailbox/download/{layout}/", "CSV exports for outreach tools"),
]
DOCS = {
    "docs": "/api/docs/",
    "redoc": "/api/redoc/",
    "schema": "/api/schema/",
}


class _ResourceSerializer(serializers.Serializer[Any]):
    url = serializers.CharField(help_text="absolute URL, or a template for per-id paths")
    description = serializers.CharField()


class ApiIndexSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    authentication = serializers.CharField(help_text="how to send the API key")
    resources = serializers.DictField(child=_ResourceSerializer())
    docs = serializers.URLField(help_text="Swagger UI")
    redoc = serializers.URLField()
    schema = serializers.URLField(help_text="this OpenAPI document")


class ApiIndexView(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(operation_id="api_index", auth=[], responses=ApiIndexSerializer)
    def get(self, request: Request) -> Response:
        def url(path: str) -> str:
            return request.build_absolute_uri(path) if "{" not in path else path

        return Response(
            {
                "name": "Mailplane API",
                "authentication": "send `Authorization: Api-Key <key>` "
                "(`mailplane org create` prints an account's first key)",
                "resources": {
                    name: {"url": url(path), "description": text} for name, path, text in RESOURCES
                },
                **{name: request.build_absolute_uri(path) for name, path in DOCS.items()},
            }
        )
