"""Mailbox names and LIST patterns, checked before anything reaches storage.

Names (RFC 9051 §5.1): the hierarchy separator is "/". On disk a folder is one Maildir++
directory, `.` + the components joined with "." (see `mailplane.storage.layout`), so a
component may not contain "." at all: "a.b" would be the same directory as "a/b", and "."
or ".." would name the mailbox root or its parent. Empty components ("", "a//b", "/a"),
control characters, the LIST wildcards and names longer than one directory name can hold
are refused too. The answer is a tagged NO [CANNOT] (RFC 5530 §3: the operation can never
succeed), never a path.

Modified UTF-7 (RFC 3501 §5.1.3): pymap's decoder never returns on an unterminated shift
("&Jjo" without the closing "-"): one CREATE spun the event loop forever. The strict decoder
here replaces it in pymap's parser and raises UnicodeError, which the connection answers BAD.

LIST patterns (RFC 9051 §6.3.9): "*" matches anything, "%" anything but the separator.
pymap compiles them into a regular expression of lazy quantifiers, which backtracks
exponentially on "%%%…%" against a name that does not match: 40 "%" took 46 s and held the
event loop, so no other client of any tenant was served. `ListPattern` runs the pattern
as an NFA over a bit set instead: one pass over the name, O(len(name) * len(pattern) / 64).
"""

from __future__ import annotations

import base64
import binascii
import re

import pymap.parsing.command.auth
import pymap.parsing.specials.mailbox
from pymap.exceptions import MailboxError
from pymap.parsing.response import ResponseCode

__all__ = [
    "DELIMITER",
    "MAX_LIST_PATTERN",
    "MAX_NAME",
    "ListPattern",
    "ListPatternTooLong",
    "MailboxNameInvalid",
    "mailbox_name_check",
    "modutf7_decode_strict",
    "modutf7_install",
]

DELIMITER = "/"
MAX_NAME = 200  # characters; the Maildir++ directory name must fit in 255 bytes
MAX_LIST_PATTERN = 1024  # characters of reference + pattern; a real client sends a few


class MailboxNameInvalid(MailboxError):
    """NO [CANNOT]: a name this server can never store (RFC 5530 §3)."""

    def __init__(self, mailbox: str, reason: str) -> None:
        super().__init__(
            mailbox, f"Invalid mailbox name: {reason}.".encode(), ResponseCode.of(b"CANNOT")
        )


class ListPatternTooLong(MailboxError):
    """NO [LIMIT]: a LIST pattern past the implementation limit (RFC 5530 §3)."""

    def __init__(self) -> None:
        super().__init__(
            None,
            b"LIST pattern too long (at most %d characters)." % MAX_LIST_PATTERN,
            ResponseCode.of(b"LIMIT"),
        )


_FORBIDDEN = frozenset("*%" + "".join(map(chr, range(0x20))) + "\x7f")


def mailbox_name_check(name: str, *, create: bool = False) -> str:
    """The name to use, or MailboxNameInvalid. INBOX (any case) arrives as "INBOX".

    For CREATE a single trailing separator is dropped: RFC 9051 §6.3.4 reads "a/" as the
    intent to create names below "a", and "a" is what gets created.
    """
    if name == "INBOX":
        return name
    if create and name.endswith(DELIMITER) and len(name) > 1:
        name = name[:-1]
    if not name:
        raise MailboxNameInvalid(name, "empty")
    if len(name) > MAX_NAME:
        raise MailboxNameInvalid(name[:40], f"longer than {MAX_NAME} characters")
    if any(char in _FORBIDDEN for char in name):
        raise MailboxNameInvalid(name, "control characters and wildcards are not allowed")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, from malformed modified UTF-7
        raise MailboxNameInvalid(name, "not valid modified UTF-7") from None
    for part in name.split(DELIMITER):
        if not part:
            raise MailboxNameInvalid(name, 'empty hierarchy level ("/" at the start or end)')
        if "." in part:
            raise MailboxNameInvalid(name, '"." is not allowed; use "/" for sub-folders')
    return name


