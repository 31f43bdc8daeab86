"""Each request starts routed to the shared cell and leaves no routing behind: a worker
thread serves the next request, perhaps another account's, with the same context."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from mailplane.cells.routing import SHARED_ROUTE, route_using


class CellRoutingMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with route_using(SHARED_ROUTE):
            return self.get_response(request)
