"""Integers from outside (query parameters, path segments, JSON values, CSV cells), bounded.

Every id column is a 64-bit signed integer (BigAutoField: PostgreSQL bigint, SQLite
INTEGER), so a larger number cannot name anything and must not reach the database, where
it raises OverflowError (SQLite) or NumericValueOutOfRange (PostgreSQL) instead of "not
found". Only ASCII digits count: str.isdigit() also accepts "²" and "١٢", which int()
then refuses or reads as another number.
"""

from __future__ import annotations

import re
from typing import Any

from mailplane.core.errors import ValidationFailed

MAX_ID = 2**63 - 1
# Leading zeros are harmless; a bound on the length keeps int() cheap on hostile input.
_DIGITS = re.compile(r"[0-9]{1,25}")


def int_parse(
    raw: Any, *, name: str, minimum: int = 1, maximum: int = MAX_ID, noun: str = "an integer"
) -> int:
    """`raw` (a JSON integer or a string of ASCII digits) as an int in [minimum, maximum].

    Raises ValidationFailed naming `name`, so the client sees which field was wrong.
    """
    if isinstance(raw, bool):  # JSON true is not the id 1
        value = None
    elif isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and _DIGITS.fullmatch(raw.strip()):
        value = int(raw.strip())
    else:
        value = None
    if value is None or not minimum <= value <= maximum:
        raise ValidationFailed.on(name, f"must be {noun} from {minimum} to {maximum}")
    return value


def id_parse(raw: Any, *, name: str) -> int:
    """An object id (1 to 2**63-1) from a request; ValidationFailed naming `name` if not."""
    return int_parse(raw, name=name, noun="an id")


def id_or_none(raw: Any) -> int | None:
    """The id `raw` spells, or None when it cannot be one (for lookups that say 'not found')."""
    try:
        return id_parse(raw, name="id")
    except ValidationFailed:
        return None
