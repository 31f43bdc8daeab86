"""Request quotas per credential and per client address (api/ratelimits.py): 429 with
Retry-After past either, the IETF RateLimit-Policy / RateLimit fields on every answer,
counted per process in embedded mode and in Redis for every process otherwise."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import override_settings
from rest_framework.test import APIClient

from mailplane.api.ratelimits import LocalCounters, Quota, SharedCounters
from tests.support.fixtures import Account
from tests.support.http_client import http_call
from tests.support.live_service import free_port, live_service


class FakeClock:
    def __init__(self) -> None:
        self.now = 6000.0  # a window boundary for windows of 60 s

    def __call__(self) -> float:
        return self.now


def test_fixed_window_counts_reset_and_remaining() -> None:
    clock = FakeClock()
    counters = LocalCounters(clock=clock)
    quota = Quota("key", 3, 60)
    clock.now += 18
    spent = [counters.spend([(quota, "k1")])[0] for _ in range(4)]
    assert [s.used for s in spent] == [1, 2, 3, 4]
    assert [s.remaining for s in spent] == [2, 1, 0, 0]
    assert [s.exceeded for s in spent] == [False, False, False, True]
    assert spent[-1].reset == pytest.approx(42)
    assert counters.spend([(quota, "k2")])[0].used == 1  # another partition: its own count
    clock.now = 6060.0  # the next window
    assert counters.spend([(quota, "k1")])[0].used == 1


def test_local_counters_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mailplane.api.ratelimits._MAX_LOCAL_COUNTERS", 100)
    clock = FakeClock()
    counters = LocalCounters(clock=clock)
    quota = Quota("ip", 5, 60)
    for n in range(1_000):
        counters.spend([(quota, f"198.51.100.{n}")])
    assert len(counters._counts) <= 100


@pytest.mark.parametrize("text", ["ten/60", "-1/60", "5/0", "5/x"])
def test_a_malformed_quota_setting_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Quota.parse("key", text)


def test_no_quota_setting_means_no_limit() -> None:
    assert Quota.parse("key", "0") is None
    assert Quota.parse("key", "") is None
    assert Quota.parse("key", "100") == Quota("key", 100, 60)


def test_redis_counts_are_shared_between_processes(redis_url: str) -> None:
    prefix = f"test:api-rate:{secrets.token_hex(6)}"
    one = SharedCounters(redis_url, prefix=prefix)
    two = SharedCounters(redis_url, prefix=prefix)
    quota = Quota("key", 3, 60)
    try:
        assert one.spend([(quota, "k")])[0].used == 1
        assert two.spend([(quota, "k")])[0].used == 2
        both = one.spend([(quota, "k"), (Quota("ip", 10, 60), "198.51.100.1")])
        assert [s.used for s in both] == [3, 1]
        assert 0 < both[0].reset <= 60
        over = two.spend([(quota, "k")])[0]
        assert over.exceeded and over.remaining == 0
        # Every counter expires with its window: nothing lives on in Redis.
        keys = list(one._client.scan_iter(match=f"{prefix}:*"))
        assert keys and all(0 < one._client.pttl(k) <= 60_000 for k in keys)
    finally:
        one.reset()


def test_redis_down_counts_in_this_process(caplog: pytest.LogCaptureFixture) -> None:
    counters = SharedCounters(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    quota = Quota("key", 2, 60)
    with caplog.at_level(logging.WARNING, logger="mailplane.api.ratelimits"):
        used = [counters.spend([(quota, "k")])[0].used for _ in range(3)]
    assert used == [1, 2, 3]
    warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1  # said once, not per request


# The middleware tests count against the real clock in windows of an hour: a test whose
# few requests straddled a window's end would see the count start over. They begin with
# at least WINDOW_MARGIN seconds left in the window (waiting out the rare end first).
WINDOW = 3600
WINDOW_MARGIN = 20


def clear_of_window_end(now: Callable[[], float] = time.time) -> None:
    deadline = time.monotonic() + WINDOW_MARGIN + 5
    while now() % WINDOW > WINDOW - WINDOW_MARGIN:
        assert time.monotonic() < deadline, "the window never turned"
        time.sleep(0.2)


def _limits(**overrides: Any) -> Any:
    from django.conf import settings

    clear_of_window_end()
    return override_settings(
        MAILPLANE={
            **settings.MAILPLANE,
            "REDIS_URL": "",
            "API_RATE_PER_KEY": f"3/{WINDOW}",
            "API_RATE_PER_IP": f"5/{WINDOW}",
            **overrides,
        }
    )


def _client(key: str, address: str) -> APIClient:
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


_RATELIMIT = re.compile(r'^"key";r=(\d+);t=(\d+), "ip";r=(\d+);t=(\d+)$')


def test_a_keys_quota_answers_429_and_the_fields_count_down(account: Account) -> None:
    with _limits():
        client = _client(account.key, "198.51.100.20")
        answers = [client.get("/api/userinfo/") for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        for answer in answers:
            assert answer["RateLimit-Policy"] == f'"key";q=3;w={WINDOW}, "ip";q=5;w={WINDOW}'
        remaining = [_RATELIMIT.match(a["RateLimit"]).groups()[0::2] for a in answers]  # type: ignore[union-attr]
        assert remaining == [("2", "4"), ("1", "3"), ("0", "2"), ("0", "1")]
        refused = answers[-1]
        wait = int(refused["Retry-After"])
        assert 1 <= wait <= WINDOW
        error = refused.json()["error"]
        assert error["code"] == "rate_limited"
        assert error["details"]["retry_after"] == [str(wait)]
        assert error["details"]["key"] == [f"3 requests per {WINDOW} s"]
        # Another key from the same address still has its own quota (the address has one
        # unit left of five).
        other = _client("mp_" + "x" * 40, "198.51.100.20").get("/api/userinfo/")
        assert other.status_code == 401
        assert (
            "ip"
            in _client(account.key + "z", "198.51.100.20")
            .get("/api/userinfo/")
            .json()["error"]["details"]
        )
        # The key from elsewhere is still refused: its quota is the key's, wherever it is.
        assert _client(account.key, "198.51.100.21").get("/api/userinfo/").status_code == 429


def test_an_address_quota_covers_requests_without_a_key(db: Any) -> None:
    with _limits(API_RATE_PER_IP=f"2/{WINDOW}"):
        anonymous = APIClient(REMOTE_ADDR="198.51.100.30")
        statuses = [anonymous.get("/api/").status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert APIClient(REMOTE_ADDR="198.51.100.31").get("/api/").status_code == 200
        # One IPv6 subscriber is one /64: a fresh address in it does not reset the count.
        for n in range(2):
            assert APIClient(REMOTE_ADDR=f"2001:db8:7:7::{n + 1}").get("/api/").status_code == 200
        assert APIClient(REMOTE_ADDR="2001:db8:7:7::99").get("/api/").status_code == 429


def test_paths_outside_the_api_are_not_counted(db: Any) -> None:
    with _limits(API_RATE_PER_IP=f"1/{WINDOW}"):
        client = APIClient(REMOTE_ADDR="127.0.0.1")
        for _ in range(3):
            response = client.get("/metrics")
            assert "RateLimit" not in response
            assert response.status_code != 429


@pytest.mark.parametrize(
    "header",
    # WSGI hands headers over as latin-1 text: any byte arrives as one of these characters.
    ["Api-Key " + "k" * 100_000, "Api-Key \xff\xfe\x00", "Bearer x", " ", "Api-Key \xd9\xa3"],
)
def test_hostile_credentials_are_counted_not_crashed(db: Any, header: str) -> None:
    with _limits():
        client = APIClient(REMOTE_ADDR="198.51.100.40", HTTP_AUTHORIZATION=header)
        statuses = [client.get("/api/projects/").status_code for _ in range(4)]
        assert statuses[:3] == [401, 401, 401] or statuses[:3] == [400, 400, 400]
        assert statuses[3] == 429


def test_off_when_set_to_zero(account: Account) -> None:
    with _limits(API_RATE_PER_KEY="0", API_RATE_PER_IP="0"):
        client = _client(account.key, "198.51.100.50")
        for _ in range(10):
            response = client.get("/api/userinfo/")
            assert response.status_code == 200
            assert "RateLimit" not in response


def _served_key(svc: Any) -> str:
    return svc.cli("org", "create", "--name", "Rated", "--email", "ops@r.test").split()[-1]


@pytest.mark.timeout(180)
def test_over_http_a_quota_is_shared_by_separate_servers(tmp_path: Path, redis_url: str) -> None:
    """Two web services (as on two hosts), each with two worker processes, one Redis: a
    key's quota is spent on both together."""
    env = {
        "MAILPLANE_REDIS_URL": redis_url,
        "MAILPLANE_API_RATE_PER_KEY": f"6/{WINDOW}",
        "MAILPLANE_API_RATE_PER_IP": "0",
    }
    with (
        live_service(tmp_path / "a", "web", env=env) as (first, _),
        live_service(tmp_path / "b", "web", env=env) as (second, _),
    ):
        clock = redis.Redis.from_url(redis_url).time  # the servers count on Redis' clock
        clear_of_window_end(lambda: float(clock()[0]))
        key = "mp_" + secrets.token_hex(20)  # unknown to both: counted all the same
        # An address of its own: the wrong-key throttle (20 per address) stays out of it.
        source = f"127.0.{secrets.randbelow(200) + 20}.{secrets.randbelow(200) + 20}"
        statuses = [
            http_call(svc.base, "GET", "/api/projects/", key=key, source=source).status
            for svc in (first, second) * 5
        ]
        assert statuses.count(429) == 4, statuses
        assert statuses[:6] == [401] * 6
        other = http_call(
            second.base, "GET", "/api/projects/", key=_served_key(second), source=source
        )
        assert other.status == 200, other.body
        assert other.headers["ratelimit"].startswith('"key";r=5;')
