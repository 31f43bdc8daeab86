"""A received message taken apart for the inbound webhook: addresses, headers, text, HTML,
attachments, a stripped reply. Pure (no database, no I/O): the MX runs it on its worker
threads before it answers DATA.

Whatever arrives is hostile until shown otherwise. The parser is the standard library's
(RFC 5322 / RFC 2045-2049, `policy.default`), which records defects instead of raising
while it parses; what can still raise is reading a header or decoding a body, so each
such read has its own fallback: the raw text, decoded with replacement characters. Only
two things are refused, with SMTP replies (RFC 3463 §3.7: X.6.0 "other or undefined
media error"): more than `MAX_PARTS` MIME parts and nesting deeper than `MAX_DEPTH`,
each of which would make the payload (or the walk) cost far more than the bytes did.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any

from mailplane.core.errors import DomainError, ImapStatus, SmtpStatus

MAX_PARTS = 250  # MIME parts of one message, nested ones included
MAX_DEPTH = 20  # multiparts within multiparts
MAX_HEADERS = 500  # header fields listed in the payload (the raw message has them all)
STRIPPED_MARKERS = re.compile(
    r"^(-{2,}\s*Original Message\s*-{2,}|On .{1,300} wrote:\s*$|>)", re.IGNORECASE
)


class MimeRefused(DomainError):
    """A message whose structure we will not take apart (too many parts, too deep)."""

    code = "mime_refused"
    http_status = 422
    smtp_status = SmtpStatus(554, "5.6.0")
    # RFC 5530 §3: CANNOT, the operation can never succeed (an APPEND of the same bytes).
    imap_status = ImapStatus("NO", "CANNOT")


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    content_id: str
    content: bytes

    def as_payload(self, *, include: bool) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "content_type": self.content_type,
            "content_id": self.content_id,
            "size": len(self.content),
            # Over the payload's bound: null, and the raw message has it (the API).
            "content": base64.b64encode(self.content).decode("ascii") if include else None,
        }


@dataclass(slots=True)
class Parsed:
    from_: dict[str, str]
    to: list[dict[str, str]]
    cc: list[dict[str, str]]
    reply_to: list[dict[str, str]]
    subject: str
    date: str
    message_id: str
    headers: list[dict[str, str]]
    text: str
    html: str
    attachments: list[Attachment]
    defects: int  # what the parser had to repair (RFC 2045 violations and the like)

    @property
    def stripped_text_reply(self) -> str:
        return stripped_reply(self.text)


def text_clean(value: str) -> str:
    """Printable in JSON and storable in PostgreSQL: bytes the parser kept as surrogate
    escapes become U+FFFD, as do lone surrogates; NUL goes (no text column holds it)."""
    try:
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value.replace("\x00", "")


def _header(message: Message, name: str) -> str:
    """The decoded value (RFC 2047 words and all), or the raw one if decoding fails."""
    try:
        value = message.get(name)
        return text_clean(str(value)) if value is not None else ""
    except Exception:  # the stdlib's header parser has raised IndexError, ValueError…
        raw = next((v for k, v in message.raw_items() if k.lower() == name.lower()), "")
        return text_clean(str(raw))


def _addresses(message: Message, name: str) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    try:
        header = message.get(name)
        if header is None:
            return []
        for address in getattr(header, "addresses", ()):
            email = address.addr_spec if address.username else ""
            if email or address.display_name:
                found.append({"email": text_clean(email), "name": text_clean(address.display_name)})
        return found
    except Exception:
        pass
    for display, email in getaddresses([_header(message, name)]):
        if email or display:
            found.append({"email": text_clean(email), "name": text_clean(display)})
    return found


def _body_text(part: Message) -> str:
    """A text part's content, decoded from its transfer encoding and its charset; an
    unknown or broken charset reads as UTF-8 with replacement characters."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if not isinstance(payload, bytes):
        payload = str(part.get_payload() or "").encode("utf-8", "surrogateescape")
    charset = "utf-8"
    try:
        charset = part.get_content_charset() or "us-ascii"
        text = payload.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        # LookupError: unknown names, and the bytes-to-bytes codecs ("base64", "rot13").
        text = payload.decode("utf-8", "replace")
    return text_clean(text)


