"""Reading tracking settings and tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

from mailplane.servers.models import EmailServer
from mailplane.tracking.models import ServerTracking, StreamTracking, TrackedMessage


def server_tracking_get(*, server: EmailServer) -> ServerTracking:
    """The server's tracking settings (unsaved defaults when it never had any)."""
    found = ServerTracking.objects.filter(server=server).first()
    return found if found is not None else ServerTracking(server=server)


def stream_tracking_list(*, server: EmailServer) -> dict[str, StreamTracking]:
    """The streams' overrides by stream id (only streams that have one)."""
    rows = StreamTracking.objects.filter(stream__server=server).select_related("stream")
    return {row.stream.stream_id: row for row in rows}


@dataclass(frozen=True, slots=True)
class TrackingConfig:
    """What composing a server's messages needs, read once per request or batch."""

    domain: str  # "" when there is no verified tracking domain: nothing is tracked
    opens: bool
    links: bool
    streams: dict[int, tuple[bool | None, bool | None]] = field(default_factory=dict)


def tracking_config_load(*, server: EmailServer) -> TrackingConfig:
    settings = ServerTracking.objects.filter(server=server).first()
    if settings is None or not settings.domain or settings.verified_at is None:
        return TrackingConfig(domain="", opens=False, links=False)
    streams = {
        row.stream_id: (row.track_opens, row.track_links)
        for row in StreamTracking.objects.filter(stream__server=server)
    }
    return TrackingConfig(
        domain=settings.domain,
        opens=settings.track_opens,
        links=settings.track_links,
        streams=streams,
    )


def tracked_message_find(*, key: str) -> TrackedMessage | None:
    return TrackedMessage.objects.select_related("message").filter(key=key).first()
