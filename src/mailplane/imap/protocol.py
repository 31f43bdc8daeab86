"""The smallest corrections to pymap's protocol layer (pymap 0.36.7), found by imaptest.

pymap has no extension point for these; each is a replacement of one function or one
registry entry, installed once by `protocol_install()` (called where the server module is
imported) and checked by `tests/imap/test_compliance.py`, so a pymap upgrade that moves
them fails a test instead of silently bringing the bug back.

- ENVELOPE (RFC 9051 §7.5.2): the date as the header reads it (pymap re-formatted it),
  NIL for a missing display name (pymap sent ""), and groups with their markers.
- Sender (RFC 9051 §7.5.2 ENVELOPE): the stdlib's header registry parses "Sender" as a
  single address and raises ValueError on "Sender: a@x, b@y"; raised while the FETCH
  response was being written, it dropped the connection with BYE [SERVERBUG]. The envelope
  field is an address list anyway, so Sender is parsed as one.
- Content-Transfer-Encoding: binary (RFC 3516 §4): pymap's decoder registry knows 7bit, 8bit,
  quoted-printable and base64 and raised NotImplementedError for "binary" (again while
  writing, so BYE); binary content needs no decoding. An encoding nobody knows is served
  undecoded instead of dropping the connection.
- BODYSTRUCTURE (RFC 9051 §7.5.2): body sizes and line counts exclude the part's header.
- quoted-printable (RFC 2045 §6.7) decoded for BINARY[] with trailing white space deleted
  and soft line breaks followed by white space honoured; folded `boundary=` parameters
  unfolded (RFC 5322 §2.2.3).
- FETCH response labels (RFC 9051 §7.5.2, RFC 3516 §4.2): `BINARY.PEEK[1]` is answered as
  `BINARY[1]` (as `BODY.PEEK` is answered `BODY`), and `HEADER.FIELDS (from from)` echoes
  the field names as the client sent them; pymap sorted and de-duplicated them, and a
  client matching the response to its request did not find it.
- SEARCH (RFC 9051 §6.4.4): BODY matches the message body only (pymap also searched every
  header, so BODY was TEXT); FROM/TO/CC/BCC also match the header as written, so a name in
  an old-style comment ("user@example.org (Real Name)") is found.
- MIME sections (RFC 2046 §5.1.1, §5.1.5, RFC 9051 §6.4.5): a part's body ends before
  the CRLF of the next boundary, delimiter lines may carry trailing white space, a
  multipart/digest part is message/rfc822 by default, and sections inside message/rfc822
  parts (2.1, 2.1.HEADER) name the encapsulated message's parts.
- Atoms (RFC 3501 §9): "}" is an ATOM-CHAR; pymap's patterns refused it (BAD).
- Modified UTF-7 (RFC 3501 §5.1.3): a name that is not valid modified UTF-7 decodes to a
  name holding a lone surrogate, which `mailbox_name_check` refuses with NO [CANNOT], and
  which no LIST pattern matches. The strict decoder raised at parse time, so SELECT of such
  a name was BAD and its LIST dropped the connection; Dovecot answers NO.
"""

from __future__ import annotations

import re
from email.headerregistry import Address, AddressHeader
from typing import Any

import pymap.parsing.command.auth
import pymap.parsing.response.fetch
import pymap.parsing.specials.mailbox
from pymap.bytes import Writeable
from pymap.interfaces.message import LoadedMessageInterface, MessageInterface
from pymap.message import BaseLoadedMessage
from pymap.mime import MessageBody, MessageContent, MessageHeader
from pymap.mime.cte import MessageDecoder
from pymap.mime.parsed import ParsedHeaders
from pymap.parsing import Params, Parseable
from pymap.parsing.command.auth import ListCommand
from pymap.parsing.primitives import List, Nil, String
from pymap.parsing.response.fetch import (
    ContentBodyStructure,
    EnvelopeStructure,
    MessageBodyStructure,
    MultipartBodyStructure,
    TextBodyStructure,
)
from pymap.parsing.specials import AString, FetchAttribute, SearchKey
from pymap.search import SearchCriteria, SearchParams

