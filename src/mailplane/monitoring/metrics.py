"""`/metrics` in the Prometheus text exposition format.

Gathered at scrape time by one collector (prometheus_client's custom-collector pattern),
not kept in process counters: the figures live in the database and the listeners, so any
API process answers for the whole cell and a restart loses nothing. Every family carries a
`cell` label so one Prometheus can scrape several cells.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mailplane.monitoring.probes import probes_recent
from mailplane.monitoring.selectors import event_stream_head, job_backlog, queue_depth


def cell_name() -> str:
    return str(settings.MAILPLANE["CELL"])


class CellCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        cell = cell_name()
        up = GaugeMetricFamily(
            "mailplane_service_up",
            "1 if the listener answered with its greeting.",
            labels=["cell", "service", "port"],
        )
        latency = GaugeMetricFamily(
            "mailplane_service_probe_seconds",
            "Time to the greeting (or to giving up).",
            labels=["cell", "service", "port"],
        )
        for result in probes_recent.get():
            labels = [cell, result.service, str(result.port)]
            up.add_metric(labels, 1.0 if result.up else 0.0)
            latency.add_metric(labels, result.seconds)
        yield up
        yield latency

        depth = queue_depth()
        waiting = GaugeMetricFamily(
            "mailplane_queue_recipients",
            "Recipients waiting in the outbound queue, by status.",
            labels=["cell", "status"],
        )
        for status, count in depth.waiting.items():
            waiting.add_metric([cell, status], count)
        yield waiting
        yield _gauge(
            "mailplane_queue_due_recipients", "Due recipients no worker holds yet.", cell, depth.due
        )
        yield _gauge(
            "mailplane_queue_in_flight_recipients",
            "Recipients a delivery worker holds under a live lease.",
            cell,
            depth.in_flight,
        )
        yield _gauge(
            "mailplane_queue_oldest_due_seconds",
            "Age of the longest-waiting unclaimed due recipient.",
            cell,
            depth.oldest_due_seconds,
        )

        jobs = job_backlog()
        yield _gauge(
            "mailplane_jobs_pending",
            "Jobs (mailbox creation, exports) not finished.",
            cell,
            jobs.pending,
        )
        yield _gauge(
            "mailplane_jobs_oldest_pending_seconds",
            "Age of the oldest unfinished job.",
            cell,
            jobs.oldest_pending_seconds,
        )
        yield _gauge(
            "mailplane_events_last_sequence",
            "The last delivery event number handed out.",
            cell,
            event_stream_head(),
        )


def _gauge(name: str, documentation: str, cell: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["cell"])
    family.add_metric([cell], value)
    return family


def metrics_render() -> bytes:
    """One scrape: a private registry, so nothing else registered in the process leaks in."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CellCollector())
    return generate_latest(registry)
