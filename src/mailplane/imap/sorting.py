"""SORT and THREAD=ORDEREDSUBJECT (RFC 5256): sort keys from a message's header, and the order.

Kept apart from the protocol classes so the rules read as the RFC writes them and can be
tested without a server. Everything here is pure and runs on the search pool: a SORT over a
large mailbox parses every matching message's header, which must not hold the event loop.

Header values are read with the stdlib's compat32 parser, which never raises on malformed
input (a SORT must answer for a mailbox full of spam, not fail on one message).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from typing import NamedTuple

__all__ = [
    "SORT_KEYS",
    "SortItem",
    "base_subject",
    "ordered_subject_threads",
    "sort_items",
]

# RFC 5256 §3: the sort keys a client may name (each optionally preceded by REVERSE).
SORT_KEYS = frozenset({b"ARRIVAL", b"CC", b"DATE", b"FROM", b"SIZE", b"SUBJECT", b"TO"})

_PARSER = BytesHeaderParser(policy=compat32)
_WSP_RUN = re.compile(r"[ \t\r\n]+")
# RFC 5256 §5 ABNF: subj-trailer = "(fwd)" / WSP; subj-blob = "[" *BLOBCHAR "]" *WSP;
# subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"; subj-leader = (*subj-blob
# subj-refwd) / WSP; subj-fwd-hdr = "[fwd:"; subj-fwd-trl = "]".
_TRAILER = re.compile(r"(?:\(fwd\)| )$", re.IGNORECASE)
_LEADER = re.compile(r"^(?:(?:\[[^\[\]]*\] *)*(?:re|fwd?) *(?:\[[^\[\]]*\] *)?:| )", re.IGNORECASE)
_BLOB = re.compile(r"^\[[^\[\]]*\] *")
_FWD = re.compile(r"^\[fwd:(.*)\]$", re.IGNORECASE | re.DOTALL)


def _decoded(value: str) -> str:
    """An unstructured header value with RFC 2047 encoded-words decoded (best effort)."""
    try:
        parts = decode_header(value)
    except Exception:  # a malformed encoded-word: the raw text is what the client sees
        return value
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        try:
            out.append(chunk.decode(charset or "ascii", "replace"))
        except LookupError:  # an unknown charset name in the encoded-word
            out.append(chunk.decode("ascii", "replace"))
    # decode_header drops the white space between a plain word and an encoded word.
    return "".join(out) if len(parts) > 1 else (out[0] if out else "")


def base_subject(subject: str) -> str:
    """RFC 5256 §2.1: the base subject, the text SORT SUBJECT and THREAD group by."""
    # (1) encoded words decoded by the caller; runs of white space become one space.
    text = _WSP_RUN.sub(" ", subject)
    while True:
        # (2) remove trailers: "(fwd)" and white space at the end, repeatedly.
        while True:
            stripped = _TRAILER.sub("", text)
            if stripped == text:
                break
            text = stripped
        # (3)-(5) remove leaders ("Re:", "Fwd:", "[blob] re:") and a leading blob when
        # something remains after it, until neither applies.
        while True:
            before = text
            while True:
                stripped = _LEADER.sub("", text, count=1)
                if stripped == text:
                    break
                text = stripped
            blob = _BLOB.match(text)
            if blob is not None and text[blob.end() :].strip():
                text = text[blob.end() :]
            if text == before:
                break
        # (6) "[fwd: ... ]" around the whole subject: unwrap and start again at (2).
        forwarded = _FWD.match(text)
        if forwarded is None:
            return text
        text = forwarded.group(1)


def _first_mailbox(values: Sequence[str] | None) -> str:
    """RFC 5256 §3 FROM/TO/CC: the addr-mailbox (local part) of the first address.

    When the header starts with a group ("team: a@x, b@y;"), the first address of the
    IMAP address list is the group's start marker, whose addr-mailbox is the group's name
    (RFC 9051 §7.5.2 ENVELOPE), as Dovecot sorts it.
    """
    if not values:
        return ""
    group = _GROUP.match(str(values[0]))
    if group is not None:
        return group.group(1).strip().strip('"')
    for _name, address in getaddresses([str(v) for v in values]):
        if address:
            return address.rpartition("@")[0] if "@" in address else address
    return ""


# A display name then ":" before any "@", "<" or ",": RFC 5322 §3.4 group syntax.
_GROUP = re.compile(r'\s*((?:"[^"]*"|[^:@<>,"()])+):')


def _unicode_casemap(text: str) -> str:
    """i;unicode-casemap (RFC 5051 §2): titlecase each character, then NFKD.

    RFC 5256 §2.1 compares base subjects with it; upper-casing (not folding to lower
    case) is what puts "[" and "_" after the letters, as Dovecot and imaptest do.
    """
    return unicodedata.normalize("NFKD", "".join(char.title() for char in text))


def _ascii_casemap(text: str) -> str:
    """i;ascii-casemap (RFC 4790 §9.2): ASCII letters compared without case."""
    return text.translate(_ASCII_UPPER)


_ASCII_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


class HeaderFields(NamedTuple):
    """Sort values from the header, named as the SORT keys are."""

    FROM: str
    TO: str
    CC: str
    SUBJECT: str
    DATE: float


@dataclass(slots=True)
class SortItem:
    """One message as SORT and THREAD see it."""

    seq: int
    uid: int
    internal_date: datetime
    size: int
    header: bytes

    def fields(self) -> HeaderFields:
        """The header-derived sort values (parse once per message and command)."""
        parsed = _PARSER.parsebytes(self.header)
        return HeaderFields(
            FROM=_ascii_casemap(_first_mailbox(parsed.get_all("from"))),
            TO=_ascii_casemap(_first_mailbox(parsed.get_all("to"))),
            CC=_ascii_casemap(_first_mailbox(parsed.get_all("cc"))),
            SUBJECT=_unicode_casemap(base_subject(_decoded(str(parsed.get("subject", ""))))),
            DATE=self._sent_date(parsed.get("date")),
        )

    def _sent_date(self, value: object) -> float:
        """RFC 5256 §2.2: the Date header in UTC, or INTERNALDATE if it is missing or bad."""
        if value is not None:
            try:
                sent = parsedate_to_datetime(str(value))
            except (TypeError, ValueError, IndexError, OverflowError):
                sent = None
            if sent is not None:
                if sent.tzinfo is None:
                    sent = sent.replace(tzinfo=UTC)
                try:
                    return sent.timestamp()
                except (OverflowError, ValueError, OSError):
                    pass
        return _timestamp(self.internal_date)


def _timestamp(when: datetime) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def sort_items(items: Sequence[SortItem], program: Sequence[tuple[bytes, bool]]) -> list[SortItem]:
    """Messages in the order of `program` ((key, reverse) pairs), RFC 5256 §3.

    Ties under every key keep mailbox order (sequence numbers). Python's sort is stable
    (also with reverse=True), so sorting by the last key first and the first key last
    gives the lexicographic order the RFC asks for.
    """
    ordered = sorted(items, key=lambda item: item.seq)
    needs_header = any(key not in (b"ARRIVAL", b"SIZE") for key, _ in program)
    fields = {id(item): item.fields() for item in ordered} if needs_header else {}
    for key, reverse in reversed(program):
        if key == b"ARRIVAL":
            ordered.sort(key=lambda item: _timestamp(item.internal_date), reverse=reverse)
        elif key == b"SIZE":
            ordered.sort(key=lambda item: item.size, reverse=reverse)
        else:
            name = key.decode("ascii")
            ordered.sort(key=lambda item: getattr(fields[id(item)], name), reverse=reverse)
    return ordered


def ordered_subject_threads(items: Sequence[SortItem]) -> list[list[SortItem]]:
    """RFC 5256 §3 THREAD=ORDEREDSUBJECT: threads by base subject, each by sent date.

    Messages are sorted by (base subject, sent date, sequence); each run with one base
    subject is a thread whose first message is the parent of all the others; threads are
    ordered by the sent date of their first message (ties: its sequence number).
    """
    fields = {id(item): item.fields() for item in items}

    def order(item: SortItem) -> tuple[str, float, int]:
        values = fields[id(item)]
        return (values.SUBJECT, values.DATE, item.seq)

    threads: list[list[SortItem]] = []
    last: str | None = None
    for item in sorted(items, key=order):
        subject = fields[id(item)].SUBJECT
        if threads and subject == last:
            threads[-1].append(item)
        else:
            threads.append([item])
            last = subject
    threads.sort(key=lambda thread: (fields[id(thread[0])].DATE, thread[0].seq))
    return threads
