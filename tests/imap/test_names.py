"""Mailbox-name checks and LIST pattern matching, as units (issue 8, defects 1 and 2)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymap.listtree import ListTree
from pymap.parsing.modutf7 import modutf7_encode

from mailplane.imap.names import (
    ListPattern,
    MailboxNameInvalid,
    mailbox_name_check,
    modutf7_decode_strict,
)


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "/",
        "/a",
        "a/",
        "a//b",
        "a/./b",
        "a/../../x",
        ".Sent",
        "a.b",
        "a*",
        "b%",
        "a\r\nb",
        "\x00",
        "\ud800",
        "x" * 201,
    ],
)
def test_unsafe_names_are_refused(name):
    with pytest.raises(MailboxNameInvalid) as refused:
        mailbox_name_check(name)
    assert b"CANNOT" in bytes(refused.value.get_response(b"t1"))


@pytest.mark.parametrize("name", ["INBOX", "Sent", "Work/2026", "Ünïcode", "a b", "&-x"])
def test_ordinary_names_pass_unchanged(name):
    assert mailbox_name_check(name) == name


def test_create_drops_one_trailing_separator():
    """RFC 9051 §6.3.4: "a/" declares the intent to create names below "a"."""
    assert mailbox_name_check("Projects/", create=True) == "Projects"
    for name in ("Projects//", "/", "a/b//"):
        with pytest.raises(MailboxNameInvalid):
            mailbox_name_check(name, create=True)
    with pytest.raises(MailboxNameInvalid):
        mailbox_name_check("Projects/")  # outside CREATE a trailing separator is an error


_pattern = st.text(alphabet="ab/*%", max_size=7)
_name = st.text(alphabet="ab/", max_size=7)


@settings(max_examples=400, deadline=None)
@given(_pattern, _name)
def test_list_pattern_agrees_with_pymaps_regular_expression(pattern, name):
    """Same answers as pymap's regex (the reference semantics) on inputs small enough for it."""
    regex, _ = ListTree("/")._get_pattern(pattern)
    assert ListPattern(pattern).matches(name) == bool(regex.match(name))


def test_list_pattern_inbox_is_case_insensitive_only_when_asked():
    assert ListPattern("inbox").matches("INBOX", ignore_case=True)
    assert not ListPattern("inbox").matches("INBOX")
    assert ListPattern("%").matches("Sent") and not ListPattern("%").matches("a/b")
    assert ListPattern("*").matches("a/b") and ListPattern("a/%").matches("a/b")


def test_list_pattern_time_is_linear_in_pattern_and_name():
    """40 "%" took pymap 46 s; 1,000 wildcards against 200 characters must take milliseconds."""
    hostile = ["%" * 1000, "%a" * 500, "*%" * 500, "%*a%" * 250 + "z"]
    started = time.monotonic()
    for pattern in hostile:
        for name in ("a" * 200, "a/" * 100, "Sent"):
            ListPattern(pattern).matches(name)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    "raw", [b"&Jjo", b"&", b"a&", b"&Jjo!-", b"&2AA-", b"&A-", b"&!!-", b"&AGE"]
)
def test_malformed_modified_utf7_raises_instead_of_looping(raw):
    """pymap's own decoder never returned on b"&Jjo": one CREATE froze the server."""
    with pytest.raises(UnicodeError):
        modutf7_decode_strict(raw)


@pytest.mark.parametrize(
    "raw, name",
    [
        (b"INBOX", "INBOX"),
        (b"&-", "&"),
        (b"a&-b", "a&b"),
        (b"&AOk-t&AOk-", "été"),
        (b"&ZeVnLIqe-", "日本語"),
        (b"Sent", "Sent"),
    ],
)
def test_modified_utf7_round_trips(raw, name):
    assert modutf7_decode_strict(raw) == name
    assert modutf7_encode(name) == raw


def test_pymaps_parser_uses_the_strict_decoder():
    """Through `modutf7_decode_lenient`: strict decoding, and a malformed name becomes one
    `mailbox_name_check` refuses (NO [CANNOT], as Dovecot answers) instead of a BAD."""
    import pymap.parsing.command.auth
    import pymap.parsing.specials.mailbox

    import mailplane.imap.server  # noqa: F401 - installs the decoder
    from mailplane.imap.protocol import modutf7_decode_lenient

    assert pymap.parsing.specials.mailbox.modutf7_decode is modutf7_decode_lenient
    assert pymap.parsing.command.auth.modutf7_decode is modutf7_decode_lenient
    assert modutf7_decode_lenient(b"&AOk-t&AOk-") == "\u00e9t\u00e9"
    with pytest.raises(MailboxNameInvalid):
        mailbox_name_check(modutf7_decode_lenient(b"&Jjo"))
