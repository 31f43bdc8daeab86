"""Which database an account's data lives in.

One context variable holds the database alias of the cell the current work is for: the
API sets it when it authenticates a key (api/authentication.py), a Celery job from the
job's account (jobs/services.py). The router sends every model of a data app there and the
registry apps (accounts, keys, users, jobs, the Cell table) to `default`, the control
database. Data-plane processes (`mailplane serve --cell`) never set it: their `default`
*is* the cell's database, so smtp/, imap/ and delivery/ need no routing of their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, transaction

# Apps whose rows stay in the control database whatever the account: authentication never
# leaves it (so keys keep working wherever the data is), and job rows carry global task ids.
REGISTRY_APPS = frozenset(
    {
        "admin",
        "auth",
        "contenttypes",
        "sessions",
        "django_celery_results",
        "tenancy",
        "jobs",
        "cells",
    }
)


@dataclass(frozen=True, slots=True)
class Route:
    """Where an account's data is: its cell's database alias and storage root (None: the
    deployment's MAILPLANE_STORAGE_ROOT)."""

    alias: str = DEFAULT_DB_ALIAS
    storage_root: str | None = None


SHARED_ROUTE = Route()
_route: ContextVar[Route] = ContextVar("mailplane_cell_route", default=SHARED_ROUTE)


def data_alias() -> str:
    """The alias data models are read from and written to right now."""
    return _route.get().alias


def storage_root() -> str:
    """The storage root Maildirs are under right now (storage/maildir.py)."""
    return _route.get().storage_root or str(settings.MAILPLANE["STORAGE_ROOT"])


def route_set(route: Route) -> None:
    """Route data to `route` for the rest of this context (a request, a CLI command): the
    middleware (cells/middleware.py) puts the previous value back after each request."""
    _route.set(route)


@contextlib.contextmanager
def route_using(route: Route) -> Iterator[None]:
    """Route data to `route` inside the block only."""
    token = _route.set(route)
    try:
        yield
    finally:
        _route.reset(token)


def data_alias_using(alias: str) -> contextlib.AbstractContextManager[None]:
    """Route data models to `alias` inside the block (storage root unchanged)."""
    return route_using(Route(alias=alias, storage_root=_route.get().storage_root))


def data_atomic(*, savepoint: bool = True) -> contextlib.AbstractContextManager[Any]:
    """`transaction.atomic()` for a service that writes an account's data.

    On the shared cell this is exactly `transaction.atomic()`. On another cell it opens the
    control database's transaction first and the cell's inside it: the data commits first,
    then the registry's, and `transaction.on_commit` callbacks (registered on `default`,
    e.g. a job's Celery task) run only once both are committed."""
    alias = data_alias()
    if alias == DEFAULT_DB_ALIAS:
        return transaction.atomic(savepoint=savepoint)
    stack = contextlib.ExitStack()
    stack.enter_context(transaction.atomic(using=DEFAULT_DB_ALIAS, savepoint=savepoint))
    stack.enter_context(transaction.atomic(using=alias, savepoint=savepoint))
    return stack


class CellRouter:
    """Django database router (settings.DATABASE_ROUTERS)."""

    def _alias(self, model: type[Any]) -> str:
        if model._meta.app_label in REGISTRY_APPS:
            return DEFAULT_DB_ALIAS
        return data_alias()

    def db_for_read(self, model: type[Any], **hints: Any) -> str:
        return self._alias(model)

    def db_for_write(self, model: type[Any], **hints: Any) -> str:
        return self._alias(model)

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        # A cell's data rows point at the account's Organization: the registry's row in
        # Python, its copy (same primary key) in the cell's database.
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        # Every database gets every table: a cell holds copies of its accounts' rows.
        return True
