"""Reading a send request: every field checked, every problem named.

The limits are the ones users of the hosted services know (reference/sending.md):
50 recipients per message and 10 MB (Postmark), platform-owned headers refused as custom
headers (Hyvor Relay). Errors collect per field, so one 400 names every bad field.
"""

from __future__ import annotations

import binascii
import email.utils
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from mailplane.core.errors import ValidationFailed
from mailplane.sending.errors import MessageTooLarge, SendAtInvalid

MAX_RECIPIENTS = 50  # to + cc + bcc, after removing duplicates (Postmark's limit)
MESSAGE_MAX_BYTES = 10 * 1024 * 1024  # the composed message (Postmark: 10 MB)
MAX_HEADERS = 50
MAX_TAGS = 10
TAG_MAX_LENGTH = 100
MAX_METADATA = 20
METADATA_KEY_MAX = 40
METADATA_VALUE_MAX = 500
SUBJECT_MAX = 998  # RFC 5322 §2.1.1: a line is at most 998 characters
HEADER_VALUE_MAX = 998
STREAM_ID_MAX = 50
MAX_ATTACHMENTS = 10  # Hyvor Relay's limit
FILENAME_MAX = 255
# `send_at`: SendGrid's window (72 hours), the shortest of the anchors that schedule
# (reference/sending.md), which keeps a scheduled message inside the queue's own expiry.
SCHEDULE_AHEAD_MAX = timedelta(hours=72)
# RFC 3339 §5.6 date-time: full date, "T" (or a space, §5.6 NOTE), full time with an offset.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")

# Fields the platform writes itself, or that the request's own fields set: given as
# custom headers they would forge the identity checks (From, Sender), break the
# signature or bounce handling (DKIM-Signature, Return-Path, Received) or contradict the
# message's structure and our ids (Message-ID, MIME fields). Hyvor Relay refuses these.
OWNED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From", "Sender", "To", "Cc", "Bcc", "Reply-To", "Subject", "Date", "Message-ID",
        "Return-Path", "DKIM-Signature", "ARC-Seal", "ARC-Message-Signature",
        "ARC-Authentication-Results", "Authentication-Results", "Received", "MIME-Version",
        "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
    )
)  # fmt: skip
FIELDS = frozenset(
    {"from", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "headers", "tags",
     "metadata", "stream", "test_mode", "attachments", "send_at", "track_opens",
     "track_links"}
)  # fmt: skip

