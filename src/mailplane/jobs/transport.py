"""kombu's file-system transport (the embedded broker), made to stop promptly.

Celery's worker loop for transports without an event loop (`synloop`) calls
`drain_events(timeout=2.0)` and checks for a shutdown only between calls; the virtual
transport keeps polling until that timeout passes, so a SIGTERM waited up to 2 s before the
worker even began to stop. Capping each drain at DRAIN_SECONDS lets it notice within that,
and costs nothing: messages are still picked up every `polling_interval`.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.filesystem import Transport

DRAIN_SECONDS = 0.2


class FilesystemTransport(Transport):
    # kombu's stubs give the base and virtual transports different signatures.
    def drain_events(self, connection: Any, timeout: Any = None) -> Any:  # type: ignore[override]
        if timeout is not None:  # None means "block until a message": keep that
            timeout = min(timeout, DRAIN_SECONDS)
        return super().drain_events(connection, timeout=timeout)


def install() -> None:
    """`filesystem://` URLs resolve to this class from here on (kombu's alias table)."""
    TRANSPORT_ALIASES["filesystem"] = f"{__name__}:FilesystemTransport"
