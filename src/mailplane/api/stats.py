"""Stats of an email server (analytics/): counts per day or hour, latency percentiles and
the domains that bounce most, read from counters the analytics consumer keeps (no
events scanned per request).

Two doors to the same selectors, as for webhooks: an account key under
/api/servers/{id}/stats/…, and a server's `full` key under /api/server/stats/…
(send-only keys: 403). Another account's server is not found.

Query parameters: `from` and `to` are ISO 8601 dates or date-times (UTC unless an offset
is given), read as the messages list reads them: `to` is excluded (a date: its midnight),
and both are rounded out to whole buckets. Windows are
bounded (366 days by day, 31 by hour) so every answer is a bounded read. A parameter
given twice, malformed or out of range is a 400 naming it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from mailplane.analytics.metrics import BOUNCE_CLASSES, METRICS
from mailplane.analytics.selectors import (
    DAY,
    HOUR,
    Window,
    stats_bounce_domains,
    stats_latency,
    stats_series,
    stats_window,
)
from mailplane.api.fields import BoundedCharField
from mailplane.api.schema import error
from mailplane.api.server_auth import (
    AccountServerDoor,
    KeyServerDoor,
    ServerDoor,
)
from mailplane.api.server_messages import FilterSchema
from mailplane.core.errors import ValidationFailed

WHEN_MAX = 40  # characters: the longest ISO 8601 date-time with fraction and offset


class WhenField(serializers.Field):
    """An ISO 8601 date (`2026-12-04`) or date-time (`2026-12-04T10:00:00Z`)."""

    def to_internal_value(self, data: Any) -> datetime:
        if not isinstance(data, str) or len(data) > WHEN_MAX:
            raise serializers.ValidationError("not an ISO 8601 date or date-time")
        try:
            at = parse_datetime(data)  # a bare date too: its midnight
            if at is None:
                day = parse_date(data)  # the basic form, 20261204
                if day is None:
                    raise serializers.ValidationError("not an ISO 8601 date or date-time")
                at = datetime(day.year, day.month, day.day)
            if timezone.is_naive(at):
                at = at.replace(tzinfo=UTC)
            return at.astimezone(UTC)
        except (ValueError, OverflowError):  # well-formed, but no such date or offset
            raise serializers.ValidationError("no such date or time") from None

    def to_representation(self, value: Any) -> Any:
        return value


class _RangeQuery(serializers.Serializer[Any]):
    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        fields["from"] = WhenField(required=False)  # `from`: a keyword in Python
        fields["to"] = WhenField(required=False)
        return fields


class StatsQuery(_RangeQuery):
    group_by = serializers.ChoiceField(choices=[DAY, HOUR], required=False, default=DAY)
    stream = BoundedCharField(max_length=50, required=False)
    tag = BoundedCharField(max_length=100, required=False)


class BounceDomainsQuery(_RangeQuery):
    limit = serializers.IntegerField(min_value=1, max_value=100, required=False, default=10)


def _query(request: Request, serializer: type[serializers.Serializer[Any]]) -> dict[str, Any]:
    """The query's parameters, each once ("" reads as absent), validated."""
    data: dict[str, str] = {}
    for name in request.query_params:
        values = request.query_params.getlist(name)
        if len(values) > 1:
            raise ValidationFailed.on(name, "give this parameter once")
        if values[0] != "":
            data[name] = values[0]
    checked = serializer(data=data)
    checked.is_valid(raise_exception=True)
    return dict(checked.validated_data)


def _window(found: dict[str, Any], group_by: str) -> Window:
    return stats_window(
        start=found.get("from"), end=found.get("to"), group_by=group_by, now=timezone.now()
    )


# --- the schema of the answers and of the query


BouncedByClassSerializer = type(
    "BouncedByClassSerializer",
    (serializers.Serializer,),
    {c: serializers.IntegerField() for c in BOUNCE_CLASSES},
)
StatsCountsSerializer = type(
    "StatsCountsSerializer",
    (serializers.Serializer,),
    {
        **{m: serializers.IntegerField() for m in METRICS},
        "bounced_by_class": BouncedByClassSerializer(),
        "__doc__": "Events counted: `sent` is recipients queued, `rejected` recipients that "
        "could not be attempted; `bounced_by_class` splits `bounced` by bounce class.",
    },
)


class StatsPointSerializer(StatsCountsSerializer):  # type: ignore[misc,valid-type]
    start = serializers.DateTimeField(help_text="The bucket's start (UTC).")


class StatsRatesSerializer(serializers.Serializer[Any]):
    delivery_rate = serializers.FloatField(allow_null=True, help_text="delivered / sent")
    bounce_rate = serializers.FloatField(allow_null=True, help_text="bounced / sent")
    complaint_rate = serializers.FloatField(allow_null=True, help_text="complained / delivered")


class _WindowSerializer(serializers.Serializer[Any]):
    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField(help_text="The window's start (UTC).")
        fields["to"] = serializers.DateTimeField(help_text="Its end, excluded.")
        return fields


