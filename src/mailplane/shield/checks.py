"""Built-in content checks: what gets mail filtered that a sender can fix, each a symbol
with a score in rspamd's scale (rspamd rejects at 15, we default to 10 per server).

Cheap by design (one parse of the composed message, no network): they run on every send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

# Link shorteners hide the destination, which is why filters score them (SpamAssassin's
# URI_SHORTENER, rspamd's URL_REDIRECTOR list).
SHORTENERS = frozenset(
    {
        "bit.ly", "tinyurl.com", "t.co", "goo.gl", "ow.ly", "is.gd", "buff.ly", "rebrand.ly",
        "cutt.ly", "shorturl.at", "tiny.cc", "rb.gy", "t.ly", "bl.ink", "s.id", "v.gd",
    }
)  # fmt: skip
# Types mail providers refuse outright (Gmail's blocked file types).
DANGEROUS_EXTENSIONS = frozenset(
    {
        "ade", "adp", "apk", "appx", "bat", "cab", "chm", "cmd", "com", "cpl", "dll", "dmg",
        "exe", "hta", "ins", "iso", "isp", "jar", "js", "jse", "lib", "lnk", "mde", "msc",
        "msi", "msix", "msp", "mst", "nsh", "pif", "ps1", "scr", "sct", "shb", "sys", "vb",
        "vbe", "vbs", "vxd", "wsc", "wsf", "wsh",
    }
)  # fmt: skip
_URL_HOST = re.compile(r"https?://([a-z0-9.-]{1,253})", re.I)
_IMG = re.compile(rb"<img\b", re.I)
_TAGS = re.compile(r"<[^>]*>")


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    score: float
    description: str


def _parts(message: EmailMessage) -> tuple[str | None, str | None, list[str]]:
    text = html = None
    attachments: list[str] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        filename = part.get_filename()
        if filename or part.get_content_disposition() == "attachment":
            attachments.append(filename or "")
            continue
        kind = part.get_content_type()
        try:
            content = part.get_content()
        except (LookupError, ValueError):  # an unknown charset: as good as no text
            continue
        if kind == "text/plain" and text is None:
            text = str(content)
        elif kind == "text/html" and html is None:
            html = str(content)
    return text, html, attachments


@dataclass(frozen=True, slots=True)
class Content:
    """What the checks read of a message: its first text and HTML parts (decoded), its
    attachments' names, and whether it carries List-Unsubscribe."""

    text: str | None
    html: str | None
    attachments: list[str]
    list_unsubscribe: bool


def content_of(raw: bytes) -> Content:
    """Parsed from the message's bytes (SMTP submission: the client wrote them)."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    text, html, attachments = _parts(message)
    return Content(text, html, attachments, "List-Unsubscribe" in message)


def builtin_symbols(raw: bytes, *, broadcast: bool) -> list[Symbol]:
    return symbols_of(content_of(raw), broadcast=broadcast)


def symbols_of(content: Content, *, broadcast: bool) -> list[Symbol]:
    text, html, attachments = content.text, content.html, content.attachments
    found: list[Symbol] = []
    if html is not None and not (text or "").strip():
        found.append(Symbol("NO_TEXT_PART", 1.0, "HTML without a plain-text alternative"))
        if _IMG.search(html.encode()) and len(_TAGS.sub("", html).strip()) < 80:
            found.append(Symbol("IMAGE_ONLY", 3.0, "images with almost no text"))
    # The decoded parts, not the raw bytes: a quoted-printable or base64 body hides its URLs.
    hosts = {h.lower().rstrip(".") for h in _URL_HOST.findall(f"{text or ''}\n{html or ''}")}
    shorteners = sorted(h for h in hosts if h in SHORTENERS or h.removeprefix("www.") in SHORTENERS)
    if shorteners:
        found.append(
            Symbol("URL_SHORTENER", 2.5, f"links through a shortener: {', '.join(shorteners)}")
        )
    dangerous = sorted(
        name for name in attachments if name.rsplit(".", 1)[-1].lower() in DANGEROUS_EXTENSIONS
    )
    if dangerous:
        found.append(
            Symbol("DANGEROUS_ATTACHMENT", 10.0, f"attachment types mail providers refuse: "
                   f"{', '.join(dangerous)}")
        )  # fmt: skip
    if broadcast and not content.list_unsubscribe:
        found.append(Symbol("BROADCAST_NO_UNSUBSCRIBE", 5.0, "bulk mail without List-Unsubscribe"))
    return found