from mailplane.imap.names import modutf7_decode_strict

__all__ = ["modutf7_decode_lenient", "protocol_install"]

# Stands in for an undecodable "&…" shift: a lone surrogate never names a mailbox.
INVALID_MUTF7 = "\udcff"


def modutf7_decode_lenient(data: bytes) -> str:
    """The strict decoder's answer, or, for invalid modified UTF-7, a name no folder has."""
    try:
        return modutf7_decode_strict(data)
    except UnicodeError:
        return INVALID_MUTF7 + bytes(data).decode("ascii", "replace")


class _UndecodedDecoder(MessageDecoder):
    """7bit/8bit/binary: the body as stored."""

    def decode(self, body: Any) -> Any:
        return body


class _Registry(dict[str, MessageDecoder]):
    """pymap's decoder registry; an unknown encoding is served undecoded, not a crash."""

    _known = frozenset({"7bit", "8bit", "quoted-printable", "base64"})

    def get(self, key: str, default: Any = None) -> Any:
        found = super().get(key)
        if found is None and key not in self._known:
            return _UndecodedDecoder()
        return found if found is not None else default


_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_LINE_BREAK = re.compile(rb"\r?\n")


class QuotedPrintableDecoder(MessageDecoder):
    """RFC 2045 §6.7 quoted-printable, for BINARY[] (RFC 3516).

    pymap used `quopri.decodestring`, which (through binascii.a2b_qp) keeps trailing white
    space that rule (3) says to delete and misses a soft line break followed by white
    space ("= " at a line end), so BINARY.SIZE and BINARY[] were wrong. Decoded lines end
    in CRLF; an "=" not followed by two hex digits is kept as it is (§6.7 note 1).
    """

    def decode(self, body: Any) -> Any:
        lines = _LINE_BREAK.split(bytes(body))
        out = bytearray()
        for index, line in enumerate(lines):
            line = line.rstrip(b" \t")
            soft = line.endswith(b"=")
            if soft:
                line = line[:-1]
            out += _QP_ESCAPE.sub(lambda hex_: bytes([int(hex_.group(1), 16)]), line)
            if not soft and index < len(lines) - 1:
                out += b"\r\n"
        return Writeable.wrap(bytes(out))


_pymap_get_boundary = MessageBody._get_boundary.__func__  # type: ignore[attr-defined]


def _get_boundary(cls: type[MessageBody], content_type: Any) -> bytes | None:
    """pymap's boundary, unfolded (RFC 5322 §2.2.3): a `boundary="foo<CRLF> bar"` split over
    two header lines is "foo bar"; pymap kept the CRLF and found no part at all."""
    boundary = _pymap_get_boundary(cls, content_type)
    return _LINE_BREAK.sub(b"", boundary) if boundary else boundary


_pymap_raw = FetchAttribute.raw.fget  # type: ignore[attr-defined]
_pymap_parse_section = FetchAttribute._parse_section.__func__  # type: ignore[attr-defined]


def _raw(self: FetchAttribute) -> bytes:
    """pymap's label, with BINARY.PEEK answered BINARY and header names as sent."""
    if self._raw is not None:
        return self._raw
    raw = _pymap_raw(self)
    if self.value == b"BINARY.PEEK":
        raw = b"BINARY" + raw[len(b"BINARY.PEEK") :]
    section = self.section
    sent = getattr(section, "sent_headers", None) if section is not None else None
    if sent and section is not None and section.headers:
        sorted_list = bytes(List(section.headers, sort=True))
        raw = raw.replace(sorted_list, bytes(List(sent)), 1)
    self._raw = raw
    return raw


def _parse_section(
    cls: type[FetchAttribute], buf: memoryview, params: Params
) -> tuple[FetchAttribute.Section, memoryview]:
    section, after = _pymap_parse_section(cls, buf, params)
    if section.headers:
        # The list once more, in the client's order and spelling (pymap keeps a set).
        consumed = bytes(buf[: len(buf) - len(after)])
        start, end = consumed.find(b"("), consumed.rfind(b")")
        if not 0 <= start < end:
            return section, after
        try:
            listed, _ = List.parse(
                memoryview(consumed[start : end + 1]), params.copy(expected=[AString])
            )
        except Exception:  # e.g. a name sent as a literal: fall back to pymap's label
            return section, after
        section.sent_headers = [bytes(hdr) for hdr in listed.value]
    return section, after


