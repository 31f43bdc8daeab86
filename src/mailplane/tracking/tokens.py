"""Tracking tokens: 16 random bytes naming one message, then the recipient's and the
link's index, base64url without padding (26 characters).

Unguessable by the 128 random bits (secrets.token_bytes), not by a keyed MAC: the key is
looked up, so a forged or altered token names no message, or only a link of the message
its holder already has; no secret key is involved, so rotating SECRET_KEYS breaks no link
in mail already sent.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import struct
from dataclasses import dataclass

KEY_BYTES = 16
_TAIL = struct.Struct(">BH")  # recipient index, link index
TOKEN_LENGTH = 26  # base64url of 19 bytes, unpadded
PIXEL_LINK = 0xFFFF  # the link index the open pixel carries


@dataclass(frozen=True, slots=True)
class Token:
    key: str  # base64url of the 16 bytes, as TrackedMessage.key stores it
    recipient: int
    link: int


def key_new() -> str:
    return _b64(secrets.token_bytes(KEY_BYTES))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def token_make(*, key: str, recipient: int, link: int) -> str:
    raw = base64.urlsafe_b64decode(key + "==") + _TAIL.pack(recipient, link)
    return _b64(raw)


def token_parse(text: str) -> Token | None:
    """The token, or None for anything that is not one (checked by length first, so a
    huge path costs nothing)."""
    if len(text) != TOKEN_LENGTH or not text.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "==")
    except (binascii.Error, ValueError):
        return None
    if len(raw) != KEY_BYTES + _TAIL.size or _b64(raw) != text:  # one spelling only
        return None
    recipient, link = _TAIL.unpack(raw[KEY_BYTES:])
    return Token(key=_b64(raw[:KEY_BYTES]), recipient=recipient, link=link)
