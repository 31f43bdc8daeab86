"""Issue 9 item 3: GET /api/ is an index of the resources and the docs, and every link in
it answers (none is a 404)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient


def test_index_lists_resources_and_docs(db):
    response = APIClient().get("/api/")  # no key needed: it lists paths, not data
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["docs"] == "http://testserver/api/docs/"
    assert body["schema"] == "http://testserver/api/schema/"
    assert "Api-Key" in body["authentication"]
    names = set(body["resources"])
    assert {"userinfo", "domains", "mailboxes", "tasks", "relay_servers", "api_keys"} <= names
    assert body["resources"]["domains"]["url"] == "http://testserver/api/domains/"


def test_every_index_link_answers(account):
    body = account.client.get("/api/").json()
    links = [r["url"] for r in body["resources"].values() if "{" not in r["url"]]
    links += [body["docs"], body["redoc"], body["schema"]]
    for link in links:
        path = link.removeprefix("http://testserver")
        response = account.client.get(path)
        # The bulk upload is POST-only; everything else lists.
        expected = 405 if path.endswith("/bulk/") else 200
        assert response.status_code == expected, (path, response.status_code)


@pytest.mark.parametrize(
    "asset",
    [
        "swagger-ui-dist/swagger-ui.css",
        "swagger-ui-dist/swagger-ui-bundle.js",
        "swagger-ui-dist/swagger-ui-standalone-preset.js",
        "swagger-ui-dist/favicon-32x32.png",
        "redoc/bundles/redoc.standalone.js",
    ],
)
def test_docs_assets_are_served(db, asset):
    """Issue 9 item 2: the docs' own CSS/JS, served by the app (WhiteNoise), not a 404."""
    response = APIClient().get(f"/static/drf_spectacular_sidecar/{asset}")
    assert response.status_code == 200
    assert b"".join(response.streaming_content)  # type: ignore[attr-defined]


def test_docs_page_links_only_served_assets(db):
    import re

    client = APIClient()
    for page in ("/api/docs/", "/api/redoc/"):
        html = client.get(page).content.decode()
        assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', html)
        assert assets, page
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