def _content(loaded_msg: LoadedMessageInterface) -> MessageContent | None:
    try:
        content = loaded_msg.content  # type: ignore[attr-defined]
    except Exception:  # pymap's _NoContent: the message has no loaded content
        return None
    return content if isinstance(content, MessageContent) else None


class BodyOnlySearchCriteria(SearchCriteria):
    """SEARCH BODY: the text of the message's parts, not its headers (RFC 9051 §6.4.4)."""

    def __init__(self, value: str, params: SearchParams) -> None:
        super().__init__(params)
        self.value = value.encode("utf-8", "replace")

    def matches(
        self, msg_seq: int, msg: MessageInterface, loaded_msg: LoadedMessageInterface
    ) -> bool:
        content = _content(loaded_msg)
        if content is None:
            return False
        for part in content.walk():
            if part.body.has_nested:
                continue
            if part.body.content_type.maintype == "text" and self._in(self.value, bytes(part.body)):
                return True
        return False


class AddressSearchCriteria(SearchCriteria):
    """FROM/TO/CC/BCC: the parsed addresses (pymap's way) or the header as written."""

    def __init__(self, key: bytes, value: str, params: SearchParams) -> None:
        super().__init__(params)
        self.header = key.lower()
        self.value = value

    def matches(
        self, msg_seq: int, msg: MessageInterface, loaded_msg: LoadedMessageInterface
    ) -> bool:
        if any(self._in(self.value, str(value)) for value in loaded_msg.get_header(self.header)):
            return True
        content = _content(loaded_msg)
        if content is None:
            return False
        raw = b"".join(bytes(v) for k, v in content.header.folded if k.lower() == self.header)
        if not raw:
            return False
        # Unfolded, as the header reads (RFC 5322 §2.2.3); 8-bit bytes kept as code points.
        text = raw.replace(b"\r\n", b"").replace(b"\n", b"").decode("utf-8", "replace")
        return self._in(self.value, text)


_pymap_of = SearchCriteria.of.__func__  # type: ignore[attr-defined]


def _criteria_of(cls: type[SearchCriteria], key: SearchKey, params: SearchParams) -> Any:
    if key.value not in params.disabled and not key.inverse:
        if key.value == b"BODY":
            return BodyOnlySearchCriteria(key.filter_str, params)
        if key.value in (b"FROM", b"TO", b"CC", b"BCC"):
            return AddressSearchCriteria(key.value, key.filter_str, params)
    return _pymap_of(cls, key, params)


def _envelope_value(self: EnvelopeStructure) -> Any:
    """pymap's ENVELOPE with the date as the Date header reads (RFC 9051 §7.5.2 env-date is
    an nstring: the header text), not re-formatted as an INTERNALDATE."""
    date = String.build(str(self.date)) if self.date else Nil()
    return List(
        [
            date,
            String.build(self.subject),
            self._addresses(self.from_),
            self._addresses(self.sender, self.from_),
            self._addresses(self.reply_to, self.from_),
            self._addresses(self.to),
            self._addresses(self.cc),
            self._addresses(self.bcc),
            String.build(self.in_reply_to),
            String.build(self.message_id),
        ]
    )


def _address(address: Address) -> List:
    return List(
        [
            String.build(address.display_name) if address.display_name else Nil(),
            Nil(),
            String.build(address.username),
            String.build(address.domain) if address.domain else Nil(),
        ]
    )


def _address_list_value(self: Any) -> Any:
    """pymap's address list (RFC 9051 §7.5.2 ENVELOPE), with a missing display name NIL (not
    "") and RFC 5322 groups as the start and end markers the grammar defines: (NIL NIL
    "name" NIL), the members, (NIL NIL NIL NIL). pymap dropped the groups' names."""
    items: list[List] = []
    for header in self.headers or ():
        groups = header.groups if hasattr(header, "groups") else ()
        for group in groups:
            if group.display_name is None:
                items.extend(_address(address) for address in group.addresses)
                continue
            items.append(List([Nil(), Nil(), String.build(group.display_name), Nil()]))
            items.extend(_address(address) for address in group.addresses)
            items.append(List([Nil(), Nil(), Nil(), Nil()]))
    return List(items) if items else Nil()


