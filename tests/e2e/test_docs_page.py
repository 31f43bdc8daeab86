"""Issue 9 item 2 (static half): /api/docs/ renders in a real browser.

Debian's headless Chromium, driven by Playwright, loads the Swagger UI page from a running
`mailplane serve --only web` (gunicorn, as users run it) in embedded mode and, in the
PostgreSQL pass, in production mode (DATABASE_URL set). The test fails if any request the
page makes (CSS, JS, favicon, the schema) answers 4xx/5xx or never answers, if a script
error or console error occurs, if the UI read fewer operations than the schema has, or if it
drew none. A screenshot is left in the test's tmp directory (and copied to
$MAILPLANE_TEST_ARTEFACTS when that is set, as CI can collect it).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.support.live_service import live_service
from tests.support.tools import require_tool, skip_for_mode

pytestmark = pytest.mark.timeout(240)


def _production_env() -> dict[str, str]:
    from django.db import connection

    if connection.vendor != "postgresql":
        skip_for_mode("production mode here means PostgreSQL (the other pass)")
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return {
        "DATABASE_URL": f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    }


@pytest.mark.parametrize("mode", ["embedded", "production"])
def test_docs_page_renders_operations(mode, transactional_db, tmp_path: Path) -> None:
    chromium = require_tool("chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    env = _production_env() if mode == "production" else {}
    with live_service(tmp_path, "web", env=env) as (svc, _dns):
        with urllib.request.urlopen(svc.base + "/api/schema/?format=json", timeout=60) as r:
            schema = json.loads(r.read())
        operations = sum(
            1
            for item in schema["paths"].values()
            for method in item
            if method in {"get", "post", "put", "patch", "delete"}
        )
        assert operations > 20

        failed: list[str] = []
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 2000})
                page.on(
                    "response",
                    lambda response: (
                        failed.append(f"{response.status} {response.url}")
                        if response.status >= 400
                        else None
                    ),
                )
                page.on(
                    "requestfailed",
                    lambda request: failed.append(f"failed {request.url}: {request.failure}"),
                )
                # A script error stops Swagger UI mid-page: say which, not just "24 of 125".
                page.on("pageerror", lambda error: failed.append(f"page error: {error}"))
                page.on(
                    "console",
                    lambda m: (
                        failed.append(f"console {m.type}: {m.text}") if m.type == "error" else None
                    ),
                )
                page.goto(svc.base + "/api/docs/", wait_until="networkidle", timeout=90_000)
                page.wait_for_selector(".opblock", timeout=90_000)
                # Swagger UI (the sidecar's newer releases) keeps only the operations near
                # the viewport in the page, so the DOM cannot be counted whole: ask the UI
                # how many operations it read from the schema, and see that it drew some.
                known = page.evaluate("() => ui.specSelectors.operations().size")
                drawn = page.locator(".opblock").count()
                title = page.locator(".info .title").inner_text()
                shot = tmp_path / f"api-docs-{mode}.png"
                page.screenshot(path=str(shot), full_page=False)
            finally:
                browser.close()
    artefacts = os.environ.get("MAILPLANE_TEST_ARTEFACTS")
    if artefacts:
        Path(artefacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artefacts) / shot.name)
    print(f"screenshot: {shot}")
    assert failed == [], failed
    assert "Mailplane API" in title
    assert known == operations, f"the page knows {known} operations of {operations}"
    assert drawn > 10, f"only {drawn} operations drawn on the first screen"
    assert shot.stat().st_size > 10_000
