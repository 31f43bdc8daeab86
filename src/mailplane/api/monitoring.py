"""GET /metrics (operator, Prometheus) and GET /api/status/ (an account's view of its cell)."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane import config
from mailplane.api.authentication import organization_of
from mailplane.api.throttling import client_address
from mailplane.monitoring.metrics import cell_name, metrics_render
from mailplane.monitoring.probes import probes_recent
from mailplane.monitoring.selectors import queue_depth


def _loopback(address: str) -> bool:
    if not address:
        return False
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 (Python < 3.13 calls it not loopback)
    return ip.is_loopback


def _metrics_refusal(request: HttpRequest) -> JsonResponse | None:
    """Who may scrape: the bearer of MAILPLANE_METRICS_TOKEN; without one, a loopback
    client of an embedded install. A production install without a token answers 403:
    behind a reverse proxy every client would look like loopback."""
    token = settings.MAILPLANE["METRICS_TOKEN"]
    if token:
        presented = request.headers.get("Authorization", "")
        scheme, _, credential = presented.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode("utf-8", "replace"), token.encode()
        ):
            return None
        refusal = JsonResponse({"detail": "a valid bearer token is required"}, status=401)
        refusal["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refusal
    if not config.embedded_mode():
        return JsonResponse(
            {"detail": "set MAILPLANE_METRICS_TOKEN to enable /metrics"}, status=403
        )
    if not _loopback(client_address(request.META)):
        return JsonResponse(
            {"detail": "/metrics answers loopback clients only without MAILPLANE_METRICS_TOKEN"},
            status=403,
        )
    return None


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    refusal = _metrics_refusal(request)
    if refusal is not None:
        return refusal
    return HttpResponse(metrics_render(), content_type=CONTENT_TYPE_LATEST)


class ServiceStatusSerializer(serializers.Serializer[Any]):
    service = serializers.CharField()
    port = serializers.IntegerField()
    up = serializers.BooleanField()
    latency_ms = serializers.FloatField()


class QueueStatusSerializer(serializers.Serializer[Any]):
    queued = serializers.IntegerField()
    deferred = serializers.IntegerField()
    held = serializers.IntegerField()
    due = serializers.IntegerField()
    in_flight = serializers.IntegerField()
    oldest_due_seconds = serializers.FloatField()


class StatusSerializer(serializers.Serializer[Any]):
    cell = serializers.CharField(help_text="The infrastructure cell serving this account.")
    services = ServiceStatusSerializer(many=True)
    queue = QueueStatusSerializer(help_text="This account's outbound mail still waiting.")


class StatusView(APIView):
    """What a status page shows: each mail service of the account's cell (probed at most
    every few seconds, whoever asks) and the account's own queue, never another's."""

    @extend_schema(operation_id="status", responses=StatusSerializer)
    def get(self, request: Request) -> Response:
        depth = queue_depth(organization=organization_of(request))
        return Response(
            {
                "cell": cell_name(),
                "services": [
                    {
                        "service": r.service,
                        "port": r.port,
                        "up": r.up,
                        "latency_ms": round(r.seconds * 1000, 1),
                    }
                    for r in probes_recent.get()
                ],
                "queue": {
                    **depth.waiting,
                    "due": depth.due,
                    "in_flight": depth.in_flight,
                    "oldest_due_seconds": round(depth.oldest_due_seconds, 1),
                },
            }
        )
