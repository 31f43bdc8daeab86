"""Domain errors. Services raise these; each front end renders them in its own protocol.

A domain error says what went wrong once, in terms of the domain, and carries what every
protocol needs to tell the client (pymap's and Stalwart's model): the API's status and
error code, the SMTP reply code with its enhanced status code (RFC 3463), and the IMAP
response condition with its response code (RFC 9051 §7.1). The front ends never choose a
status themselves: `api/errors.py` renders `http_body()` with `http_status`, the SMTP
handlers answer `smtp_reply()`, the IMAP server `imap_response(tag)`.

DomainError                          HTTP             SMTP         IMAP
├── ValidationFailed  bad input      400 validation   501 5.5.4    BAD
├── NotFound          absent/other   404 not_found    550 5.1.1    NO [NONEXISTENT]
│                     tenant's
├── Conflict          duplicates     409 conflict     550 5.0.0    NO [ALREADYEXISTS]
├── LimitReached      plan or quota  403 limit_...    452 4.3.1    NO [LIMIT]
├── NotAllowed        state/plan     403 not_allowed  550 5.7.1    NO [NOPERM]
│                     forbids it
├── NotAuthenticated  credentials    401 not_auth...  530 5.7.0    NO [AUTHENTICATIONFAILED]
│                     missing/wrong
├── TooLarge          over a size    413 too_large    552 5.3.4    NO [TOOBIG]
│                     limit
└── Unavailable       try later      503 unavailable  451 4.3.0    NO [UNAVAILABLE]

Every class below DomainError names all three answers itself, or inherits them from one
of these (tests/core/test_errors.py walks every subclass in the tree): DomainError's own
defaults are never what a client sees.

A class gives the defaults; one raise may be more precise for SMTP (RFC 3463 has a code
for "mailbox disabled", 5.2.1, which HTTP and IMAP have no use for):
`NotAllowed("Mailbox disabled", smtp=SmtpStatus(550, "5.2.1"))`. A temporary error may say
when to try again (`retry_after`, seconds): over HTTP it is Retry-After (`http_headers()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

ImapCondition = Literal["NO", "BAD"]


def _one_line(text: str) -> str:
    """Reply text is one line of printable ASCII (RFC 5321 §4.2: textstring; RFC 9051
    §9: text excludes CR and LF): anything else is replaced, so a message quoting the
    client's input cannot inject a second reply or response line."""
    return "".join(c if " " <= c <= "~" else "?" for c in text).strip() or "error"


@dataclass(frozen=True, slots=True)
class SmtpStatus:
    """An SMTP reply code (RFC 5321 §4.2) and its enhanced status code (RFC 3463 §2)."""

    code: int
    enhanced: str

    def __post_init__(self) -> None:
        klass, subject, detail = (int(part) for part in self.enhanced.split("."))
        # RFC 3463 §2: the class digit must agree with the reply code's (2, 4 or 5);
        # subject 0-7 are the defined ones, detail is 1-3 digits.
        if self.code // 100 not in (2, 4, 5) or klass != self.code // 100:
            raise ValueError(f"enhanced code {self.enhanced} does not fit reply {self.code}")
        if not (0 <= subject <= 7 and 0 <= detail <= 999):
            raise ValueError(f"not an RFC 3463 enhanced status code: {self.enhanced}")

    @property
    def temporary(self) -> bool:
        """4yz: the client keeps the message and tries again (RFC 5321 §4.2.1)."""
        return self.code // 100 == 4


@dataclass(frozen=True, slots=True)
class ImapStatus:
    """An IMAP tagged status (RFC 9051 §7.1): the condition and an optional response code."""

    condition: ImapCondition
    code: str | None = None


class DomainError(Exception):
    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 400
    smtp_status: ClassVar[SmtpStatus] = SmtpStatus(554, "5.0.0")
    imap_status: ClassVar[ImapStatus] = ImapStatus("NO")

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, list[str]] | None = None,
        smtp: SmtpStatus | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.smtp = smtp or self.smtp_status
        self.retry_after = retry_after

    # One rendering per protocol; the front ends call these and nothing else.

    def http_body(self) -> dict[str, Any]:
        """The API's one error shape (api/errors.py): {"error": {code, message, details}}."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def http_headers(self) -> dict[str, str]:
        """Header fields that go with the body: Retry-After (RFC 9110 §10.2.3) when the
        error says when to try again."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}

    def smtp_reply(self) -> str:
        """`550 5.7.1 Mailbox is suspended`: what an aiosmtpd handler hook returns."""
        return f"{self.smtp.code} {self.smtp.enhanced} {_one_line(self.message)}"

    def imap_response(self, tag: str) -> bytes:
        """`a1 NO [NOPERM] message` (RFC 9051 §7.1: resp-text = ["[" resp-text-code "]"] text)."""
        status = self.imap_status
        code = f"[{status.code}] " if status.code else ""
        return f"{tag} {status.condition} {code}{_one_line(self.message)}\r\n".encode("ascii")


