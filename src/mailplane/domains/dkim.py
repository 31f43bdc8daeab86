"""DKIM key material: RSA 2048 (RFC 8301 requires at least 1024; 2048 is the norm)."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True, slots=True)
class DkimKey:
    selector: str
    private_pem: str
    public_b64: str

    @property
    def txt_value(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public_b64}"


def dkim_key_generate(*, bits: int = 2048) -> DkimKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Date-stamped selectors let a rotated key be published beside the old one.
    selector = f"mp{datetime.now(UTC):%Y%m}{secrets.token_hex(2)}"
    return DkimKey(selector, private_pem, base64.b64encode(public_der).decode())
