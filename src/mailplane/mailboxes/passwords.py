"""Mailbox password rules, generation and hashing.

Rules (documented in the README): 12-128 characters; at least one lower-case letter, one
upper-case letter, one digit and one symbol; printable ASCII without spaces; no `#` (some
outreach tools cut a password at `#` on CSV import); must not start with `=`, `+`, `-` or
`@` (CSV exports carry passwords unescaped, since an escaped one would no longer log in,
and a spreadsheet reads such a cell as a formula); must not contain the mailbox's local
part or address.

Generation builds a password that meets every rule but the last by construction, and
retries a bounded number of times for the last (a random 20-character password contains a
given 3-character local part about once in 2,000 tries).

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
# A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV Injection");
# tab and CR are not allowed in passwords at all. The CSV writer uses the same list.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_GENERATION_ATTEMPTS = 64

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
    if password.startswith(FORMULA_PREFIXES):
        problems.append("must not start with = + - or @ (a spreadsheet would read it as a formula)")
    if "#" in password:
        problems.append("must not contain '#'")
    elif any(c not in _ALLOWED for c in password):
        problems.append("may only contain printable ASCII letters, digits and symbols, no spaces")
    if _contains_address(password, local_part=local_part, address=address):
        problems.append("must not contain the mailbox address")
    return problems


def _contains_address(password: str, *, local_part: str, address: str) -> bool:
    lowered = password.lower()
    # Very short local parts ("a", "jo") would forbid half the alphabet: check from 3 chars.
    # An empty text is in every password: only what is known is checked (issue 8: an
    # empty address made every candidate fail and generation loop for ever).
    return (len(local_part) >= 3 and local_part.lower() in lowered) or (
        len(address) >= 3 and address.lower() in lowered
    )


def password_generate(length: int = 20, *, local_part: str = "", address: str = "") -> str:
    """A random password that passes `password_problems` for this mailbox.

    Raises ValueError for a length outside the rules, RuntimeError if no candidate avoided
    the address in _GENERATION_ATTEMPTS tries (no 3+ character text can do that to
    random passwords; it would be a bug here).
    """
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ValueError(f"length must be {MIN_LENGTH} to {MAX_LENGTH}")
    for _ in range(_GENERATION_ATTEMPTS):
        candidate = _random_password(length)
        if not _contains_address(candidate, local_part=local_part, address=address):
            return candidate
    raise RuntimeError(f"no password avoiding the address in {_GENERATION_ATTEMPTS} tries")


def _random_password(length: int) -> str:
    """Meets every composition rule by construction: it starts with a letter (never a
    formula prefix), then holds a lower-case letter, an upper-case letter, a digit and a
    symbol among random characters of the look-alike-free alphabet, shuffled."""
    pools = [_GEN_LETTERS.lower(), _GEN_LETTERS.upper(), _GEN_DIGITS, _GEN_SYMBOLS]
    alphabet = "".join(pools)
    rest = [secrets.choice(pool) for pool in pools]
    rest += [secrets.choice(alphabet) for _ in range(length - 1 - len(rest))]
    secrets.SystemRandom().shuffle(rest)
    return secrets.choice(_GEN_LETTERS) + "".join(rest)


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
