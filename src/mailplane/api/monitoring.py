"""GET /metrics (operator, Prometheus) and GET /api/status/ (an account's view of its cell)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.errors import domain_errors_rendered
from mailplane.api.throttling import client_address
from mailplane.monitoring.access import metrics_access_check
from mailplane.monitoring.metrics import cell_name, metrics_render
from mailplane.monitoring.probes import probes_recent
from mailplane.monitoring.selectors import queue_depth


@require_GET
@domain_errors_rendered
def metrics_view(request: HttpRequest) -> HttpResponse:
    metrics_access_check(
        authorization=request.headers.get("Authorization", ""),
        client_ip=client_address(request.META),
    )
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