def _content(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def _filename(part: Message) -> str:
    try:
        return text_clean(part.get_filename() or "")
    except Exception:
        return ""


def _disposition(part: Message) -> str:
    try:
        return (part.get_content_disposition() or "").lower()
    except Exception:
        return ""


def _content_type(part: Message) -> str:
    try:
        return text_clean(part.get_content_type())
    except Exception:
        return "application/octet-stream"


class _Walk:
    def __init__(self) -> None:
        self.parts = 0
        self.text: list[str] = []
        self.html: list[str] = []
        self.attachments: list[Attachment] = []

    def count(self, part: Message, depth: int) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise MimeRefused(f"Message has more than {MAX_PARTS} MIME parts")
        if depth > MAX_DEPTH:
            raise MimeRefused(f"MIME parts nested deeper than {MAX_DEPTH}")

    def visit(self, part: Message, depth: int = 0) -> None:
        self.count(part, depth)
        content_type = _content_type(part)
        if content_type == "message/rfc822":
            # An attached message: one attachment (.eml), its parts counted all the same.
            inner = part.get_payload()
            for nested in _children(inner):
                self.walk_only(nested, depth + 1)
            self.attachments.append(
                Attachment(_filename(part) or "message.eml", content_type, "", _as_bytes(part))
            )
            return
        if part.is_multipart():
            for child in _children(part.get_payload()):
                self.visit(child, depth + 1)
            return
        disposition = _disposition(part)
        filename = _filename(part)
        if disposition != "attachment" and not filename:
            if content_type == "text/plain":
                self.text.append(_body_text(part))
                return
            if content_type == "text/html":
                self.html.append(_body_text(part))
                return
        content_id = _cid(part)
        self.attachments.append(Attachment(filename, content_type, content_id, _content(part)))

    def walk_only(self, part: Message, depth: int) -> None:
        self.count(part, depth)
        for child in _children(part.get_payload() if part.is_multipart() else None):
            self.walk_only(child, depth + 1)


def _children(payload: Any) -> list[Message]:
    """A multipart's parts (the parser leaves a str where a part was too broken)."""
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _cid(part: Message) -> str:
    return _header(part, "Content-ID").strip().strip("<>")


def _as_bytes(part: Message) -> bytes:
    inner = _children(part.get_payload())
    try:
        if inner:
            return bytes(inner[0].as_bytes(policy=policy.SMTP))
    except Exception:
        pass
    return b""


def stripped_reply(text: str) -> str:
    """The new text of a reply, without the quoted message under it (Postmark's
    StrippedTextReply): everything above the first quote marker ("On … wrote:", a line
    starting with ">", "-----Original Message-----"). A heuristic, as theirs is."""
    kept: list[str] = []
    for line in text.splitlines():
        if STRIPPED_MARKERS.match(line.strip()):
            break
        kept.append(line)
    return "\n".join(kept).strip()


def message_parse(raw: bytes) -> Parsed:
    """Take `raw` apart. Never raises but MimeRefused (too many parts, too deep)."""
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
    except RecursionError:
        # The feed parser descends once per nested multipart: a bomb of boundaries.
        raise MimeRefused(f"MIME parts nested deeper than {MAX_DEPTH}") from None
    walk = _Walk()
    walk.visit(message)
    headers = []
    for name, value in list(message.raw_items())[:MAX_HEADERS]:
        try:
            decoded = str(policy.default.header_fetch_parse(name, value))
        except Exception:
            decoded = str(value)
        headers.append({"name": text_clean(name), "value": text_clean(decoded)})
    froms = _addresses(message, "From")
    defects = len(message.defects)
    return Parsed(
        from_=froms[0] if froms else {"email": "", "name": ""},
        to=_addresses(message, "To"),
        cc=_addresses(message, "Cc"),
        reply_to=_addresses(message, "Reply-To"),
        subject=_header(message, "Subject"),
        date=_header(message, "Date"),
        message_id=_header(message, "Message-ID").strip(),
        headers=headers,
        text="\n".join(walk.text),
        html="\n".join(walk.html),
        attachments=walk.attachments,
        defects=defects,
    )