class StatsSerializer(_WindowSerializer):
    group_by = serializers.ChoiceField(choices=[DAY, HOUR])
    stream = serializers.CharField(allow_null=True)
    tag = serializers.CharField(allow_null=True)
    series = StatsPointSerializer(many=True)
    totals = StatsCountsSerializer()
    rates = StatsRatesSerializer()


class _PercentilesSerializer(serializers.Serializer[Any]):
    count = serializers.IntegerField(help_text="Deliveries measured.")
    p50 = serializers.FloatField(allow_null=True, help_text="Seconds, queued → delivered.")
    p95 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)


class LatencyDaySerializer(_PercentilesSerializer):
    day = serializers.DateField()


class LatencyBucketSerializer(serializers.Serializer[Any]):
    le = serializers.FloatField(help_text="The bucket's upper bound, seconds.")
    count = serializers.IntegerField()


class LatencySerializer(_WindowSerializer, _PercentilesSerializer):
    """Percentiles are upper bounds within a factor of √2 (fixed logarithmic buckets)."""

    days = LatencyDaySerializer(many=True)
    buckets = LatencyBucketSerializer(many=True)


class BounceDomainSerializer(serializers.Serializer[Any]):
    domain = serializers.CharField()
    bounced = serializers.IntegerField()


class BounceDomainsSerializer(_WindowSerializer):
    domains = BounceDomainSerializer(many=True)


def _when(name: str, text: str) -> OpenApiParameter:
    return OpenApiParameter(name, OpenApiTypes.STR, description=text)


RANGE_PARAMETERS = [
    _when("from", "ISO 8601 date or date-time (UTC unless an offset is given)."),
    _when("to", "The same form, excluded (a date: its midnight); default now."),
]
STATS_PARAMETERS = [
    *RANGE_PARAMETERS,
    OpenApiParameter(
        "group_by",
        OpenApiTypes.STR,
        enum=[DAY, HOUR],
        description="Default day (≤ 366 days); hour: ≤ 31 days.",
    ),
    OpenApiParameter("stream", OpenApiTypes.STR, description="Only this stream id."),
    OpenApiParameter("tag", OpenApiTypes.STR, description="Only messages with this tag."),
]
DOMAIN_PARAMETERS = [
    *RANGE_PARAMETERS,
    OpenApiParameter("limit", OpenApiTypes.INT, description="Domains listed: 1 to 100 (10)."),
]
SEND_ONLY = error("A send-only server key.")


# --- the operations, each written once; the two doors below say how to find the server.


class _Scoped(ServerDoor):
    schema = FilterSchema()

    def stats(self, request: Request, pk: int | None) -> Response:
        found = _query(request, StatsQuery)
        window = _window(found, found["group_by"])
        return Response(
            stats_series(
                server=self.server(request, pk),
                window=window,
                stream=found.get("stream"),
                tag=found.get("tag"),
            )
        )

    def latency(self, request: Request, pk: int | None) -> Response:
        window = _window(_query(request, _RangeQuery), DAY)
        return Response(stats_latency(server=self.server(request, pk), window=window))

    def bounce_domains(self, request: Request, pk: int | None) -> Response:
        found = _query(request, BounceDomainsQuery)
        window = _window(found, DAY)
        return Response(
            stats_bounce_domains(
                server=self.server(request, pk), window=window, limit=found["limit"]
            )
        )


class _AccountScope(AccountServerDoor, _Scoped):
    pass


class _ServerScope(KeyServerDoor, _Scoped):
    pass


class ServerStatsView(_AccountScope):
    @extend_schema(parameters=STATS_PARAMETERS, responses=StatsSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return self.stats(request, pk)


class ServerStatsLatencyView(_AccountScope):
    @extend_schema(parameters=RANGE_PARAMETERS, responses=LatencySerializer)
    def get(self, request: Request, pk: int) -> Response:
        return self.latency(request, pk)


class ServerStatsBounceDomainsView(_AccountScope):
    @extend_schema(parameters=DOMAIN_PARAMETERS, responses=BounceDomainsSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return self.bounce_domains(request, pk)


class SelfStatsView(_ServerScope):
    @extend_schema(
        operation_id="server_self_stats",
        parameters=STATS_PARAMETERS,
        responses={200: StatsSerializer, 403: SEND_ONLY},
    )
    def get(self, request: Request) -> Response:
        return self.stats(request, None)


class SelfStatsLatencyView(_ServerScope):
    @extend_schema(
        operation_id="server_self_stats_latency",
        parameters=RANGE_PARAMETERS,
        responses={200: LatencySerializer, 403: SEND_ONLY},
    )
    def get(self, request: Request) -> Response:
        return self.latency(request, None)


class SelfStatsBounceDomainsView(_ServerScope):
    @extend_schema(
        operation_id="server_self_stats_bounce_domains",
        parameters=DOMAIN_PARAMETERS,
        responses={200: BounceDomainsSerializer, 403: SEND_ONLY},
    )
    def get(self, request: Request) -> Response:
        return self.bounce_domains(request, None)
