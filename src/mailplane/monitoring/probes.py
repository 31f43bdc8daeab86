"""Service probes: connect to each mail listener and wait for its greeting.

A probe does what a client does first (RFC 5321 §4.2: SMTP greets with 220; RFC 9051
§7.1: IMAP with an untagged OK), over TLS on the implicit-TLS ports, so a listener that
accepts connections but never answers counts as down. Certificates are not checked: a probe
asks whether the service answers, not whether a client would trust it (embedded mode
serves a self-signed pair). Each probe has its own deadline and all run concurrently, so a
status request takes at most one timeout whatever is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from dataclasses import dataclass

from django.conf import settings

# A greeting line is short; reading more than this is a misbehaving peer, not a greeting.
_GREETING_MAX = 512


@dataclass(frozen=True)
class Probe:
    service: str
    host: str
    port: int
    tls: bool
    greeting: bytes  # what the first line must start with


@dataclass(frozen=True)
class ProbeResult:
    service: str
    port: int
    up: bool
    seconds: float
    detail: str


def _connect_host(bind: str) -> str:
    """Where to reach a listener bound to `bind`: a wildcard is reached on loopback."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(bind, bind)


def probes_configured() -> list[Probe]:
    """The listeners this host's `mailplane serve` starts, from the same settings."""
    conf = settings.MAILPLANE
    smtp = _connect_host(conf["SMTP_BIND"])
    imap = _connect_host(conf["IMAP_BIND"])
    return [
        Probe("smtp-submission-tls", smtp, conf["SMTP_PORT"], True, b"220"),
        Probe("smtp-submission", smtp, conf["SUBMISSION_PORT"], False, b"220"),
        Probe("smtp-mx", smtp, conf["MX_PORT"], False, b"220"),
        Probe("imap-tls", imap, conf["IMAP_PORT"], True, b"* OK"),
        Probe("imap", imap, conf["IMAP_STARTTLS_PORT"], False, b"* OK"),
    ]


def _client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def probe(target: Probe, *, timeout: float) -> ProbeResult:
    """Connect, read the greeting line, leave without a command (the listeners count an
    unfinished session as nothing more than a closed connection)."""
    started = time.monotonic()

    def result(up: bool, detail: str) -> ProbeResult:
        return ProbeResult(target.service, target.port, up, time.monotonic() - started, detail)

    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                target.host,
                target.port,
                ssl=_client_tls() if target.tls else None,
                server_hostname=target.host if target.tls else None,
                limit=_GREETING_MAX,
            )
            try:
                line = await reader.readline()
            finally:
                writer.close()
                # the peer's side of the close is not the probe's concern
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except TimeoutError:
        return result(False, f"no greeting within {timeout:g} s")
    except (OSError, ssl.SSLError, ValueError) as exc:  # ValueError: a line over the limit
        return result(False, f"{type(exc).__name__}: {exc}"[:200])
    if not line.startswith(target.greeting):
        return result(False, f"unexpected greeting {line[:80]!r}")
    return result(True, line.decode("ascii", "replace").strip()[:200])


async def _probe_each(targets: list[Probe], timeout: float) -> list[ProbeResult]:
    return list(await asyncio.gather(*(probe(t, timeout=timeout) for t in targets)))


def probe_all(targets: list[Probe] | None = None, *, timeout: float = 2.0) -> list[ProbeResult]:
    """Probe every target concurrently, from synchronous code (a view, the CLI)."""
    return asyncio.run(_probe_each(targets or probes_configured(), timeout))


class _Cached:
    """The last probe round, kept for a few seconds: a status page that is asked often
    (or hammered) opens a handful of connections per interval, not per request."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = 0.0
        self._results: list[ProbeResult] = []

    def get(self) -> list[ProbeResult]:
        with self._lock:  # one round at a time; the others wait and share it
            if time.monotonic() - self._at > self.ttl or not self._results:
                self._results = probe_all()
                self._at = time.monotonic()
            return self._results

    def clear(self) -> None:
        with self._lock:
            self._at = 0.0
            self._results = []


probes_recent = _Cached(ttl=5.0)
