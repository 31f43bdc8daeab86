"""DKIM signing (RFC 6376) with dkimpy, relaxed/relaxed, once per message.

dkimpy does the canonicalisation, header selection and signature header; its RSA step is
pure Python (~15 ms for a 2048-bit key), which alone would cap a worker near 70 msg/s.
`_openssl_rsa_sign` replaces only that step with OpenSSL through `cryptography`: the
signature bytes are identical (RSASSA-PKCS1-v1_5 is deterministic), and dkim.verify
checks them in the tests.
"""

from __future__ import annotations

import functools
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

# RFC 6376 §5.4.1 recommends these; signing Reply-To and the MIME headers too keeps a
# forwarder from swapping the body's interpretation. Listed headers that are absent are
# still signed (as empty), which stops them being added later.
SIGNED_HEADERS = [
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
]

_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}


@functools.lru_cache(maxsize=1024)
def _private_key(n: int, e: int, d: int, p: int, q: int) -> rsa.RSAPrivateKey:
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, n),
    )
    return numbers.private_key()


_pure_python_sign = dkim.RSASSA_PKCS1_v1_5_sign


def _openssl_rsa_sign(hash: Any, private_key: dict[str, int]) -> bytes:
    algorithm = _HASHES.get(hash.name.lower())
    if algorithm is None:
        return _pure_python_sign(hash, private_key)  # type: ignore[no-any-return]
    key = _private_key(
        private_key["modulus"],
        private_key["publicExponent"],
        private_key["privateExponent"],
        private_key["prime1"],
        private_key["prime2"],
    )
    return key.sign(hash.digest(), padding.PKCS1v15(), Prehashed(algorithm()))


dkim.RSASSA_PKCS1_v1_5_sign = _openssl_rsa_sign
# Parsing the PEM (pure-Python ASN.1) costs as much as signing; a domain's key repeats.
dkim.parse_pem_private_key = functools.lru_cache(maxsize=256)(dkim.parse_pem_private_key)


@functools.lru_cache(maxsize=256)
def _traditional_pem(private_pem: str) -> bytes:
    """dkimpy parses RFC 8017 RSAPrivateKey PEM; our keys are stored as PKCS#8."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def dkim_sign(*, raw: bytes, domain: str, selector: str, private_pem: str) -> bytes:
    """Return `raw` with a DKIM-Signature header prepended (d=domain, s=selector)."""
    header = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        _traditional_pem(private_pem),
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=SIGNED_HEADERS,
    )
    return header + raw