class ValidationFailed(DomainError):
    code = "validation_error"
    http_status = 400
    # RFC 3463 §3.6: X.5.4 invalid command arguments.
    smtp_status = SmtpStatus(501, "5.5.4")
    # RFC 9051 §7.1.3: BAD, the client's command was in error.
    imap_status = ImapStatus("BAD")

    @classmethod
    def on(cls, field: str, message: str, *, smtp: SmtpStatus | None = None) -> ValidationFailed:
        return cls(f"{field}: {message}", details={field: [message]}, smtp=smtp)


class NotFound(DomainError):
    code = "not_found"
    http_status = 404
    # RFC 3463 §3.2: X.1.1 bad destination mailbox address (what SMTP looks up).
    smtp_status = SmtpStatus(550, "5.1.1")
    imap_status = ImapStatus("NO", "NONEXISTENT")


class Conflict(DomainError):
    code = "conflict"
    http_status = 409
    smtp_status = SmtpStatus(550, "5.0.0")
    imap_status = ImapStatus("NO", "ALREADYEXISTS")


class LimitReached(DomainError):
    code = "limit_reached"
    http_status = 403
    # RFC 3463 §3.4: X.3.1 mail system full; 4yz because a limit resets or is raised,
    # and RFC 5321 §4.5.3.1.10 answers limits with 452.
    smtp_status = SmtpStatus(452, "4.3.1")
    imap_status = ImapStatus("NO", "LIMIT")


class NotAllowed(DomainError):
    code = "not_allowed"
    http_status = 403
    # RFC 3463 §3.8: X.7.1 delivery not authorized, message refused.
    smtp_status = SmtpStatus(550, "5.7.1")
    imap_status = ImapStatus("NO", "NOPERM")


class NotAuthenticated(DomainError):
    """Credentials are required and none (or wrong ones) came: who is asking is unknown."""

    code = "not_authenticated"
    http_status = 401
    # RFC 4954 §6: 530 5.7.0 Authentication required.
    smtp_status = SmtpStatus(530, "5.7.0")
    # RFC 5530 §3: AUTHENTICATIONFAILED.
    imap_status = ImapStatus("NO", "AUTHENTICATIONFAILED")

    def __init__(self, message: str, *, challenge: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.challenge = challenge

    def http_headers(self) -> dict[str, str]:
        # RFC 9110 §11.6.1: a 401 carries the challenge the client must answer.
        return {**super().http_headers(), "WWW-Authenticate": self.challenge}


class TooLarge(DomainError):
    """Over a size limit: a message, an upload, a request body."""

    code = "too_large"
    http_status = 413
    # RFC 3463 §3.4: X.3.4 message too big for system; RFC 5321 §4.5.3.1.10 (and §4.2.2)
    # answers a message over the size limit with 552.
    smtp_status = SmtpStatus(552, "5.3.4")
    # RFC 9051 §7.1: TOOBIG, the server refuses to save or handle data this large.
    imap_status = ImapStatus("NO", "TOOBIG")


class Unavailable(DomainError):
    """Temporary: nothing was done, the same request may succeed later."""

    code = "unavailable"
    http_status = 503
    # RFC 3463 §3.4: X.3.0 other or undefined mail system status, temporary.
    smtp_status = SmtpStatus(451, "4.3.0")
    imap_status = ImapStatus("NO", "UNAVAILABLE")


class RateLimited(Unavailable):
    """Too many requests in a window: temporary, `retry_after` says when the window ends."""

    code = "rate_limited"
    # RFC 6585 §4: 429 Too Many Requests. SMTP and IMAP keep Unavailable's 451 4.3.0 and
    # NO [UNAVAILABLE]: try again later.
    http_status = 429