class ListPattern:
    """A LIST pattern as an NFA: state bit i set = the first i tokens have matched."""

    __slots__ = (
        "_accept",
        "_delimiter",
        "_literal",
        "_literal_folded",
        "_percent",
        "_star",
        "_wild",
    )

    def __init__(self, pattern: str, delimiter: str = DELIMITER) -> None:
        # Runs of wildcards collapse: "%%" is "%", and any run holding "*" is "*".
        tokens: list[str | None] = []  # a character, or None for a wildcard
        kinds: list[str] = []
        for char in pattern:
            if char in "*%":
                if tokens and tokens[-1] is None:
                    if char == "*":
                        kinds[-1] = "*"
                    continue
                tokens.append(None)
                kinds.append(char)
            else:
                tokens.append(char)
                kinds.append("")
        self._delimiter = delimiter
        self._star = self._percent = 0
        self._literal: dict[str, int] = {}
        self._literal_folded: dict[str, int] = {}
        for i, (token, kind) in enumerate(zip(tokens, kinds, strict=True)):
            bit = 1 << i
            if kind == "*":
                self._star |= bit
            elif kind == "%":
                self._percent |= bit
            else:
                assert token is not None
                self._literal[token] = self._literal.get(token, 0) | bit
                folded = token.casefold()
                self._literal_folded[folded] = self._literal_folded.get(folded, 0) | bit
        self._wild = self._star | self._percent
        self._accept = 1 << len(tokens)

    def matches(self, name: str, *, ignore_case: bool = False) -> bool:
        literal = self._literal_folded if ignore_case else self._literal
        wild, star = self._wild, self._star
        states = 1 | ((1 & wild) << 1)  # a leading wildcard may match nothing
        for char in name:
            key = char.casefold() if ignore_case else char
            stay = states & (star if char == self._delimiter else wild)
            states = stay | ((states & literal.get(key, 0)) << 1)
            if not states:
                return False
            # A wildcard may match the empty string; runs are collapsed, so one step.
            states |= (states & wild) << 1
        return bool(states & self._accept)


_MODIFIED_BASE64 = re.compile(rb"[A-Za-z0-9+,]+")


def modutf7_decode_strict(data: bytes) -> str:
    """Decode a mailbox name; UnicodeError for an unterminated or malformed "&…-" shift.

    Bytes outside shifts map one to one to code points, as pymap's decoder does. Inside a
    shift: modified base64 ("," for "/") of UTF-16BE, with no lone surrogates.
    """
    data = bytes(data)
    parts: list[str] = []
    i = 0
    while i < len(data):
        if data[i] != 0x26:  # "&"
            parts.append(chr(data[i]))
            i += 1
            continue
        end = data.find(b"-", i + 1)
        if end < 0:
            raise UnicodeError("unterminated modified UTF-7 shift")
        chunk = data[i + 1 : end]
        if not chunk:
            parts.append("&")  # "&-"
        else:
            if not _MODIFIED_BASE64.fullmatch(chunk):
                raise UnicodeError("invalid modified base64")
            raw = chunk.replace(b",", b"/")
            try:
                decoded = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
                parts.append(decoded.decode("utf-16-be"))
            except (binascii.Error, UnicodeDecodeError):
                raise UnicodeError("invalid modified UTF-7 shift") from None
        i = end + 1
    return "".join(parts)


def modutf7_install() -> None:
    """Make pymap's parser (mailbox names, LIST patterns) use the strict decoder.

    pymap imports the function into each parsing module, so those names are the hook; a
    pymap upgrade that moves them fails `tests/imap/test_names.py`, not silently.
    """
    pymap.parsing.specials.mailbox.modutf7_decode = modutf7_decode_strict
    pymap.parsing.command.auth.modutf7_decode = modutf7_decode_strict
