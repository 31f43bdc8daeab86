"""Domain errors. Services raise these; each front end (API, SMTP, IMAP) renders them.

DomainError
├── ValidationFailed   bad input, with per-field messages   (HTTP 400)
├── NotFound           absent or another tenant's object      (HTTP 404)
├── Conflict           duplicates                             (HTTP 409)
├── LimitReached       plan or quota limit                    (HTTP 403)
└── NotAllowed         plan or state forbids the operation    (HTTP 403)
"""

from __future__ import annotations


class DomainError(Exception):
    code = "error"
    http_status = 400

    def __init__(self, message: str, *, details: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ValidationFailed(DomainError):
    code = "validation_error"
    http_status = 400

    @classmethod
    def on(cls, field: str, message: str) -> ValidationFailed:
        return cls(f"{field}: {message}", details={field: [message]})


class NotFound(DomainError):
    code = "not_found"
    http_status = 404


class Conflict(DomainError):
    code = "conflict"
    http_status = 409


class LimitReached(DomainError):
    code = "limit_reached"
    http_status = 403


class NotAllowed(DomainError):
    code = "not_allowed"
    http_status = 403
