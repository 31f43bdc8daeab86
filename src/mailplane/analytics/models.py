"""Pre-aggregated counts, written only by consumer.py and read by selectors.py.

Every table is keyed so that a stats request reads an index range of one server's rows
(server first, then the time bucket), never the event stream.
"""

from __future__ import annotations

from django.db import models

from mailplane.servers.models import EmailServer, MessageStream


class AnalyticsCursor(models.Model):
    """The consumer's position in the event stream: the seq of the last event counted.
    One row, moved in the transaction that adds that event's counts."""

    name = models.CharField(max_length=50, unique=True)
    seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} at {self.seq}"


class StatCounter(models.Model):
    """How many events of one metric (metrics.py) one server's stream had in one UTC hour,
    for one tag: `tag=""` counts every message, a tag's row only the messages carrying it
    (a message with two tags counts once in each, and once in "")."""

    # No index of its own: the unique constraint below starts with it.
    server = models.ForeignKey(
        EmailServer, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    stream = models.ForeignKey(MessageStream, on_delete=models.CASCADE, related_name="+")
    tag = models.CharField(max_length=100, blank=True)
    hour = models.DateTimeField()  # the start of the UTC hour
    metric = models.CharField(max_length=30)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # Also the read path: one server, one tag, a range of hours.
            models.UniqueConstraint(
                fields=["server", "tag", "hour", "stream", "metric"], name="one_stat_counter"
            )
        ]

    def __str__(self) -> str:
        return f"{self.metric}={self.count} at {self.hour:%Y-%m-%dT%H} on server {self.server_id}"


class LatencyHistogram(models.Model):
    """Deliveries of one server on one UTC day whose queued → delivered time fell in one
    bucket (metrics.LATENCY_BOUNDS): percentiles without reading a single event."""

    # No index of its own: the unique constraint below starts with it.
    server = models.ForeignKey(
        EmailServer, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    day = models.DateField()
    bucket = models.PositiveSmallIntegerField()
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["server", "day", "bucket"], name="one_latency_bucket")
        ]

    def __str__(self) -> str:
        return f"bucket {self.bucket}={self.count} on {self.day} for server {self.server_id}"


class BounceDomainCount(models.Model):
    """Bounces of one server on one UTC day to one recipient domain."""

    # No index of its own: the unique constraint below starts with it.
    server = models.ForeignKey(
        EmailServer, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    day = models.DateField()
    domain = models.CharField(max_length=253)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["server", "day", "domain"], name="one_bounce_domain")
        ]

    def __str__(self) -> str:
        return f"{self.domain}={self.count} on {self.day} for server {self.server_id}"
