"""`Idempotency-Key` on the send API, as Resend, useSend and Hyvor Relay do it
(reference/sending.md): a client-chosen key of up to 256 characters, kept 24 hours per
server; the same key with the same body returns the first answer; with another body it
is a 409; while the first request is still being processed it is a 409 too. Client
errors (4xx) are remembered like successes; server errors are not, so a retry runs again.

The claim is its own short transaction (a unique row per server and key: of two
concurrent requests one inserts, the other finds it). The answer is stored in the
transaction that queues the message (`idempotent_answer` runs the send and
idempotency_complete in one atomic block), so a message is never committed without its
answer, nor an answer without it. A refusal (a DomainError) is stored as the API renders
it (`http_body()`), after the send's rollback, and raised on for the API to render.
A claim still `processing` after STALE_AFTER belongs to a request that died before its
commit (nothing of it was kept): it is taken over.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError
from django.utils import timezone

from mailplane.cells.routing import data_atomic
from mailplane.core.errors import Conflict, DomainError, ValidationFailed
from mailplane.reputation.errors import SendingPaused
from mailplane.servers.models import EmailServer, IdempotencyKey, IdempotencyStatus

HEADER = "Idempotency-Key"
KEY_MAX = 256
KEPT_FOR = timedelta(hours=24)
# Longer than any request may run (MAILPLANE_HTTP_REQUEST_TIMEOUT, 30 s by default).
STALE_AFTER = timedelta(minutes=2)
_KEY = re.compile(r"[\x21-\x7e]{1,256}")  # visible ASCII: a header value without tricks


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer of the send API; `replayed`: the stored answer of a first request."""

    status: int
    body: Any
    replayed: bool = False


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


def request_digest(*, path: str, data: Any) -> str:
    """The request as JSON with sorted keys: the same message in another key order or
    spacing is the same request."""
    canonical = json.dumps([path, data], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def idempotency_key_parse(value: str | None) -> str | None:
    if value is None:
        return None
    if not _KEY.fullmatch(value):
        raise ValidationFailed.on(HEADER, f"must be 1 to {KEY_MAX} visible ASCII characters")
    return value


def idempotency_claim(*, server: EmailServer, key: str, digest: str) -> Answer | None:
    """None: this request owns the key now and must complete it (or release it).
    A replayed Answer: the first request's. Raises IdempotencyConflict (409)."""
    now = timezone.now()
    for _ in range(3):  # a claim lost to a concurrent request is read again
        try:
            with data_atomic():
                IdempotencyKey.objects.create(
                    server=server,
                    key=key,
                    request_digest=digest,
                    status=IdempotencyStatus.PROCESSING,
                    created_at=now,
                )
            return None
        except IntegrityError:
            pass
        found = IdempotencyKey.objects.filter(server=server, key=key).first()
        if found is None:
            continue  # released meanwhile: claim again
        expired = found.created_at < now - KEPT_FOR
        abandoned = found.status == IdempotencyStatus.PROCESSING and (
            found.created_at < now - STALE_AFTER
        )
        if expired or abandoned:
            # Conditional on the row read, so two takers cannot both win.
            IdempotencyKey.objects.filter(pk=found.pk, created_at=found.created_at).delete()
            continue
        if found.request_digest != digest:
            raise IdempotencyConflict(
                f"{HEADER} {key!r} was used with another request in the last 24 hours",
                details={HEADER: ["already used with a different body"]},
            )
        if found.status == IdempotencyStatus.PROCESSING:
            raise IdempotencyConflict(
                f"a request with {HEADER} {key!r} is still being processed",
                details={HEADER: ["a request with this key is in progress: retry later"]},
            )
        assert found.response_status is not None
        return Answer(status=found.response_status, body=found.response_body, replayed=True)
    raise IdempotencyConflict(
        f"{HEADER} {key!r} is contended", details={HEADER: ["contended: retry later"]}
    )


def idempotency_complete(*, server: EmailServer, key: str, status: int, body: Any) -> None:
    """Store the answer; call inside the transaction that commits what it reports."""
    IdempotencyKey.objects.filter(server=server, key=key).update(
        status=IdempotencyStatus.DONE, response_status=status, response_body=body
    )


def idempotency_release(*, server: EmailServer, key: str) -> None:
    """Forget a claim whose request failed on our side: the client may try again."""
    IdempotencyKey.objects.filter(
        server=server, key=key, status=IdempotencyStatus.PROCESSING
    ).delete()


def idempotent_answer(
    *,
    server: EmailServer,
    header: str | None,
    path: str,
    data: Any,
    run: Callable[[], Answer],
    as_stored: Callable[[Any], Any],
) -> Answer:
    """`run` (which queues and answers) once per Idempotency-Key `header`; without one,
    just `run`. `as_stored` turns the body into the JSON the client reads, which is what
    a replay answers."""
    key = idempotency_key_parse(header)
    if key is None:
        return run()
    replay = idempotency_claim(server=server, key=key, digest=request_digest(path=path, data=data))
    if replay is not None:
        return replay
    try:
        with data_atomic():
            answer = run()
            body = as_stored(answer.body)
            idempotency_complete(server=server, key=key, status=answer.status, body=body)
    except DomainError as exc:
        if exc.retry_after is not None or isinstance(exc, SendingPaused):
            # "Later" (a cap's window, an operator's resume) is no answer to keep: the
            # same request may succeed then.
            idempotency_release(server=server, key=key)
            raise
        # A client error is an answer too: the same request gets it again.
        idempotency_complete(server=server, key=key, status=exc.http_status, body=exc.http_body())
        raise
    except BaseException:
        idempotency_release(server=server, key=key)
        raise
    return Answer(status=answer.status, body=body)
