"""Probes against real listeners (our SMTP and IMAP servers) and against misbehaving
peers on loopback sockets: each verdict within its deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from mailplane.monitoring.probes import Probe, _Cached, probe_all, probes_configured
from tests.imap.conftest import LiveImap, imap_server  # noqa: F401  (fixture)
from tests.smtp.conftest import Listeners, listeners, tls_pair  # noqa: F401  (fixtures)
from tests.support.live_service import free_port


def test_every_listener_answers_with_its_greeting(
    listeners: Listeners,  # noqa: F811
    imap_server: LiveImap,  # noqa: F811
) -> None:
    targets = [
        Probe("smtp-submission-tls", listeners.host, listeners.smtps, True, b"220"),
        Probe("smtp-submission", listeners.host, listeners.submission, False, b"220"),
        Probe("smtp-mx", listeners.host, listeners.mx, False, b"220"),
        Probe("imap-tls", imap_server.host, imap_server.tls_port, True, b"* OK"),
        Probe("imap", imap_server.host, imap_server.starttls_port, False, b"* OK"),
    ]
    results = probe_all(targets, timeout=5)
    assert [r.service for r in results] == [t.service for t in targets]
    for result in results:
        assert result.up, result
        assert result.detail.startswith(("220", "* OK")), result
        assert 0 < result.seconds < 5


@contextmanager
def _peer(behaviour: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback listener that treats each connection with `behaviour`."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(conn)
            threading.Thread(target=behaviour, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


def _silent(conn: socket.socket) -> None:
    """Accepts and never speaks (a wedged process still holding its socket)."""


def _speaks(data: bytes) -> Callable[[socket.socket], None]:
    def behaviour(conn: socket.socket) -> None:
        with suppress(OSError):  # the probe may hang up first
            conn.sendall(data)

    return behaviour


def _one(port: int, *, tls: bool = False, timeout: float = 0.5) -> tuple[bool, str, float]:
    started = time.monotonic()
    [result] = probe_all([Probe("x", "127.0.0.1", port, tls, b"220")], timeout=timeout)
    return result.up, result.detail, time.monotonic() - started


def test_a_listener_that_never_greets_is_down_within_the_timeout() -> None:
    with _peer(_silent) as port:
        up, detail, took = _one(port)
    assert not up
    assert "no greeting within 0.5 s" in detail
    assert took < 2


def test_a_closed_port_is_down() -> None:
    up, detail, took = _one(free_port())
    assert not up
    assert "ConnectionRefused" in detail
    assert took < 2


def test_another_protocol_on_the_port_is_down() -> None:
    with _peer(_speaks(b"HTTP/1.1 400 Bad Request\r\n\r\n")) as port:
        up, detail, _ = _one(port)
    assert not up
    assert "unexpected greeting" in detail and "HTTP/1.1" in detail


def test_an_endless_greeting_is_cut_off_not_buffered() -> None:
    with _peer(_speaks(b"220 " + b"x" * 1_000_000)) as port:
        up, detail, took = _one(port, timeout=3)
    assert not up
    assert "limit" in detail  # refused at the greeting limit, not after a megabyte
    assert took < 3


def test_a_plaintext_peer_on_a_tls_port_is_down() -> None:
    with _peer(_speaks(b"220 hello in plaintext\r\n")) as port:
        up, detail, _ = _one(port, tls=True)
    assert not up
    assert "SSL" in detail or "Error" in detail


def test_probes_follow_the_listener_settings(settings: Any) -> None:
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "SMTP_BIND": "0.0.0.0",
        "IMAP_BIND": "127.0.0.9",
        "SMTP_PORT": 1465,
        "SUBMISSION_PORT": 1587,
        "MX_PORT": 1025,
        "IMAP_PORT": 1993,
        "IMAP_STARTTLS_PORT": 1143,
    }
    got = {(p.service, p.host, p.port, p.tls) for p in probes_configured()}
    assert got == {
        ("smtp-submission-tls", "127.0.0.1", 1465, True),
        ("smtp-submission", "127.0.0.1", 1587, False),
        ("smtp-mx", "127.0.0.1", 1025, False),
        ("imap-tls", "127.0.0.9", 1993, True),
        ("imap", "127.0.0.9", 1143, False),
    }


def test_recent_results_are_shared_within_their_lifetime(
    settings: Any,
) -> None:
    """A hammered status page opens one connection per listener per interval."""
    connections: list[int] = []

    def count(conn: socket.socket) -> None:
        connections.append(1)
        _speaks(b"220 ok\r\n")(conn)

    with _peer(count) as port:
        conf = settings.MAILPLANE
        settings.MAILPLANE = {
            **conf,
            "SMTP_BIND": "127.0.0.1",
            "IMAP_BIND": "127.0.0.1",
            **{k: port for k in ("SMTP_PORT", "SUBMISSION_PORT", "MX_PORT")},
            **{k: free_port() for k in ("IMAP_PORT", "IMAP_STARTTLS_PORT")},
        }
        cache = _Cached(ttl=60)
        first = cache.get()
        for _ in range(20):
            assert cache.get() is first
        deadline = time.monotonic() + 5
        while len(connections) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(connections) == 3  # the three SMTP probes of the one round
        cache.clear()
        cache.get()
        deadline = time.monotonic() + 5
        while len(connections) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(connections) == 6
