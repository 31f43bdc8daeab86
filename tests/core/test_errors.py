"""Domain errors render themselves per protocol (core/errors.py): one error, three answers.

The tables below are the contract the front ends rely on; tests/smtp/test_domain_errors.py
and tests/api/test_domain_errors.py check that a service's error reaches a real client so.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import mailplane
from mailplane.core.errors import (
    Conflict,
    DomainError,
    LimitReached,
    NotAllowed,
    NotAuthenticated,
    NotFound,
    RateLimited,
    SmtpStatus,
    TooLarge,
    Unavailable,
    ValidationFailed,
)

# class, HTTP status, API code, SMTP reply start, IMAP tagged response start
RENDERINGS = [
    (ValidationFailed, 400, "validation_error", "501 5.5.4 ", b"a1 BAD "),
    (NotFound, 404, "not_found", "550 5.1.1 ", b"a1 NO [NONEXISTENT] "),
    (Conflict, 409, "conflict", "550 5.0.0 ", b"a1 NO [ALREADYEXISTS] "),
    (LimitReached, 403, "limit_reached", "452 4.3.1 ", b"a1 NO [LIMIT] "),
    (NotAllowed, 403, "not_allowed", "550 5.7.1 ", b"a1 NO [NOPERM] "),
    (NotAuthenticated, 401, "not_authenticated", "530 5.7.0 ", b"a1 NO [AUTHENTICATIONFAILED] "),
    (TooLarge, 413, "too_large", "552 5.3.4 ", b"a1 NO [TOOBIG] "),
    (Unavailable, 503, "unavailable", "451 4.3.0 ", b"a1 NO [UNAVAILABLE] "),
    (RateLimited, 429, "rate_limited", "451 4.3.0 ", b"a1 NO [UNAVAILABLE] "),
]


def _made(cls: type[DomainError], message: str, **kwargs) -> DomainError:
    """An instance; a 401 needs its challenge (RFC 9110 §11.6.1)."""
    if issubclass(cls, NotAuthenticated):
        kwargs.setdefault("challenge", "Bearer")
    return cls(message, **kwargs)


@pytest.mark.parametrize(("cls", "status", "code", "smtp", "imap"), RENDERINGS)
def test_each_error_renders_for_http_smtp_and_imap(cls, status, code, smtp, imap):
    error = _made(cls, "what went wrong", details={"field": ["why"]})
    assert error.http_status == status
    assert error.http_body() == {
        "error": {"code": code, "message": "what went wrong", "details": {"field": ["why"]}}
    }
    assert error.smtp_reply() == smtp + "what went wrong"
    assert error.imap_response("a1") == imap + b"what went wrong\r\n"


def test_every_error_class_in_the_tree_is_in_the_table():
    """A new error class must say how each protocol shows it (and be tested here)."""

    def tree(cls: type[DomainError]) -> set[type[DomainError]]:
        found = set()
        for sub in cls.__subclasses__():
            if sub.__module__ == "mailplane.core.errors":
                found |= {sub} | tree(sub)
        return found

    assert tree(DomainError) == {row[0] for row in RENDERINGS}


def test_one_raise_may_be_more_precise_for_smtp():
    disabled = NotAllowed("Mailbox disabled", smtp=SmtpStatus(550, "5.2.1"))
    assert disabled.smtp_reply() == "550 5.2.1 Mailbox disabled"
    assert disabled.http_status == 403  # the other protocols keep the class's answer
    assert disabled.imap_response("t") == b"t NO [NOPERM] Mailbox disabled\r\n"
    assert NotAllowed("other").smtp_reply() == "550 5.7.1 other"  # the class is untouched


@pytest.mark.parametrize(
    ("code", "enhanced"),
    [(550, "4.7.1"), (451, "5.3.0"), (250, "5.0.0"), (354, "3.0.0"), (550, "5.9.1"), (550, "x")],
)
def test_an_enhanced_code_must_fit_its_reply(code, enhanced):
    """RFC 3463 §2: the class digit is the reply's (2, 4 or 5); subjects 0-7 are defined."""
    with pytest.raises(ValueError):
        SmtpStatus(code, enhanced)


def test_temporary_is_4yz():
    assert LimitReached("x").smtp.temporary and Unavailable("x").smtp.temporary
    assert not NotAllowed("x").smtp.temporary


def test_a_message_cannot_inject_a_second_reply_or_response_line():
    """The text may quote client input: CR, LF and non-ASCII never reach the wire raw."""
    error = NotFound("No such mailbox <x@a.test>\r\n250 2.0.0 OK é")
    assert error.smtp_reply() == "550 5.1.1 No such mailbox <x@a.test>??250 2.0.0 OK ?"
    assert error.imap_response("a1").count(b"\r\n") == 1
    assert NotFound("").smtp_reply() == "550 5.1.1 error"  # never a reply without text


