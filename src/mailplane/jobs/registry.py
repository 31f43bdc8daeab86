"""Job kinds and the functions that carry them out, registered by the owning packages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mailplane.jobs.models import Job

JobHandler = Callable[[Job], dict[str, Any]]
_HANDLERS: dict[str, JobHandler] = {}


def job_handler(kind: str) -> Callable[[JobHandler], JobHandler]:
    def register(func: JobHandler) -> JobHandler:
        _HANDLERS[kind] = func
        return func

    return register


def handler_for(kind: str) -> JobHandler:
    return _HANDLERS[kind]
