"""Domain errors render themselves per protocol (core/errors.py): one error, three answers.

The tables below are the contract the front ends rely on; tests/smtp/test_domain_errors.py
and tests/api/test_domain_errors.py check that a service's error reaches a real client so.
"""

from __future__ import annotations

import pytest

from mailplane.core.errors import (
    Conflict,
    DomainError,
    LimitReached,
    NotAllowed,
    NotFound,
    SmtpStatus,
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
    (Unavailable, 503, "unavailable", "451 4.3.0 ", b"a1 NO [UNAVAILABLE] "),
]


@pytest.mark.parametrize(("cls", "status", "code", "smtp", "imap"), RENDERINGS)
def test_each_error_renders_for_http_smtp_and_imap(cls, status, code, smtp, imap):
    error = cls("what went wrong", details={"field": ["why"]})
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