def test_validation_failed_on_names_the_field():
    error = ValidationFailed.on("name", "is not a valid domain name")
    assert error.http_body()["error"]["details"] == {"name": ["is not a valid domain name"]}
    assert error.smtp_reply() == "501 5.5.4 name: is not a valid domain name"


# RFC 9051 §7.1 and RFC 5530 §3 response codes a refusal may carry.
IMAP_CODES = {
    "ALREADYEXISTS",
    "AUTHENTICATIONFAILED",
    "CANNOT",
    "LIMIT",
    "NONEXISTENT",
    "NOPERM",
    "OVERQUOTA",
    "TOOBIG",
    "UNAVAILABLE",
}


def _every_domain_error() -> list[type[DomainError]]:
    """Every subclass of DomainError anywhere in the package (each module imported, so
    that none hides from the walk)."""
    for module in pkgutil.walk_packages(mailplane.__path__, "mailplane."):
        if ".migrations" not in module.name and not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found: list[type[DomainError]] = []
    todo = [DomainError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found and sub.__module__.startswith("mailplane."):
                found.append(sub)
                todo.append(sub)
    return found


def _defined_by(cls: type, name: str) -> type:
    return next(klass for klass in cls.__mro__ if name in vars(klass))


def test_the_walk_finds_the_errors_outside_core():
    names = {cls.__name__ for cls in _every_domain_error()}
    assert {"SenderNotVerified", "MessageTooLarge", "IdempotencyConflict", "RequestRefused"} <= (
        names
    )


@pytest.mark.parametrize("cls", _every_domain_error(), ids=lambda cls: cls.__qualname__)
def test_every_domain_error_answers_deliberately_on_every_protocol(cls):
    """Each class, wherever it lives, says (or inherits from a class of the tree that
    says) its HTTP status, SMTP reply and IMAP response: DomainError's own defaults are
    never an answer, and none is a 500 or a success."""
    for name in ("code", "http_status", "smtp_status", "imap_status"):
        assert _defined_by(cls, name) is not DomainError, f"{cls.__name__}.{name} is the default"
    error = _made(cls, "what went wrong")
    assert 400 <= error.http_status < 600 and error.http_status != 500
    assert error.http_body()["error"]["code"] == cls.code != "error"
    reply = error.smtp_reply()
    assert reply[0] in "45" and reply.endswith(" what went wrong")
    assert error.smtp.enhanced[0] == reply[0]  # RFC 3463 §2, checked by SmtpStatus too
    tagged = error.imap_response("a1")
    assert tagged.startswith((b"a1 NO ", b"a1 BAD ")) and tagged.endswith(b"what went wrong\r\n")
    if cls.imap_status.condition == "NO":  # a refusal says why, in a code clients know
        assert cls.imap_status.code in IMAP_CODES


@pytest.mark.parametrize(
    ("name", "status", "smtp", "imap"),
    [
        ("SenderNotVerified", 422, "550 5.7.1 ", b"a1 NO [NOPERM] "),
        ("MessageTooLarge", 413, "552 5.3.4 ", b"a1 NO [TOOBIG] "),
        ("UploadTooLarge", 413, "552 5.3.4 ", b"a1 NO [TOOBIG] "),
        ("BodyTooLarge", 413, "552 5.3.4 ", b"a1 NO [TOOBIG] "),
        ("SignatureRejected", 403, "550 5.7.1 ", b"a1 NO [NOPERM] "),
        ("ReportsInFlight", 503, "451 4.3.0 ", b"a1 NO [UNAVAILABLE] "),
    ],
)
def test_the_send_paths_errors_answer_as_rfc_3463_says(name, status, smtp, imap):
    """RFC 3463 §3.8 X.7.1 (not authorized) and §3.4 X.3.4 (message too big for system)."""
    [cls] = [cls for cls in _every_domain_error() if cls.__name__ == name]
    error = _made(cls, "x")
    assert (error.http_status, error.smtp_reply(), error.imap_response("a1")) == (
        status,
        smtp + "x",
        imap + b"x\r\n",
    )


def test_http_header_fields_go_with_the_body():
    """Retry-After when the error says when (RFC 9110 §10.2.3); a 401's challenge
    (§11.6.1); nothing otherwise."""
    assert NotFound("x").http_headers() == {}
    assert RateLimited("slow down", retry_after=7).http_headers() == {"Retry-After": "7"}
    assert NotAuthenticated("who?", challenge='Bearer realm="m"').http_headers() == {
        "WWW-Authenticate": 'Bearer realm="m"'
    }
