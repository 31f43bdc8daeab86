"""What can go wrong talking to a DNS provider.

    DnsProviderError
    ├── CredentialsRejected   the provider refused the token or key (401/403)     permanent
    ├── ZoneNotFound          no zone for the domain in this provider account     permanent
    ├── RecordRejected        the provider refused a request's content (400/422)  permanent
    ├── ProviderUnavailable   unreachable, 5xx or 429 beyond the retry budget     temporary
    └── ProviderGaveUp        still unavailable after the job's last attempt     permanent

The permanent ones are also `DomainError`s, so the API and the job runner render them with
their message; the temporary one is not, so a job that meets it is run again later
(jobs/services.py). Messages are shown to the account: they name the provider's own error
codes and messages, never a credential.
"""

from __future__ import annotations

from mailplane.core.errors import DomainError


class DnsProviderError(Exception):
    """Base of every DNS-provider failure."""


class CredentialsRejected(DnsProviderError, DomainError):
    code = "dns_provider_auth_failed"
    http_status = 400


class ZoneNotFound(DnsProviderError, DomainError):
    code = "dns_zone_not_found"
    http_status = 400


class RecordRejected(DnsProviderError, DomainError):
    code = "dns_provider_rejected"
    http_status = 400


class ProviderUnavailable(DnsProviderError):
    """Temporary: try again later (`retry_after` seconds, when the provider said)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ProviderGaveUp(DnsProviderError, DomainError):
    code = "dns_provider_unavailable"
    http_status = 503
