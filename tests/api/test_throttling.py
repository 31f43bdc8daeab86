"""Wrong API keys are throttled per client address: 429 + Retry-After in the error shape.

Issue 8 defect 6 (API part): 1,000 wrong keys at 171/s all got 401. The throttle counts
in this process, or in Redis for every web process when MAILPLANE_REDIS_URL is set; it
throttles the failing address only, so a valid key from anywhere else is served.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from mailplane.api.throttling import (
    LocalAuthFailures,
    SharedAuthFailures,
    client_key,
)
from tests.support.http_client import http_call
from tests.support.live_service import free_port, live_service


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_local_counts_block_at_the_limit_and_release_when_the_window_passes():
    clock = FakeClock()
    limits = LocalAuthFailures(limit=3, window=60, clock=clock)
    for _ in range(2):
        limits.failed(client="198.51.100.7")
        clock.now += 1
    assert limits.retry_after(client="198.51.100.7") is None
    limits.failed(client="198.51.100.7")  # the third, at t=1002
    # Blocked until the oldest of the three (t=1000) leaves the window.
    assert limits.retry_after(client="198.51.100.7") == pytest.approx(58)
    assert limits.retry_after(client="198.51.100.8") is None  # another address: free
    clock.now = 1000 + 60 + 0.5  # the first failure has left the window
    assert limits.retry_after(client="198.51.100.7") is None


def test_local_counts_are_bounded_per_client():
    limits = LocalAuthFailures(limit=3, window=60, clock=FakeClock())
    for _ in range(1000):
        limits.failed(client="198.51.100.7")
    assert len(limits._failures["198.51.100.7"]) == 3


@pytest.fixture
def prefix() -> str:
    return f"test:api-auth:{secrets.token_hex(6)}"


def test_redis_counts_are_shared_between_processes(redis_url, prefix):
    one = SharedAuthFailures(redis_url, limit=3, window=60, prefix=prefix)
    two = SharedAuthFailures(redis_url, limit=3, window=60, prefix=prefix)
    try:
        one.failed(client="198.51.100.7")
        two.failed(client="198.51.100.7")
        assert one.retry_after(client="198.51.100.7") is None
        one.failed(client="198.51.100.7")
        wait = two.retry_after(client="198.51.100.7")
        assert wait is not None and 59 < wait <= 60
        assert two.retry_after(client="198.51.100.8") is None
        for _ in range(50):
            two.failed(client="198.51.100.7")
        assert one._client.zcard(f"{prefix}:198.51.100.7") == 3  # bounded memory
    finally:
        one.reset()


def test_redis_window_expires(redis_url, prefix):
    limits = SharedAuthFailures(redis_url, limit=2, window=0.3, prefix=prefix)
    try:
        limits.failed(client="c")
        limits.failed(client="c")
        assert limits.retry_after(client="c") is not None
        deadline_checks = 0
        while limits.retry_after(client="c") is not None:
            deadline_checks += 1
            assert deadline_checks < 200, "block never ended"
            time.sleep(0.01)
    finally:
        limits.reset()


def test_redis_down_falls_back_to_this_process():
    dead = f"redis://127.0.0.1:{free_port()}/0"
    limits = SharedAuthFailures(dead, limit=2, window=60, timeout=0.2)
    limits.failed(client="c")
    limits.failed(client="c")
    assert limits.retry_after(client="c") is not None


@pytest.mark.parametrize(
    ("meta", "trusted", "expected"),
    [
        ({"REMOTE_ADDR": "203.0.113.9"}, [], "203.0.113.9"),
        # Without a trusted proxy X-Forwarded-For is the client's own claim: ignored.
        ({"REMOTE_ADDR": "203.0.113.9", "HTTP_X_FORWARDED_FOR": "10.0.0.1"}, [], "203.0.113.9"),
        (
            {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 203.0.113.9"},
            ["10.0.0.2"],
            "203.0.113.9",
        ),
        (
            {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.9, 10.0.0.3"},
            ["10.0.0.2", "10.0.0.3"],
            "203.0.113.9",
        ),
        ({"REMOTE_ADDR": "2001:db8:1:2:3:4:5:6"}, [], "2001:db8:1:2::/64"),
        ({"REMOTE_ADDR": "2001:db8:1:2:ffff::1"}, [], "2001:db8:1:2::/64"),
        ({"REMOTE_ADDR": "::ffff:203.0.113.9"}, [], "203.0.113.9"),
        ({"REMOTE_ADDR": "garbage"}, [], "unknown"),
        ({}, [], "unknown"),
    ],
)
def test_client_key(settings, meta, trusted, expected):
    settings.MAILPLANE = {**settings.MAILPLANE, "TRUSTED_PROXIES": trusted}
    assert client_key(meta) == expected


def _mailplane(**overrides):
    from django.conf import settings

    return {**settings.MAILPLANE, "REDIS_URL": "", **overrides}


def _client(key: str, address: str) -> APIClient:
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def test_wrong_keys_get_429_with_retry_after_and_other_addresses_are_served(account):
    with override_settings(MAILPLANE=_mailplane(API_AUTH_FAILURES_PER_IP=5)):
        attacker = "198.51.100.66"
        for n in range(5):
            wrong = _client(f"mp_wrong{n}", attacker).get("/api/userinfo/")
            assert wrong.status_code == 401, wrong.content
        for header in ("Api-Key mp_wrong-again", f"Api-Key {account.key}"):
            client = APIClient(REMOTE_ADDR=attacker, HTTP_AUTHORIZATION=header)
            throttled = client.get("/api/userinfo/")
            assert throttled.status_code == 429, throttled.content
            retry_after = int(throttled["Retry-After"])
            assert 290 <= retry_after <= 300
            error = throttled.json()["error"]
            assert error["code"] == "throttled"
            assert error["details"] == {"retry_after": [str(retry_after)]}
        # The owner's key from another address is not locked out.
        assert _client(account.key, "198.51.100.67").get("/api/userinfo/").status_code == 200
        # Requests without a key guess nothing and are not counted or throttled.
        assert APIClient(REMOTE_ADDR="198.51.100.68").get("/api/userinfo/").status_code == 401


def test_malformed_keys_count_as_failures(account):
    with override_settings(MAILPLANE=_mailplane(API_AUTH_FAILURES_PER_IP=2)):
        for header in ("Api-Key ", "Api-Key a b"):
            client = APIClient(REMOTE_ADDR="198.51.100.70", HTTP_AUTHORIZATION=header)
            assert client.get("/api/projects/").status_code == 401
        assert _client(account.key, "198.51.100.70").get("/api/projects/").status_code == 429


def _served_key(svc) -> str:
    return svc.cli("org", "create", "--name", "Throttled", "--email", "ops@t.test").split()[-1]


@pytest.mark.timeout(120)
def test_over_http_embedded_throttle_per_process(tmp_path: Path):
    env = {"MAILPLANE_API_AUTH_FAILURES_PER_IP": "5"}
    with live_service(tmp_path, "web", env=env, serve_args=["--web-workers", "1"]) as (svc, _):
        key = _served_key(svc)
        statuses = [
            http_call(svc.base, "GET", "/api/userinfo/", key=f"mp_{n:04d}", source="127.0.0.5")
            for n in range(8)
        ]
        assert [r.status for r in statuses] == [401] * 5 + [429] * 3
        last = statuses[-1]
        assert 1 <= int(last.headers["retry-after"]) <= 300
        assert last.json()["error"]["code"] == "throttled"
        ok = http_call(svc.base, "GET", "/api/userinfo/", key=key, source="127.0.0.6")
        assert ok.status == 200, ok.body


@pytest.mark.timeout(180)
def test_over_http_redis_throttle_is_shared_by_separate_servers(tmp_path: Path, redis_url):
    """Two web services (separate processes, as on two hosts) with one Redis: wrong keys
    sent to one are counted by the other."""
    env = {"MAILPLANE_REDIS_URL": redis_url, "MAILPLANE_API_AUTH_FAILURES_PER_IP": "4"}
    attacker = f"127.0.{secrets.randbelow(200) + 20}.{secrets.randbelow(200) + 20}"
    with (
        live_service(tmp_path / "a", "web", env=env) as (first, _),
        live_service(tmp_path / "b", "web", env=env) as (second, _),
    ):
        key = _served_key(second)
        for n in range(4):
            reply = http_call(first.base, "GET", "/api/projects/", key=f"mp_{n}", source=attacker)
            assert reply.status == 401
        throttled = http_call(second.base, "GET", "/api/projects/", key=key, source=attacker)
        assert throttled.status == 429, throttled.body
        assert int(throttled.headers["retry-after"]) >= 1
        served = http_call(second.base, "GET", "/api/projects/", key=key, source="127.0.0.7")
        assert served.status == 200, served.body
