"""DRF limit/offset pagination, as the service uses: {count, next, previous, results}.

`limit` and `offset` go through the one bounded integer parser (api/fields.py): a value
that is not a number is a 400 naming it, where DRF would quietly serve the first page.
A `limit` above `max_limit` is served as `max_limit`, as DRF does.
"""

from __future__ import annotations

from rest_framework import pagination
from rest_framework.request import Request

from mailplane.api.fields import optional_int_param


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    default_limit = 100
    max_limit = 1000

    def get_limit(self, request: Request) -> int:
        limit = optional_int_param(request, self.limit_query_param, noun="an integer")
        return self.default_limit if limit is None else min(limit, self.max_limit)

    def get_offset(self, request: Request) -> int:
        offset = optional_int_param(request, self.offset_query_param, minimum=0, noun="an integer")
        return offset or 0