def _find_parts(
    cls: type[MessageBody], data: bytes, view: memoryview, lines: Any, boundary: bytes
) -> Any:
    """pymap's multipart split, with the delimiter lines RFC 2046 §5.1.1 defines.

    - "the CRLF preceding the boundary delimiter line is conceptually attached to the
      boundary": a part "hello" CRLF "--b" has the body "hello"; pymap kept the CRLF, so
      every BODY[n] and part size was 2 bytes long;
    - a delimiter line may end in linear white space ("transport padding"); pymap required
      the line to be exactly "--b", and "--b " started no part.
    """
    parts: list[list[Any]] = []
    delimiter, close = b"--" + boundary, b"--" + boundary + b"--"
    for line in lines:
        start, end, _next = line
        text = bytes(view[start:end]).rstrip(b" \t")
        if text == close:
            break
        if text == delimiter:
            parts.append([])
        elif parts:
            parts[-1].append(line)
    for part in parts:
        if part:
            start, end, _next = part[-1]
            part[-1] = (start, end, end)
    return parts


_RFC822 = "message/rfc822"


def _parse_multipart(
    cls: type[MessageBody],
    data: bytes,
    view: memoryview,
    lines: Any,
    content_type: Any,
    boundary: bytes,
) -> MessageBody:
    """pymap's multipart parse; in multipart/digest a part without a Content-Type is
    message/rfc822 (RFC 2046 §5.1.5), not text/plain, so its sections are a message's."""
    nested: list[MessageContent] = []
    digest = content_type.subtype == "digest"
    for part_lines in cls._find_parts(data, view, lines, boundary):
        if not digest:
            nested.append(MessageContent._parse(data, view, part_lines))
            continue
        header_lines, body_lines = MessageContent._split_lines(data, part_lines)
        header = MessageHeader._parse(data, view, header_lines)
        part_type = header.parsed.content_type or cls._parse_content_type(_RFC822)
        body = MessageBody._parse(data, view, body_lines, part_type)
        nested.append(MessageContent(data, header, body))
    return cls(data, lines, content_type, nested)


def _is_rfc822(self: MessageContent) -> bool:
    """By the part's effective type (a digest's default included), not its header alone."""
    return bool(self.body.content_type.content_type == _RFC822)


def _get_subpart(self: Any, section: Any) -> MessageContent:
    """The part a section number names (RFC 9051 §6.4.5 FETCH BODY[<section>]).

    pymap treated the `n` after a message/rfc822 part as an index into a list holding only
    the encapsulated message, so `2.1`, `2.2` and their HEADER/TEXT/MIME came back empty.
    Per the RFC, the parts of a message/rfc822 part are those of the message it holds, and
    part 1 of a message that is not multipart is its body.
    """
    current: MessageContent = self.content
    inside = False
    for number in section or ():
        if inside and current.is_rfc822 and current.body.has_nested:
            current = current.body.nested[0]  # into the encapsulated message
        body = current.body
        if body.content_type.maintype == "multipart":
            if not 1 <= number <= len(body.nested):
                raise IndexError(number)
            current = body.nested[number - 1]
        elif number != 1:
            raise IndexError(number)
        inside = True
    return current


