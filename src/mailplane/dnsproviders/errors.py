"""What can go wrong talking to a DNS provider.

    DnsProviderError
    ├── CredentialsRejected   the provider refused the token or key (401/403)     permanent
    ├── ZoneNotFound          no zone for the domain in this provider account     permanent
    ├── RecordRejected        the provider refused a request's content (400/422)  permanent
    ├── ProviderUnavailable   unreachable, 5xx or 429 beyond the retry budget     temporary
    └── ProviderGaveUp        still unavailable after the job's last attempt     permanent

The permanent ones are also `DomainError`s, so the API and the job runner render them with
their message: bad input of the account's (a 400, ValidationFailed's answers on SMTP and
IMAP), or, for ProviderGaveUp, Unavailable (503: the same request may work later, though
the job has stopped trying). The temporary one is not, so a job that meets it is run again later
(jobs/services.py). Messages are shown to the account: they name the provider's own error
codes and messages, never a credential.
"""

from __future__ import annotations

from mailplane.core.errors import Unavailable, ValidationFailed


class DnsProviderError(Exception):
    """Base of every DNS-provider failure."""


class CredentialsRejected(DnsProviderError, ValidationFailed):
    code = "dns_provider_auth_failed"


class ZoneNotFound(DnsProviderError, ValidationFailed):
    code = "dns_zone_not_found"


class RecordRejected(DnsProviderError, ValidationFailed):
    code = "dns_provider_rejected"


class ProviderUnavailable(DnsProviderError):
    """Temporary: try again later (`retry_after` seconds, when the provider said)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ProviderGaveUp(DnsProviderError, Unavailable):
    code = "dns_provider_unavailable"
