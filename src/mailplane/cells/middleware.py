"""Each request starts routed to the shared cell and leaves no routing behind: a worker
thread serves the next request, perhaps another account's, with the same context."""

from __future__ import annotations

from collections.abc import Callable

from django.db import DEFAULT_DB_ALIAS
from django.http import HttpRequest, HttpResponse

from mailplane.cells.routing import data_alias_using


class CellRoutingMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with data_alias_using(DEFAULT_DB_ALIAS):
            return self.get_response(request)
