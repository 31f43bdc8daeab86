"""The API's own OpenAPI schema as a test oracle: does a real response match what the
schema says of its operation and status code?

`responses_match_the_schema` (autouse, every test) applies it to each response a test gets
through DRF's APIClient: the status code must be documented for its operation and the JSON
body must match, field for field. So the schema cannot drift from the code wherever the
tests exercise it, including every 4xx they provoke.

openapi-schema-validator (the OpenAPI 3.0 dialect of jsonschema: `nullable`, `readOnly`)
checks the bodies. Two things are added for strictness: `$ref`s are inlined (the schema
has no recursive components), and every object that lists its properties allows no
others, so a field the code returns but the schema does not document is a failure.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from openapi_schema_validator import OAS30ReadValidator


@functools.lru_cache(maxsize=1)
def api_schema() -> dict[str, Any]:
    """The schema as /api/schema/ serves it, generated in this process."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    schema = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(schema, renderer_context={}))  # type: ignore[no-any-return]


def _inline(node: Any, components: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return _inline(components[name], components)
        out = {key: _inline(value, components) for key, value in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_inline(item, components) for item in node]
    return node


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    spec: dict[str, Any]


@functools.lru_cache(maxsize=1)
def _operations() -> list[tuple[re.Pattern[str], Operation]]:
    schema = api_schema()
    components = schema.get("components", {}).get("schemas", {})
    found = []
    for template, item in schema["paths"].items():
        parts = re.split(r"\{[^}]+\}", template)
        pattern = re.compile("^" + "[^/]+".join(map(re.escape, parts)) + "$")
        for method, spec in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((pattern, Operation(method, template, _inline(spec, components))))
    return found


def operation_for(method: str, path: str) -> Operation | None:
    """The schema's operation for a request, or None when the schema has no such one.

    A literal path (`/api/mailboxes/bulk/`) is routed before a template that also matches it
    (`/api/mailboxes/{id}/`), as Django's URL order does: a method the literal path lacks is
    no operation, not the template's."""
    operations = _operations()
    if any(op.template == path for _, op in operations):
        operations = [(p, op) for p, op in operations if op.template == path]
    for pattern, operation in operations:
        if operation.method == method.lower() and pattern.match(path):
            return operation
    return None


def response_problems(
    method: str, path: str, status: int, content_type: str, body: bytes
) -> list[str]:
    """What in this real response the schema does not describe ([] when it all matches);
    requests the schema has no operation for are not judged."""
    operation = operation_for(method, path)
    if operation is None:
        return []
    where = f"{method.upper()} {operation.template} -> {status}"
    responses = operation.spec["responses"]
    documented = responses.get(str(status)) or responses.get("default")
    if documented is None:
        return [f"{where}: status not documented (documented: {sorted(responses)})"]
    content = documented.get("content") or {}
    media = content_type.split(";")[0].strip().lower()
    if not content:
        return [f"{where}: documented without a body, got {len(body)} bytes"] if body else []
    if media not in content:
        return [f"{where}: content type {media!r} not documented ({sorted(content)})"]
    if media != "application/json":
        return []
    try:
        data = json.loads(body)
    except ValueError:
        return [f"{where}: body is not JSON"]
    validator = OAS30ReadValidator(content[media].get("schema", {}))
    return [
        f"{where}: {'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}"
        for e in validator.iter_errors(data)
    ][:5]


@pytest.fixture(autouse=True)
def responses_match_the_schema(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    from rest_framework.test import APIClient

    problems: list[str] = []
    original = APIClient.request

    def checked(self: APIClient, **kwargs: Any) -> Any:
        response = original(self, **kwargs)
        if response.streaming:
            return response  # files (WhiteNoise's static assets): no API operation
        environ = response.request
        problems.extend(
            response_problems(
                str(environ["REQUEST_METHOD"]),
                str(environ["PATH_INFO"]),
                response.status_code,
                response.get("Content-Type", ""),
                response.content,
            )
        )
        return response

    monkeypatch.setattr(APIClient, "request", checked)
    yield problems
    assert not problems, "responses the schema does not describe:\n" + "\n".join(problems)
