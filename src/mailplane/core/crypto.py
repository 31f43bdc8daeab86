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


DIGEST_SCHEME = "sha256:"


def digest(value: str) -> str:
    """Lookup digest of a high-entropy token (API keys): `sha256:` + unpadded base64url of
    its SHA-256 (50 characters, distinct from the 64 hex digits of `legacy_digests`).

    Unkeyed on purpose. The tokens are 256 random bits (secrets.token_urlsafe(32)), so
    a leaked digest cannot be reversed by search: there is no dictionary to try, which is
    all a key (or a salt and a slow KDF, as for passwords) would defend against. A key
    would only bind every API key to one secret key, so rotating or retiring it would lock
    every client out (the HMAC this replaces did exactly that).
    """
    raw = hashlib.sha256(value.encode()).digest()
    return DIGEST_SCHEME + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def legacy_digests(value: str) -> list[str]:
    """The digests stored before `digest`: HMAC-SHA256 hex under one of the secret keys,
    whichever was the oldest configured when the API key was made; so any configured key.
    Matched once, the stored digest is upgraded to `digest` (tenancy.services)."""
    return [
        hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()
        for key in settings.SECRET_KEYS
    ]
