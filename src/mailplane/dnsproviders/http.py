"""One HTTP session per provider client: httpx with timeouts, and retries that honour
the provider's rate limiting.

Retried: 429 (RFC 6585 §4) on every method, since the provider did not act on it; 5xx and
transport errors only on idempotent methods (RFC 9110 §9.2.2) or when the connection never
opened, so a POST that may have reached the provider is not sent twice. The wait is the
reply's Retry-After (RFC 9110 §10.2.3: seconds or an HTTP-date), or the provider's own hint
(GoDaddy's `retryAfterSec`), else exponential backoff; a wait longer than the policy's
`max_wait` is not slept through but reported as `ProviderUnavailable` with the delay, so a
worker thread never parks for minutes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from mailplane.dnsproviders.errors import ProviderUnavailable

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Transport errors raised before any byte of the request left: safe to retry any method.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    max_wait: float = 30.0  # longest single wait we sleep through
    backoff: float = 0.5  # first wait without a hint; doubles each attempt
    timeout: float | None = None  # per request, below the configured one


# Background jobs can afford to wait for the provider; an API request answered while the
# caller waits cannot (a credentials test makes two requests: at most about 20 s).
JOB_POLICY = RetryPolicy()
INTERACTIVE_POLICY = RetryPolicy(attempts=2, max_wait=3.0, timeout=5.0)


def retry_after_seconds(response: httpx.Response, *, now: datetime | None = None) -> float | None:
    """The Retry-After header as seconds from now; None when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


RetryHint = Callable[[httpx.Response], float | None]


class ApiSession:
    """Requests against one provider's API base URL, with its authentication headers."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        policy: RetryPolicy,
        timeout: float,
        retry_hint: RetryHint | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.provider = provider
        self._policy = policy
        self._retry_hint = retry_hint
        self._sleep = sleep
        if policy.timeout is not None:
            timeout = min(timeout, policy.timeout)
        self._client = httpx.Client(
            base_url=base_url,
            headers={"Accept": "application/json", "User-Agent": "Mailplane", **headers},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            follow_redirects=False,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """The provider's reply (any status but the retried ones), or ProviderUnavailable."""
        method = method.upper()
        policy = self._policy
        for attempt in range(1, policy.attempts + 1):
            last = attempt == policy.attempts
            backoff = policy.backoff * 2 ** (attempt - 1)
            try:
                response = self._client.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                if last or not (isinstance(exc, NOT_SENT) or method in IDEMPOTENT_METHODS):
                    raise ProviderUnavailable(
                        f"{self.provider} could not be reached ({type(exc).__name__})"
                    ) from exc
                wait = backoff
            else:
                status = response.status_code
                if status not in RETRYABLE_STATUS:
                    return response
                if status != 429 and method not in IDEMPOTENT_METHODS:
                    return response  # the caller decides: it may have been carried out
                hinted = retry_after_seconds(response)
                if hinted is None and self._retry_hint is not None:
                    hinted = self._retry_hint(response)
                if last:
                    raise ProviderUnavailable(
                        f"{self.provider} answered HTTP {status} {attempt} times; try again later",
                        retry_after=hinted,
                    )
                wait = backoff if hinted is None else hinted
                if wait > policy.max_wait:
                    raise ProviderUnavailable(
                        f"{self.provider} is rate limiting: it asks to wait {wait:.0f} s",
                        retry_after=wait,
                    )
            log.info(
                "%s: %s %s: attempt %d failed; retrying in %.1f s",
                self.provider,
                method,
                path.split("?")[0],
                attempt,
                wait,
            )
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover (the loop returns or raises)

    def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> tuple[httpx.Response, Any]:
        """`request`, and the reply's JSON body (None when empty or not JSON)."""
        response = self.request(method, path, params=params, json=json)
        try:
            return response, response.json() if response.content else None
        except ValueError:
            return response, None

    def close(self) -> None:
        self._client.close()
