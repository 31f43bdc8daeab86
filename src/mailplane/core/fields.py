"""Model fields whose database value is ciphertext."""

from __future__ import annotations

import json
from typing import Any

from django.db import models

from mailplane.core import crypto


class EncryptedTextField(models.TextField):  # type: ignore[type-arg]
    """A text value stored encrypted; reads give the clear text back."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        return None if value in (None, "") else crypto.decrypt(value)  # type: ignore[arg-type]

    def get_prep_value(self, value: Any) -> str | None:
        return None if value in (None, "") else crypto.encrypt(str(value))


class EncryptedJSONField(models.TextField):  # type: ignore[type-arg]
    """A JSON object stored encrypted (provider credentials)."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        return {} if not value else json.loads(crypto.decrypt(value))

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value else {}
        return value or {}

    def get_prep_value(self, value: Any) -> str:
        return crypto.encrypt(json.dumps(value or {}, sort_keys=True))
