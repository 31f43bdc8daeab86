"""Reading Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from mailplane.dnsproviders.http import retry_after_seconds

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _reply(value: str | None) -> httpx.Response:
    return httpx.Response(429, headers={} if value is None else {"Retry-After": value})


def test_seconds_and_dates():
    assert retry_after_seconds(_reply("120"), now=NOW) == 120.0
    assert retry_after_seconds(_reply("Sun, 01 Mar 2026 12:00:30 GMT"), now=NOW) == 30.0
    assert retry_after_seconds(_reply("Sun, 01 Mar 2026 11:00:00 GMT"), now=NOW) == 0.0  # past


def test_absent_or_unreadable_is_none():
    for value in (None, "", "soon", "-5", "1.5", "Sun, 99 Foo 2026"):
        assert retry_after_seconds(_reply(value), now=NOW) is None, value