# RFC 5322 §3.2.3 dot-atom local part (ASCII; SMTPUTF8 local parts are a later step) and
# RFC 1035 host names; a domain in Unicode is taken in its IDNA form.
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
# RFC 5322 §3.6.8: a field name is printable ASCII except the colon.
_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}")
# RFC 2045 §5.1: type "/" subtype, each a token.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,127}"
_CONTENT_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})")
ATTACHMENT_FIELDS = frozenset({"filename", "content", "content_type"})


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    maintype: str
    subtype: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One address of a request: its display name and its address (domain lower-case)."""

    name: str
    address: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    def formatted(self) -> str:
        return email.utils.formataddr((self.name, self.address)) if self.name else self.address


@dataclass(frozen=True, slots=True)
class SendRequest:
    sender: Mailbox
    to: list[Mailbox]
    cc: list[Mailbox] = field(default_factory=list)
    bcc: list[Mailbox] = field(default_factory=list)
    reply_to: list[Mailbox] = field(default_factory=list)
    subject: str = ""
    text: str = ""
    html: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    stream: str | None = None
    # Mailgun's o:testmode: checked and recorded as delivered, never sent, on any server.
    test_mode: bool = False
    attachments: list[Attachment] = field(default_factory=list)
    send_at: datetime | None = None  # held in the queue until then (UTC)
    # Postmark's TrackOpens / TrackLinks for this message; None: as the stream and server.
    track_opens: bool | None = None
    track_links: bool | None = None

    @property
    def recipients(self) -> list[str]:
        """Envelope recipients (RFC 5321 RCPT TO): to, cc and bcc, each address once."""
        seen: dict[str, str] = {}
        for box in [*self.to, *self.cc, *self.bcc]:
            seen.setdefault(box.address.lower(), box.address)
        return list(seen.values())


class _Errors:
    def __init__(self) -> None:
        self.details: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.details.setdefault(name, []).append(message)

    def raise_any(self) -> None:
        if self.details:
            names = ", ".join(self.details)
            raise ValidationFailed(f"invalid message ({names})", details=self.details)


def _domain(text: str) -> str | None:
    text = text.rstrip(".")
    try:
        ascii_name = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        return None
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        return None
    return ascii_name.lower()


def address_parse(text: str) -> Mailbox | str:
    """One mailbox (`a@b.test` or `Name <a@b.test>`), or why it is not one."""
    if any(c in text for c in "\r\n\x00"):
        return "must not contain line breaks"  # header injection
    if len(text) > 998:
        return "is too long"
    pairs = email.utils.getaddresses([text])
    if len(pairs) != 1:
        return "must be one address"
    name, address = pairs[0]
    local, at, domain_part = address.rpartition("@")
    if not at or not _LOCAL.fullmatch(local) or len(local) > 64:
        return f"{text!r} is not an email address"
    domain = _domain(domain_part)
    if domain is None:
        return f"{text!r} is not an email address (bad domain)"
    return Mailbox(name=name.strip(), address=f"{local}@{domain}")


def _addresses(value: Any, name: str, errors: _Errors) -> list[Mailbox]:
    """A string of comma-separated addresses (Postmark) or a list of strings (Resend)."""
    if value is None:
        return []
    if isinstance(value, str):
        items = [part for _, part in _split(value)]
    elif isinstance(value, list):
        items = value
    else:
        errors.add(name, "must be a string or a list of strings")
        return []
    if len(items) > MAX_RECIPIENTS * 2:
        errors.add(name, f"lists more than {MAX_RECIPIENTS} recipients")
        return []
    found = []
    for i, item in enumerate(items):
        where = f"{name}[{i}]" if isinstance(value, list) else name
        if not isinstance(item, str):
            errors.add(where, "must be a string")
            continue
        parsed = address_parse(item)
        if isinstance(parsed, str):
            errors.add(where, parsed)
        else:
            found.append(parsed)
    return found


def _split(text: str) -> list[tuple[int, str]]:
    """Split on commas outside quotes and angle brackets ("Doe, J" <j@x.test>, k@x.test)."""
    parts: list[tuple[int, str]] = []
    depth, quoted, start = 0, False, 0
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth = max(0, depth - 1)
        elif char == "," and not quoted and depth == 0:
            parts.append((start, text[start:i]))
            start = i + 1
    parts.append((start, text[start:]))
    return [(i, p.strip()) for i, p in parts if p.strip()]


def _string(data: Mapping[str, Any], name: str, errors: _Errors, *, max_length: int | None) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        errors.add(name, "must be a string")
        return ""
    if max_length is not None and len(value) > max_length:
        errors.add(name, f"must be at most {max_length} characters")
        return ""
    return value


def _headers(value: Any, errors: _Errors) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        errors.add("headers", 'must be an object of header names to values: {"X-Id": "7"}')
        return []
    if len(value) > MAX_HEADERS:
        errors.add("headers", f"must have at most {MAX_HEADERS} fields")
        return []
    found = []
    for name, text in value.items():
        where = f"headers.{name}"
        if not _FIELD_NAME.fullmatch(name):
            errors.add("headers", f"{name[:80]!r} is not a header field name (RFC 5322 §3.6.8)")
        elif name.lower() in OWNED_HEADERS:
            errors.add(
                where, f"{name} is set by the platform and cannot be given as a custom header"
            )
        elif not isinstance(text, str):
            errors.add(where, "must be a string")
        elif any(c in text for c in "\r\n\x00"):
            errors.add(where, "must not contain line breaks")
        elif len(text) > HEADER_VALUE_MAX:
            errors.add(where, f"must be at most {HEADER_VALUE_MAX} characters")
        else:
            found.append((name, text))
    return found


def _tags(value: Any, errors: _Errors) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        errors.add("tags", "must be a list of strings")
        return []
    if len(value) > MAX_TAGS:
        errors.add("tags", f"must have at most {MAX_TAGS} tags")
        return []
    for tag in value:
        if not tag.strip() or len(tag) > TAG_MAX_LENGTH or any(c in tag for c in "\r\n"):
            errors.add("tags", f"each tag must be 1 to {TAG_MAX_LENGTH} characters on one line")
            return []
    return list(dict.fromkeys(value))


def _metadata(value: Any, errors: _Errors) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.add("metadata", 'must be an object of strings: {"order_id": "1234"}')
        return {}
    if len(value) > MAX_METADATA:
        errors.add("metadata", f"must have at most {MAX_METADATA} keys")
        return {}
    for key, item in value.items():
        if not key or len(key) > METADATA_KEY_MAX:
            errors.add("metadata", f"keys must be 1 to {METADATA_KEY_MAX} characters")
        elif not isinstance(item, str):
            errors.add(f"metadata.{key}", "must be a string")
        elif len(item) > METADATA_VALUE_MAX:
            errors.add(f"metadata.{key}", f"must be at most {METADATA_VALUE_MAX} characters")
    return dict(value)


def _attachments(value: Any, errors: _Errors) -> list[Attachment]:
    """`[{"filename", "content" (base64), "content_type"}]`, Resend's names."""
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add("attachments", "must be a list of {filename, content, content_type}")
        return []
    if len(value) > MAX_ATTACHMENTS:
        errors.add("attachments", f"must have at most {MAX_ATTACHMENTS} attachments")
        return []
    found = []
    for i, item in enumerate(value):
        where = f"attachments[{i}]"
        if not isinstance(item, dict):
            errors.add(where, "must be an object {filename, content, content_type}")
            continue
        for name in sorted(set(item) - ATTACHMENT_FIELDS):
            errors.add(f"{where}.{name[:80]}", "is not a field of an attachment")
        filename = item.get("filename")
        if not isinstance(filename, str) or not filename.strip():
            errors.add(f"{where}.filename", "is required: a file name")
            continue
        if len(filename) > FILENAME_MAX or any(ord(c) < 32 or c == "\x7f" for c in filename):
            errors.add(f"{where}.filename", f"must be 1 to {FILENAME_MAX} printable characters")
            continue
        content = item.get("content")
        if not isinstance(content, str):
            errors.add(f"{where}.content", "is required: the file's bytes in base64")
            continue
        try:
            data = binascii.a2b_base64(content.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            errors.add(f"{where}.content", "is not base64 (RFC 4648 §4)")
            continue
        content_type = item.get("content_type", "application/octet-stream")
        match = _CONTENT_TYPE.fullmatch(content_type) if isinstance(content_type, str) else None
        if match is None:
            errors.add(f"{where}.content_type", 'must be a MIME type such as "application/pdf"')
            continue
        maintype, subtype = match.group(1).lower(), match.group(2).lower()
        if maintype == "multipart":
            errors.add(f"{where}.content_type", "must not be multipart")
            continue
        found.append(Attachment(filename.strip(), maintype, subtype, data))
    return found


def send_at_parse(value: Any, *, now: datetime | None = None) -> datetime | None:
    """`send_at` as an aware UTC datetime, or SendAtInvalid (422) naming the field:
    an RFC 3339 date-time with an offset, in the future, at most 72 hours ahead."""
    if value is None:
        return None
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise SendAtInvalid(
            "send_at: not an RFC 3339 date-time",
            details={"send_at": ['must be an RFC 3339 date-time, e.g. "2026-12-24T09:00:00Z"']},
        )
    # Seconds "60" (a leap second, RFC 3339 §5.7) and dates like 02-30 fail here.
    text = value[:10] + "T" + value[11:]
    try:
        # Python keeps microseconds: more digits are cut (RFC 3339 allows any number).
        head, dot, tail = text.partition(".")
        if dot:
            digits = re.match(r"\d+", tail)
            assert digits is not None
            text = f"{head}.{digits[0][:6].ljust(6, '0')}{tail[digits.end() :]}"
        when = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as exc:
        raise SendAtInvalid(
            f"send_at: {exc}", details={"send_at": [f"is not a valid date-time: {exc}"]}
        ) from exc
    now = now or timezone.now()
    when = when.astimezone(UTC)
    if when <= now:
        raise SendAtInvalid(
            "send_at is in the past", details={"send_at": ["must be in the future"]}
        )
    if when > now + SCHEDULE_AHEAD_MAX:
        hours = int(SCHEDULE_AHEAD_MAX.total_seconds() // 3600)
        raise SendAtInvalid(
            f"send_at is more than {hours} hours ahead",
            details={"send_at": [f"must be at most {hours} hours ahead"]},
        )
    return when


def send_request_parse(data: Any) -> SendRequest:
    """A SendRequest from a decoded JSON body, or ValidationFailed naming each bad field."""
    errors = _Errors()
    if not isinstance(data, dict):
        raise ValidationFailed.on("body", "must be a JSON object (one message)")
    for name in sorted(set(data) - FIELDS):
        errors.add(name[:80], "is not a field of a message")
    sender: Mailbox | None = None
    raw_from = data.get("from")
    if raw_from is None or raw_from == "":
        errors.add("from", "is required")
    elif not isinstance(raw_from, str):
        errors.add("from", "must be a string")
    elif isinstance(parsed := address_parse(raw_from), str):
        errors.add("from", parsed)
    else:
        sender = parsed
    to = _addresses(data.get("to"), "to", errors)
    cc = _addresses(data.get("cc"), "cc", errors)
    bcc = _addresses(data.get("bcc"), "bcc", errors)
    if not to and "to" not in errors.details:
        errors.add("to", "is required: at least one recipient")
    reply_to = _addresses(data.get("reply_to"), "reply_to", errors)
    subject = _string(data, "subject", errors, max_length=SUBJECT_MAX)
    if any(c in subject for c in "\r\n"):
        errors.add("subject", "must be one line")
    # Bodies are bounded by the request body's limit; the message's is checked below.
    text = _string(data, "text", errors, max_length=None)
    html = _string(data, "html", errors, max_length=None)
    if not text and not html and not {"text", "html"} & set(errors.details):
        errors.add("text", "give text, html or both: the message has no body")
    headers = _headers(data.get("headers"), errors)
    tags = _tags(data.get("tags"), errors)
    metadata = _metadata(data.get("metadata"), errors)
    stream = _string(data, "stream", errors, max_length=STREAM_ID_MAX) or None
    attachments = _attachments(data.get("attachments"), errors)
    test_mode = data.get("test_mode", False)
    if not isinstance(test_mode, bool):
        errors.add("test_mode", "must be true or false")
    tracking: dict[str, bool | None] = {}
    for name in ("track_opens", "track_links"):
        value = data.get(name)
        if value is not None and not isinstance(value, bool):
            errors.add(name, "must be true, false or null")
        tracking[name] = value
    errors.raise_any()
    assert sender is not None
    send_at = send_at_parse(data.get("send_at"))
    sizes = [("html", len(html)), ("text", len(text))]
    sizes.append(("attachments", sum(len(a.data) for a in attachments)))
    for name, size in sizes:
        if size > MESSAGE_MAX_BYTES:
            raise MessageTooLarge(
                f"{name}: {size} characters or bytes, over the limit of {MESSAGE_MAX_BYTES}",
                details={name: [f"the message is over {MESSAGE_MAX_BYTES} bytes"]},
            )
    request = SendRequest(
        sender=sender,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        subject=subject,
        text=text,
        html=html,
        headers=headers,
        tags=tags,
        metadata=metadata,
        stream=stream,
        test_mode=test_mode is True,
        attachments=attachments,
        send_at=send_at,
        track_opens=tracking["track_opens"],
        track_links=tracking["track_links"],
    )
    if len(request.recipients) > MAX_RECIPIENTS:
        raise ValidationFailed.on(
            "to",
            f"{len(request.recipients)} recipients (to, cc and bcc together): "
            f"at most {MAX_RECIPIENTS} per message",
        )
    return request
