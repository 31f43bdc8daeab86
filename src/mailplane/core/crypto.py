"""Encryption at rest for secrets (mailbox passwords, provider credentials, DKIM keys).

Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`, keyed by HKDF from the configured
secret keys; MultiFernet decrypts with any configured key and encrypts with the newest,
so keys rotate by prepending a new one.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

_CONTEXT = b"mailplane:secrets-at-rest:v1"


class SecretUnreadable(Exception):
    """Stored ciphertext that no configured key opens (wrong or lost key)."""


def _derive(key: str) -> Fernet:
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CONTEXT).derive(key.encode())
    return Fernet(base64.urlsafe_b64encode(raw))


@functools.cache
def _box() -> MultiFernet:
    return MultiFernet([_derive(k) for k in settings.SECRET_KEYS])


def encrypt(plaintext: str) -> str:
    return _box().encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _box().decrypt(token.encode("ascii")).decode()
    except InvalidToken as exc:
        raise SecretUnreadable(
            "stored secret cannot be decrypted with the configured keys"
        ) from exc


def digest(value: str) -> str:
    """Keyed SHA-256 of a high-entropy token (API keys): fast to look up, useless if leaked."""
    return hmac.new(settings.SECRET_KEYS[-1].encode(), value.encode(), hashlib.sha256).hexdigest()
