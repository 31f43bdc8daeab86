"""The parsing side of the IMAP extensions pymap 0.36.7 does not have.

pymap's command registry (`pymap.parsing.commands.Commands`) is its extension point for
commands: `extension_commands()` returns it with these registered, and
`MailplaneConfig.commands` hands it to every connection. The state machine's `do_<name>`
methods (imap/server.py) run them.

- ENABLE (RFC 5161): accepted in the authenticated state; it enables CONDSTORE (the
  only extension offered here that has to be enabled) and answers `* ENABLED` with what
  it did enable.
- ESEARCH (RFC 4731): `SEARCH RETURN (MIN MAX COUNT ALL)`. pymap parsed RETURN only in
  upper case (a client writing `return` got BAD) and accepted any option name; an option
  outside RFC 4731 §3.1 is BAD here (SAVE is SEARCHRES, which we do not offer).
- SORT (RFC 5256 §3): `SORT (criteria) charset keys`, and UID SORT.
- THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 §3), and UID THREAD.
- LIST-EXTENDED (RFC 5258) with LIST-STATUS (RFC 5819) and the SPECIAL-USE options
  (RFC 6154 §3): selection options, several patterns, return options.

A charset the server does not know is NO [BADCHARSET] (RFC 9051 §6.4.4, RFC 5256 §3), not
BAD: `CharsetRefused` carries it from the parser to the state machine.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from typing import ClassVar

from pymap.parsing import EndLine, Params, Space
from pymap.parsing.command import CommandAuth, CommandSelect
from pymap.parsing.command.auth import ListCommand
from pymap.parsing.command.select import SearchCommand
from pymap.parsing.commands import Commands
from pymap.parsing.exceptions import NotParseable
from pymap.parsing.primitives import String
from pymap.parsing.response.specials import ListResponse
from pymap.parsing.specials import Mailbox, SearchKey

from mailplane.imap.protocol import modutf7_decode_lenient
from mailplane.imap.sorting import SORT_KEYS

__all__ = [
    "CAPABILITIES",
    "ENABLEABLE",
    "SUPPORTED_CHARSETS",
    "EnableCommand",
    "ExtendedListCommand",
    "ExtendedListResponse",
    "ExtendedSearchCommand",
    "SortCommand",
    "ThreadCommand",
    "extension_commands",
]

# RFC 5256 §3 and RFC 9051 §6.4.4: US-ASCII and UTF-8 must be supported; these two are
# what NO [BADCHARSET (...)] lists. Other text codecs Python knows are accepted too.
SUPPORTED_CHARSETS = (b"US-ASCII", b"UTF-8")
# RFC 5161 §3.1: the capabilities ENABLE can turn on.
ENABLEABLE: frozenset[bytes] = frozenset({b"CONDSTORE", b"QRESYNC"})
# What LOGIN adds to pymap's capabilities (pymap: BINARY UIDPLUS MOVE CHILDREN ...).
CAPABILITIES = (
    b"ENABLE",
    b"CONDSTORE",
    b"QRESYNC",
    b"ESEARCH",
    b"SORT",
    b"THREAD=ORDEREDSUBJECT",
    b"THREAD=REFERENCES",
    b"LIST-EXTENDED",
    b"LIST-STATUS",
    b"SPECIAL-USE",
)
# RFC 4731 §3.1 return options.
ESEARCH_RETURNS = frozenset({b"MIN", b"MAX", b"COUNT", b"ALL"})
THREAD_ALGORITHMS = frozenset({b"ORDEREDSUBJECT", b"REFERENCES"})
# RFC 5258 §3.1 selection options, RFC 6154 §3 SPECIAL-USE; RFC 5258 §3.2 return options.
LIST_SELECT = frozenset({b"SUBSCRIBED", b"REMOTE", b"RECURSIVEMATCH", b"SPECIAL-USE"})
LIST_RETURN = frozenset({b"SUBSCRIBED", b"CHILDREN", b"STATUS", b"SPECIAL-USE"})
STATUS_ITEMS = frozenset(
    {b"MESSAGES", b"RECENT", b"UIDNEXT", b"UIDVALIDITY", b"UNSEEN", b"HIGHESTMODSEQ"}
)
# Patterns in one LIST: real clients send one or two; each is matched against every name.
MAX_LIST_PATTERNS = 32

_ATOM = re.compile(rb"[A-Za-z0-9_.=+-]+")
_SPACE_RUN = re.compile(rb" *")


class CharsetRefused(NotParseable):
    """A CHARSET the server does not support: NO [BADCHARSET (...)], not BAD."""

    def __init__(self, buf: memoryview) -> None:
        super().__init__(buf, b"BADCHARSET")


def _word(buf: memoryview) -> tuple[bytes, memoryview]:
    """One atom, upper-cased; NotParseable if there is none."""
    match = _ATOM.match(buf)
    if match is None:
        raise NotParseable(buf)
    return match.group(0).upper(), buf[match.end() :]


def _paren_words(buf: memoryview, *, allow_empty: bool = True) -> tuple[list[bytes], memoryview]:
    """ "(" [atom *(SP atom)] ")" as upper-cased atoms (RFC 4466 §2.1's simple form)."""
    if buf[:1] != b"(":
        raise NotParseable(buf)
    buf = buf[1:]
    words: list[bytes] = []
    while buf[:1] != b")":
        if words:
            _, buf = Space.parse(buf, Params())
        word, buf = _word(buf)
        words.append(word)
    if not words and not allow_empty:
        raise NotParseable(buf)
    return words, buf[1:]


def _keyword(buf: memoryview, word: bytes) -> memoryview | None:
    """`buf` after " <word> " (case-insensitive), or None if it does not start so."""
    if buf[:1] != b" ":
        return None
    end = 1 + len(word)
    if bytes(buf[1:end]).upper() == word and buf[end : end + 1] == b" ":
        return buf[end + 1 :]
    return None


def charset_check(name: bytes, buf: memoryview) -> str:
    """The charset's Python name; CharsetRefused for one we cannot decode with."""
    try:
        text = name.decode("ascii")
        info = codecs.lookup(text)
    except (LookupError, UnicodeError):
        raise CharsetRefused(buf) from None
    if not getattr(info, "_is_text_encoding", True):  # rot13, base64: not charsets
        raise CharsetRefused(buf)
    return text


def _search_keys(
    buf: memoryview, params: Params, charset: str | None
) -> tuple[list[SearchKey], memoryview]:
    """1*(SP search-key) then the end of the line (RFC 9051 §6.4.4)."""
    keys: list[SearchKey] = []
    while True:
        try:
            _, after = Space.parse(buf, params)
            key, after = SearchKey.parse(after, params.copy(charset=charset))
        except NotParseable:
            if not keys:
                raise
            break
        keys.append(key)
        buf = after
    _, buf = EndLine.parse(buf, params)
    return keys, buf


class EnableCommand(CommandAuth):
    """ENABLE (RFC 5161 §3.1): capability names; unknown ones are ignored, not an error."""

    command = b"ENABLE"

    def __init__(self, tag: bytes, capabilities: Iterable[bytes]) -> None:
        super().__init__(tag)
        self.capabilities = tuple(capabilities)

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[EnableCommand, memoryview]:
        names: list[bytes] = []
        while True:
            try:
                _, after = Space.parse(buf, params)
                name, after = _word(after)
            except NotParseable:
                break
            names.append(name)
            buf = after
        if not names:
            raise NotParseable(buf)
        _, buf = EndLine.parse(buf, params)
        return cls(params.tag, names), buf


class ExtendedSearchCommand(SearchCommand):
    """SEARCH with RFC 4731 RETURN options; `returns` is None for a plain SEARCH."""

    returns: frozenset[bytes] | None = None

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[SearchCommand, memoryview]:
        returns: frozenset[bytes] | None = None
        after = _keyword(buf, b"RETURN")
        if after is not None:
            words, buf = _paren_words(after)
            unknown = set(words) - ESEARCH_RETURNS
            if unknown:
                raise NotParseable(after)
            # RFC 4731 §3.1: "RETURN ()" is "RETURN (ALL)".
            returns = frozenset(words) or frozenset({b"ALL"})
        charset: str | None = None
        after = _keyword(buf, b"CHARSET")
        if after is not None:
            name, buf = _astring(after, params)
            charset = charset_check(name, after)
        keys, buf = _search_keys(buf, params, charset)
        cmd = cls(params.tag, keys, charset)
        cmd.returns = returns
        return cmd, buf


class UidExtendedSearchCommand(ExtendedSearchCommand):
    command = b"UID SEARCH"
    delegate = ExtendedSearchCommand
    uid = True

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[SearchCommand, memoryview]:
        return super().parse(buf, params.copy(uid=True))


def _astring(buf: memoryview, params: Params) -> tuple[bytes, memoryview]:
    match = _ATOM.match(buf)
    if match is not None and buf[match.end() : match.end() + 1] in (b" ", b"\r", b"\n", b""):
        return match.group(0), buf[match.end() :]
    string, buf = String.parse(buf, params)
    return bytes(string.value), buf


class SortCommand(CommandSelect):
    """SORT (RFC 5256 §3): `program` is (key, reverse) pairs in the client's order."""

    command = b"SORT"
    uid: ClassVar[bool] = False

    def __init__(
        self,
        tag: bytes,
        program: list[tuple[bytes, bool]],
        charset: str,
        keys: Iterable[SearchKey],
    ) -> None:
        super().__init__(tag)
        self.program = program
        self.charset = charset
        self.keys = frozenset(keys)

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[SortCommand, memoryview]:
        _, buf = Space.parse(buf, params)
        words, buf = _paren_words(buf, allow_empty=False)
        program: list[tuple[bytes, bool]] = []
        reverse = False
        for word in words:
            if word == b"REVERSE" and not reverse:
                reverse = True
                continue
            if word not in SORT_KEYS:
                raise NotParseable(buf)
            # A key named again can only compare messages its first use found equal: it
            # changes nothing, and dropping it bounds the work at one pass per key.
            if all(word != key for key, _ in program):
                program.append((word, reverse))
            reverse = False
        if reverse:  # "REVERSE" with no key after it
            raise NotParseable(buf)
        _, buf = Space.parse(buf, params)
        name, after = _astring(buf, params)
        charset = charset_check(name, buf)
        keys, after = _search_keys(after, params, charset)
        return cls(params.tag, program, charset, keys), after


class UidSortCommand(SortCommand):
    command = b"UID SORT"
    delegate = SortCommand
    uid = True

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[SortCommand, memoryview]:
        return super().parse(buf, params.copy(uid=True))


class ThreadCommand(CommandSelect):
    """THREAD (RFC 5256 §3): an algorithm, a charset, search keys."""

    command = b"THREAD"
    uid: ClassVar[bool] = False

    def __init__(
        self, tag: bytes, algorithm: bytes, charset: str, keys: Iterable[SearchKey]
    ) -> None:
        super().__init__(tag)
        self.algorithm = algorithm
        self.charset = charset
        self.keys = frozenset(keys)

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[ThreadCommand, memoryview]:
        _, buf = Space.parse(buf, params)
        algorithm, buf = _word(buf)
        if algorithm not in THREAD_ALGORITHMS:
            raise NotParseable(buf)
        _, buf = Space.parse(buf, params)
        name, after = _astring(buf, params)
        charset = charset_check(name, buf)
        keys, after = _search_keys(after, params, charset)
        return cls(params.tag, algorithm, charset, keys), after


class UidThreadCommand(ThreadCommand):
    command = b"UID THREAD"
    delegate = ThreadCommand
    uid = True

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[ThreadCommand, memoryview]:
        return super().parse(buf, params.copy(uid=True))


class ExtendedListCommand(ListCommand):
    """LIST in RFC 5258 §6's syntax; `extended` is False for a plain RFC 9051 LIST.

    A plain LIST (one pattern, no options) keeps pymap's answer, with \\HasChildren and
    \\HasNoChildren (RFC 3348); the extended forms return those only when asked
    (RETURN (CHILDREN)), as Dovecot does and imaptest's listext script expects.
    """

    def __init__(
        self,
        tag: bytes,
        ref_name: str,
        patterns: list[str],
        *,
        select: frozenset[bytes] = frozenset(),
        returns: frozenset[bytes] = frozenset(),
        status: tuple[bytes, ...] = (),
        extended: bool = False,
    ) -> None:
        super().__init__(tag, ref_name, patterns[0] if patterns else "")
        self.patterns = patterns
        self.select = select
        self.returns = returns
        self.status = status
        self.extended = extended

    @classmethod
    def _pattern(cls, buf: memoryview, params: Params) -> tuple[str, memoryview]:
        match = cls._list_mailbox_pattern.match(buf)
        if match:
            return modutf7_decode_lenient(match.group(0)), buf[match.end(0) :]
        string, buf = String.parse(buf, params)
        return modutf7_decode_lenient(string.value), buf

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[ListCommand, memoryview]:
        extended = False
        select: frozenset[bytes] = frozenset()
        _, buf = Space.parse(buf, params)
        if buf[:1] == b"(":
            extended = True
            words, buf = _paren_words(buf)
            select = frozenset(words)
            if select - LIST_SELECT:
                raise NotParseable(buf)
            # RFC 5258 §3.1: RECURSIVEMATCH without a base option (SUBSCRIBED, the only
            # one CHILDINFO is defined for here) is an error.
            if b"RECURSIVEMATCH" in select and b"SUBSCRIBED" not in select:
                raise NotParseable(buf)
            _, buf = Space.parse(buf, params)
        ref_name, buf = Mailbox.parse(buf, params)
        _, buf = Space.parse(buf, params)
        patterns: list[str] = []
        if buf[:1] == b"(":
            extended = True
            buf = buf[1:]
            while buf[:1] != b")":
                if patterns:
                    _, buf = Space.parse(buf, params)
                pattern, buf = cls._pattern(buf, params)
                patterns.append(pattern)
                if len(patterns) > MAX_LIST_PATTERNS:
                    raise NotParseable(buf)
            if not patterns:
                raise NotParseable(buf)
            buf = buf[1:]
        else:
            pattern, buf = cls._pattern(buf, params)
            patterns.append(pattern)
        returns: frozenset[bytes] = frozenset()
        status: tuple[bytes, ...] = ()
        after = _keyword(buf, b"RETURN")
        if after is not None:
            extended = True
            returns, status, buf = cls._parse_returns(after)
        _, buf = EndLine.parse(buf, params)
        cmd = cls(
            params.tag,
            ref_name.value,
            patterns,
            select=select,
            returns=returns,
            status=status,
            extended=extended,
        )
        return cmd, buf

    @classmethod
    def _parse_returns(
        cls, buf: memoryview
    ) -> tuple[frozenset[bytes], tuple[bytes, ...], memoryview]:
        """RETURN (opts): RFC 5258 §3.2, with STATUS (items) from RFC 5819 §2."""
        if buf[:1] != b"(":
            raise NotParseable(buf)
        buf = buf[1:]
        returns: set[bytes] = set()
        status: list[bytes] = []
        while buf[:1] != b")":
            if returns:
                _, buf = Space.parse(buf, Params())
            word, buf = _word(buf)
            if word not in LIST_RETURN:
                raise NotParseable(buf)
            if word == b"STATUS":
                _, buf = Space.parse(buf, Params())
                items, buf = _paren_words(buf, allow_empty=False)
                if set(items) - STATUS_ITEMS:
                    raise NotParseable(buf)
                status.extend(item for item in items if item not in status)
            returns.add(word)
        return frozenset(returns), tuple(status), buf[1:]


class ExtendedListResponse(ListResponse):
    """A LIST response with RFC 5258 §3.5 CHILDINFO extended data when there is some."""

    def __init__(
        self, mailbox: str, sep: str | None, attrs: Iterable[bytes], childinfo: Iterable[bytes]
    ) -> None:
        super().__init__(mailbox, sep, attrs)
        self.childinfo = tuple(childinfo)

    @property
    def text(self) -> bytes:
        text = super().text
        if self.childinfo:
            infos = b" ".join(b'"%b"' % info for info in self.childinfo)
            text += b' ("CHILDINFO" (%b))' % infos
        return text


def extension_commands() -> Commands:
    """pymap's command registry with the extended and added commands above."""
    commands = Commands()
    for cmd in (
        EnableCommand,
        ExtendedSearchCommand,
        UidExtendedSearchCommand,
        SortCommand,
        UidSortCommand,
        ThreadCommand,
        UidThreadCommand,
        ExtendedListCommand,
    ):
        commands.register(cmd)
    return commands
