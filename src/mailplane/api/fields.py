"""Integer query parameters and path segments: one parser, with bounds (mailplane.core.ids).

Every view and the pagination read their integers through here, so `?project=` with 20
digits, `?offset=²` or `/api/domains/99999999999999999999/` is a 400 naming the parameter
(or a 404 for a path), never an OverflowError from the database.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.request import Request

from mailplane.core.errors import ValidationFailed
from mailplane.core.ids import MAX_ID, id_or_none, int_parse
from mailplane.tenancy.models import Organization


def optional_int_param(
    request: Request, name: str, *, minimum: int = 1, maximum: int = MAX_ID, noun: str = "an id"
) -> int | None:
    """`?name=` as a bounded integer (an id by default); None when absent or empty.

    Given twice it is a 400: Django would read the last value and drop the others unseen.
    """
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ValidationFailed.on(name, "give this parameter once")
    raw = values[0] if values else None
    if raw in (None, ""):
        return None
    return int_parse(raw, name=name, minimum=minimum, maximum=maximum, noun=noun)


class IdConverter:
    """`<id:pk>` in routes: ASCII digits that fit an id column; anything else is a 404.

    Django's own `<int:…>` takes any number of digits, and the lookup then overflows.
    """

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 1 <= number <= MAX_ID:
            raise ValueError(f"{value} is not an id")  # the resolver reads this as no match
        return number

    def to_url(self, value: int) -> str:
        return str(value)


class BoundedCharField(serializers.CharField):
    """A CharField whose `max_length` holds for the text as sent.

    DRF trims surrounding whitespace first and measures after, so a 101-character name
    starting with a tab passed a `maxLength: 100` the schema promises (schemathesis'
    negative_data_rejection found it). The trimmed text is still what is stored.
    """

    def run_validation(self, data: Any = empty) -> Any:
        if isinstance(data, str) and self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().run_validation(data)


# For ModelSerializer.serializer_field_mapping: model CharFields become BoundedCharFields.
BOUNDED_FIELD_MAPPING = {
    **serializers.ModelSerializer.serializer_field_mapping,
    models.CharField: BoundedCharField,
}


@extend_schema_field(OpenApiTypes.INT)
class OwnedField(serializers.PrimaryKeyRelatedField[Any]):
    """A reference to one of the caller's own objects; others' ids read as 'not found'.

    The id is bounded before the lookup (core/ids.py): a 20-digit number is a 400 naming
    the field, not an OverflowError from the database.
    """

    def __init__(self, model: type[Any], **kwargs: Any) -> None:
        self.model = model
        super().__init__(**kwargs)

    def get_queryset(self) -> Any:
        org: Organization = self.context["organization"]
        return self.model.objects.filter(organization=org)

    def to_internal_value(self, data: Any) -> Any:
        pk = id_or_none(data)
        if pk is None:
            raise serializers.ValidationError(f"must be an id from 1 to {MAX_ID}")
        found = self.get_queryset().filter(pk=pk).first()
        if found is None:
            label = (self.field_name or "object").replace("_", " ")
            raise serializers.ValidationError(f"{label} {pk} not found")
        return found