def _body_size_lines(content: MessageContent) -> tuple[int, int]:
    """A part's body-fld-octets and body-fld-lines (RFC 9051 §7.5.2): its body only, and the
    lines it holds (a last line without a line end counts too)."""
    body = bytes(content.body)
    return len(body), body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def _get_body_structure(cls: Any, msg: MessageContent) -> Any:
    """pymap's BODYSTRUCTURE with sizes and line counts of the body, not of the whole part.

    RFC 9051 §7.5.2: body-fld-octets is "the size of the body in octets", the MIME header
    excluded; pymap counted the header too (a 7-byte "hello" CRLF part was 55 bytes, 3
    lines).
    """
    parsed = msg.header.parsed
    content_type = msg.body.content_type
    maintype, subtype = content_type.maintype, content_type.subtype
    params = cls._get_params(msg)
    disposition = parsed.content_disposition
    language = parsed.content_language
    location = parsed.content_location
    if maintype == "multipart":
        parts = [cls._get_body_structure(part) for part in msg.body.nested]
        return MultipartBodyStructure(subtype, params, disposition, language, location, parts)
    content_id = parsed.content_id
    content_desc = parsed.content_description
    encoding = parsed.content_transfer_encoding
    size, lines = _body_size_lines(msg)
    if maintype == "message" and subtype == "rfc822" and msg.body.has_nested:
        sub_msg = msg.body.nested[0]
        return MessageBodyStructure(
            params, disposition, language, location, content_id, content_desc, encoding,
            None, size, lines, cls._get_envelope_structure(sub_msg),
            cls._get_body_structure(sub_msg),
        )  # fmt: skip
    if maintype == "text":
        return TextBodyStructure(
            subtype, params, disposition, language, location, content_id, content_desc,
            encoding, None, size, lines,
        )  # fmt: skip
    return ContentBodyStructure(
        maintype, subtype, params, disposition, language, location, content_id, content_desc,
        encoding, None, size,
    )  # fmt: skip


# RFC 3501 §9 ATOM-CHAR allows "}" (only "{" is an atom-special); pymap's patterns for
# atoms, astrings and LIST patterns left it out, so `SELECT a}b` was BAD.
_ATOM = rb"[\x21\x23\x24\x26\x27\x2B-\x5B\x5E-\x7A\x7C-\x7E]+"
_ASTRING = rb"[\x21\x23\x24\x26\x27\x2B-\x5B\x5D\x5E-\x7A\x7C-\x7E]+"
_LIST_MAILBOX = rb"[\x21\x23-\x27\x2A-\x5B\x5D-\x7A\x7C-\x7E]+"


def protocol_install() -> None:
    """Install every correction above (idempotent)."""
    MessageBody._find_parts = classmethod(_find_parts)  # type: ignore[method-assign,assignment]
    MessageBody._parse_multipart = classmethod(_parse_multipart)  # type: ignore[method-assign,assignment]
    MessageContent.is_rfc822 = property(_is_rfc822)  # type: ignore[method-assign,assignment]
    BaseLoadedMessage._get_subpart = _get_subpart  # type: ignore[method-assign]
    BaseLoadedMessage._get_body_structure = classmethod(_get_body_structure)  # type: ignore[method-assign,assignment]
    Parseable._atom_pattern = re.compile(_ATOM)
    AString._pattern = re.compile(_ASTRING)
    ListCommand._list_mailbox_pattern = re.compile(_LIST_MAILBOX)
    EnvelopeStructure._value = property(_envelope_value)  # type: ignore[method-assign,assignment]
    address_list: Any = pymap.parsing.response.fetch._AddressList
    address_list._value = property(_address_list_value)
    registry = ParsedHeaders._registry
    for name in ("sender", "resent-sender"):
        registry.map_to_type(name, AddressHeader)  # type: ignore[arg-type]
    if not isinstance(MessageDecoder.registry, _Registry):
        MessageDecoder.registry = _Registry(MessageDecoder.registry)
    MessageDecoder.registry["binary"] = _UndecodedDecoder()
    MessageDecoder.registry["quoted-printable"] = QuotedPrintableDecoder()
    MessageBody._get_boundary = classmethod(_get_boundary)  # type: ignore[method-assign,assignment]
    FetchAttribute.raw = property(_raw)  # type: ignore[method-assign,assignment]
    FetchAttribute._parse_section = classmethod(_parse_section)  # type: ignore[method-assign,assignment]
    SearchCriteria.of = classmethod(_criteria_of)  # type: ignore[method-assign,assignment]
    pymap.parsing.specials.mailbox.modutf7_decode = modutf7_decode_lenient
    pymap.parsing.command.auth.modutf7_decode = modutf7_decode_lenient
