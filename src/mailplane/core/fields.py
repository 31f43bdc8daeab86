"""Model fields whose database value is ciphertext."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.db import models

from mailplane.core import crypto

if TYPE_CHECKING:
    _TextBase = models.TextField[Any, Any]
    _FieldBase = models.Field[Any, Any]
else:
    _TextBase = models.TextField
    _FieldBase = models.Field


class EncryptedTextField(_TextBase):
    """A text value stored encrypted; reads give the clear text back."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        return None if not value else crypto.decrypt(value)

    def get_prep_value(self, value: Any) -> str | None:
        return None if value in (None, "") else crypto.encrypt(str(value))


class EncryptedJSONField(_FieldBase):
    """A JSON object stored encrypted (provider credentials), in a text column."""

    def get_internal_type(self) -> str:
        return "TextField"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        return {} if not value else json.loads(crypto.decrypt(value))

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value else {}
        return value or {}

    def get_prep_value(self, value: Any) -> str:
        return crypto.encrypt(json.dumps(value or {}, sort_keys=True))
