"""Mailbox password rules, generation and hashing.

Rules (documented in the README): 12-128 characters; at least one lower-case letter, one
upper-case letter, one digit and one symbol; printable ASCII without spaces; no `#` (some
outreach tools cut a password at `#` on CSV import); must not contain the mailbox's local
part or address.

Hashes are scrypt (RFC 7914) with a per-password salt: memory-hard, in the standard library.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string

MIN_LENGTH = 12
MAX_LENGTH = 128
SYMBOLS = "!$%&()*+,-./:;<=>?@[]^_{|}~"
_ALLOWED = set(string.ascii_letters + string.digits + SYMBOLS)
# Generated passwords avoid look-alikes (0/O, 1/l/I) so they survive being read aloud.
_GEN_LETTERS = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"
_GEN_DIGITS = "23456789"
_GEN_SYMBOLS = "!$%*+-.=?@^_"

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def password_problems(password: str, *, local_part: str, address: str) -> list[str]:
    """Every rule the password breaks, in words a user can act on."""
    problems = []
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        problems.append(f"must be {MIN_LENGTH} to {MAX_LENGTH} characters long")
    if not any(c.islower() for c in password):
        problems.append("must contain a lower-case letter")
    if not any(c.isupper() for c in password):
        problems.append("must contain an upper-case letter")
    if not any(c.isdigit() for c in password):
        problems.append("must contain a digit")
    if not any(c in SYMBOLS for c in password):
        problems.append(f"must contain a symbol ({SYMBOLS})")
    if "#" in password:
        problems.append("must not contain '#'")
    elif any(c not in _ALLOWED for c in password):
        problems.append("may only contain printable ASCII letters, digits and symbols, no spaces")
    lowered = password.lower()
    # Very short local parts ("a", "jo") would forbid half the alphabet: check from 3 chars.
    if len(local_part) >= 3 and (local_part.lower() in lowered or address.lower() in lowered):
        problems.append("must not contain the mailbox address")
    return problems


def password_generate(length: int = 20, *, local_part: str = "", address: str = "") -> str:
    while True:
        candidate = _random_password(length)
        if not password_problems(candidate, local_part=local_part, address=address):
            return candidate


def _random_password(length: int) -> str:
    pools = [_GEN_LETTERS.lower(), _GEN_LETTERS.upper(), _GEN_DIGITS, _GEN_SYMBOLS]
    alphabet = "".join(pools)
    chars = [secrets.choice(pool) for pool in pools]
    chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def password_hash(password: str) -> str:
    salt = secrets.token_bytes(16)
    derived = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(derived).decode()}"


def password_verify(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, expected = encoded.split("$")
        if scheme != "scrypt":
            return False
        derived = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(derived, base64.b64decode(expected))
