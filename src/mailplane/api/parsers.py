"""The JSON request parser: bounded in size and depth, and text the database can store.

DRF's JSONParser reads the whole body (a 10 MB body ended in RequestDataTooBig) and
json.loads recurses once per nesting level (5,000 `[` ended in RecursionError); both were
500s. This parser refuses a body over API_MAX_BODY_BYTES with a 413 before reading it,
refuses nesting deeper than API_MAX_JSON_DEPTH, and refuses strings that no text column
takes (NUL, which PostgreSQL rejects; unpaired surrogates, which are not Unicode and
which UTF-8 cannot encode) — each a 400 naming where in the body it is.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

from django.conf import settings
from rest_framework.parsers import JSONParser

from mailplane.core.errors import TooLarge, ValidationFailed


class BodyTooLarge(TooLarge, ValidationFailed):
    """The request body is over the limit: refused before it is read. Bad input naming
    `body`, answered as TooLarge (first in the MRO) on every protocol."""

    code = "body_too_large"


def body_too_large(limit: int) -> BodyTooLarge:
    message = f"the request body is over the limit of {limit} bytes"
    return BodyTooLarge(message, details={"body": [message]})


class BodyUnreadable(ValidationFailed):
    """The body is not a JSON document this API reads (syntax, encoding, nesting)."""

    code = "parse_error"


def _invalid(where: str, message: str) -> ValidationFailed:
    """A value inside the document that no field can take: a 400 naming where it is."""
    error = BodyUnreadable if where == "body" else ValidationFailed
    return error(f"{where}: {message}", details={where: [message]})


def max_body_bytes() -> int:
    return int(settings.MAILPLANE["API_MAX_BODY_BYTES"])


def declared_length(request: Any) -> int:
    """The Content-Length the client sent (0 when absent or unreadable)."""
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain unpaired surrogates (\\ud800-\\udfff escapes)"
    return None


def json_check(data: Any, *, max_depth: int) -> None:
    """Walk the parsed document without recursion: depth, and every key and string.

    Errors name the offending place as a path (`mailbox.names[2]`), or `body` for the
    document itself.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        where = path or "body"
        if isinstance(value, dict | list) and depth > max_depth:
            raise _invalid(where, f"is nested more than {max_depth} levels deep")
        if isinstance(value, dict):
            for key, item in value.items():
                if problem := _text_problem(key):
                    raise _invalid(where, f"has a key that {problem}")
                stack.append((item, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(value, list):
            stack.extend(
                (item, f"{path}[{i}]" if path else f"[{i}]", depth + 1)
                for i, item in enumerate(value)
            )
        elif isinstance(value, str) and (problem := _text_problem(value)):
            raise _invalid(where, problem)


class BoundedJSONParser(JSONParser):
    """application/json, read with bounds. DRF calls it only for a non-empty body."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = max_body_bytes()
        request = (parser_context or {}).get("request")
        if request is not None and declared_length(request) > limit:
            raise body_too_large(limit)
        raw = stream.read(limit + 1)  # one byte past the limit tells "too big"
        if len(raw) > limit:
            raise body_too_large(limit)
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.decode(raw, encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise _invalid("body", f"is not valid {encoding} text") from exc
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except RecursionError as exc:
            # The C decoder nests a call per level; the walk below never gets to see it.
            depth = int(settings.MAILPLANE["API_MAX_JSON_DEPTH"])
            raise _invalid("body", f"is nested more than {depth} levels deep") from exc
        except ValueError as exc:  # JSONDecodeError, NaN/Infinity, over 4,300 digits
            raise _invalid("body", f"is not valid JSON: {exc}") from exc
        json_check(data, max_depth=int(settings.MAILPLANE["API_MAX_JSON_DEPTH"]))
        return data


def _refuse_constant(name: str) -> Any:
    # RFC 8259 §6: NaN and Infinity are not JSON numbers.
    raise ValueError(f"{name} is not a JSON number")
