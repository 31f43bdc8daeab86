"""The OpenAPI schema at /api/schema/ (issue 9): valid, generated without a warning, and
describing every operation's request body, its responses (the error shape for each 4xx),
its authentication and its pagination, so that clients can be generated from it.

That real responses match it is checked for every APIClient request of the suite
(tests/support/openapi.py) and by schemathesis over HTTP (tests/api/test_hostile.py).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
from django.core.management import call_command
from django.urls import URLPattern
from openapi_spec_validator import validate
from rest_framework.test import APIClient

from mailplane.api import urls as api_urls
from mailplane.api.server_auth import ServerKeyAuthentication
from tests.support.openapi import api_schema

METHODS = ("get", "post", "put", "patch", "delete")
# The link mailed to a sender identity: public (its token is the credential), and its GET
# (and a form POST) answer pages for a person; API calls get JSON.
PUBLIC_PAGES = {"/api/sender-identities/confirm/"}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in api_schema()["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def test_schema_is_served_and_valid_openapi(db):
    reply = APIClient().get("/api/schema/?format=json")
    assert reply.status_code == 200
    served = reply.json()
    validate(served)  # openapi-spec-validator: the OpenAPI 3.0 specification's own rules
    assert served["paths"] == api_schema()["paths"]


def test_generation_has_no_warnings(tmp_path):
    """No "unable to guess serializer", "could not resolve authenticator" or enum
    collision: drf-spectacular's own --fail-on-warn, and its own validation."""
    call_command(
        "spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yaml")
    )


def _view_methods() -> list[tuple[str, str]]:
    """(path template, method) for every method each routed view implements."""
    found = []
    for pattern in api_urls.urlpatterns:
        assert isinstance(pattern, URLPattern)
        view = pattern.callback.view_class  # type: ignore[attr-defined]
        template = _template(pattern)
        found += [(template, m) for m in METHODS if callable(getattr(view, m, None))]
    return found


def test_every_route_and_method_is_in_the_schema():
    paths = api_schema()["paths"]
    missing = [(p, m) for p, m in _view_methods() if m not in paths.get(p, {})]
    assert not missing
    assert len(_operations()) == len(_view_methods())


@pytest.mark.parametrize(("path", "method", "op"), _operations(), ids=lambda v: str(v)[:40])
def test_every_operation_is_described(path, method, op):
    responses = op["responses"]
    # One success: a 2xx, or the redirect of a tracked link (GET /c/{token}: 302).
    success = [code for code in responses if code[0] in "23"]
    assert len(success) == 1, responses
    errors = [code for code in responses if code[0] in "45"]
    reads_nothing = not ({"security", "parameters", "requestBody"} & set(op))
    # Only a public operation that reads no input (GET /api/, the index) cannot fail.
    assert errors or reads_nothing, f"{method} {path} documents no error response"
    for code in errors:
        if path in PUBLIC_PAGES and "application/json" not in responses[code]["content"]:
            assert set(responses[code]["content"]) == {"text/html"}, (code, responses[code])
            continue
        schema = responses[code]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}, (code, schema)
    if success[0] not in ("204", "302"):
        assert responses[success[0]].get("content"), f"{method} {path}: no success body"

    webhook = path.startswith("/webhooks/")
    # A List-Unsubscribe link (RFC 8058), the tracking pixel and links: the token is the
    # only credential.
    public = webhook or path.startswith(("/unsubscribe/", "/o/", "/c/")) or path in PUBLIC_PAGES
    view = _view_for(path)
    if path == "/api/":
        assert reads_nothing  # the index: public, lists paths, no data
    elif public:
        assert op["security"] == [] if "security" in op else True
        assert "401" not in responses
    else:
        # The send API takes server keys (api/server_auth.py), everything else account keys.
        scheme = "ServerKey" if ServerKeyAuthentication in view.authentication_classes else "ApiKey"
        assert op["security"] == [{scheme: []}]
        assert {"401", "429"} <= set(responses)
        assert "Retry-After" in responses["429"]["headers"]
    if "{" in path:
        assert "404" in responses
    takes_body = "request.data" in inspect.getsource(getattr(view, method)) or (
        method in ("post", "put", "patch") and view.__module__.endswith("projects")
    )
    if takes_body or webhook:
        assert op.get("requestBody", {}).get("content"), f"{method} {path} takes a body"
        assert {"400", "413", "415"} <= set(responses)


def _template(pattern: URLPattern) -> str:
    """`api/domains/<id:pk>/` as the schema writes it: `/api/domains/{id}/`."""
    text = "/" + str(pattern.pattern)
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + ("id" if m[1] == "pk" else m[1]) + "}", text)


def _view_for(path: str) -> Any:
    for pattern in api_urls.urlpatterns:
        assert isinstance(pattern, URLPattern)
        if _template(pattern) == path:
            return pattern.callback.view_class  # type: ignore[attr-defined]
    raise AssertionError(path)


def test_lists_are_described_as_pages():
    """Every list: ?limit=&offset=, and the page {count, next, previous, results}."""
    components = api_schema()["components"]["schemas"]
    # One object each, though the name ends in "s".
    singles = {
        "/api/status/",
        "/api/servers/{id}/stats/",
        "/api/servers/{id}/stats/bounce-domains/",
        "/api/server/stats/",
        "/api/server/stats/bounce-domains/",
    }
    lists = [
        (p, op)
        for p, m, op in _operations()
        if m == "get" and p.endswith(("s/", "/mailbox/")) and p not in singles
    ]
    assert len(lists) == 22, [p for p, _ in lists]
    for path, op in lists:
        names = {p["name"] for p in op.get("parameters", [])}
        assert {"limit", "offset"} <= names, path
        # `?limit=` reads as absent (api/fields.py), and the schema says so.
        assert all(p.get("allowEmptyValue") for p in op["parameters"] if p["in"] == "query")
        ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        page = components[ref.rsplit("/", 1)[-1]]
        assert set(page["properties"]) == {"count", "next", "previous", "results"}, path
        assert page["properties"]["results"]["type"] == "array"


def test_the_error_shape_is_a_component():
    schemas = api_schema()["components"]["schemas"]
    assert schemas["Error"]["required"] == ["error"]
    assert set(schemas["ErrorBody"]["properties"]) == {"code", "message", "details"}
    scheme = api_schema()["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")


def test_mailbox_fields_are_documented():
    """Issue 6: every mailbox field, and the create body, each with a description."""
    schemas = api_schema()["components"]["schemas"]
    create = schemas["MailboxCreateRequest"]
    assert create["required"] == ["email"]
    for name in ("email", "domain", "relay_server", "password", "project"):
        assert create["properties"][name].get("description"), name
    assert "full address" in create["properties"]["email"]["description"]
    mailbox = schemas["Mailbox"]["properties"]
    assert {"email", "password", "domain_name", "reply_to", "smtp_host", "imap_port"} <= set(
        mailbox
    )


def test_docs_page_is_served(db):
    docs = APIClient().get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


def test_an_empty_integer_parameter_reads_as_absent(account):
    for path in ("/api/domains/?limit=", "/api/mailboxes/?project=&offset="):
        assert account.client.get(path).status_code == 200
