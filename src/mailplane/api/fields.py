"""Query-parameter parsing shared by list views."""

from __future__ import annotations

from rest_framework.request import Request

from mailplane.core.errors import ValidationFailed


def optional_int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    if not raw.isdigit():
        raise ValidationFailed.on(name, "must be an id (a positive integer)")
    return int(raw)
