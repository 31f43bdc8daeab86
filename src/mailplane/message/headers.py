"""Reading and amending RFC 5322 headers without re-serialising the message.

New fields are prepended as bytes: the body and every existing field stay byte-for-byte
what the client sent (re-serialising with the `email` package would rewrap and re-encode,
which breaks DKIM signatures made by the client and changes MIME boundaries).
"""

from __future__ import annotations

import email.utils
import re
import uuid
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32


def header_section(raw: bytes) -> bytes:
    """The header fields and the empty line that ends them (RFC 5322 §2.1): parsing only
    these is what headersonly parsing yields, without feeding the body line by line."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := raw.find(sep)) >= 0]
    return raw[: min(ends)] if ends else raw


def headers_of(raw: bytes) -> Message:
    # compat32 never raises on malformed fields; we only read a few of them. Decoded as
    # UTF-8 first (RFC 6532 §3: header fields may carry UTF-8): the bytes parser would
    # read them as ASCII and turn "josé@exämple.test" into replacement characters.
    text = header_section(raw).decode("utf-8", "surrogateescape")
    return HeaderParser(policy=compat32).parsestr(text, headersonly=True)


def from_addresses(headers: Message) -> list[str]:
    """Lower-cased addresses of every From field (RFC 5322 §3.6.2 allows a list)."""
    values = headers.get_all("From") or []
    pairs = email.utils.getaddresses([str(v) for v in values])
    return [addr.lower() for _, addr in pairs if addr]


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def unfold(value: str) -> str:
    """A field value on one line (RFC 5322 §2.2.3: remove each CRLF before a blank)."""
    return _FOLD.sub("", value)


def prepend(raw: bytes, fields: list[tuple[str, str]]) -> bytes:
    """Put `fields` on top, in the given order (trace fields must come first, §3.6.7)."""
    block = b"".join(f"{name}: {value}\r\n".encode() for name, value in fields)
    return block + raw


def new_message_id(domain: str) -> str:
    return f"<{uuid.uuid4().hex}@{domain}>"


def rfc5322_date() -> str:
    return email.utils.format_datetime(email.utils.localtime(), usegmt=False)


def address_domain(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def fields_take(raw: bytes, names: frozenset[str]) -> tuple[bytes, dict[str, list[str]]]:
    """Remove every header field whose name (lower-case) is in `names`, folded lines
    included (RFC 5322 §2.2.3); return the message without them and their unfolded values.

    Used for instruction headers a client sends to us and nobody else (the stream of a
    server key's SMTP message): only those lines go, every other byte stays as sent.
    """
    section = header_section(raw)
    if section == raw and not raw.endswith((b"\r\n\r\n", b"\n\n")):
        body = b""
    else:
        body = raw[len(section) :]
    kept: list[bytes] = []
    taken: dict[str, list[str]] = {}
    current: str | None = None  # the removed field whose continuation lines follow
    for line in section.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                taken[current][-1] += " " + line.strip().decode("utf-8", "replace")
                continue
            kept.append(line)
            continue
        name, colon, value = line.partition(b":")
        key = name.strip().lower().decode("ascii", "replace")
        if colon and key in names:
            current = key
            taken.setdefault(key, []).append(value.strip().decode("utf-8", "replace"))
            continue
        current = None
        kept.append(line)
    return b"".join(kept) + body, taken
