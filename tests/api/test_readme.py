"""The README's API section against the code, where a program can tell (issue 9: the
README promised events in message lists and one list shape that the code did not keep).

Checked: every path of the API summary table routes to a view, and each method the table
names for it is an operation of the schema; every list operation of the schema is in the
table; the mailbox create and update fields, the export layouts and the variables the
README names are the code's.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from django.urls import Resolver404, resolve

from mailplane.api.mailboxes import MailboxCreateSerializer, MailboxSerializer
from mailplane.exports.layouts import LAYOUTS
from mailplane.mailboxes.services import UPDATABLE
from tests.support.openapi import api_schema, operation_for

README = (Path(__file__).parents[2] / "README.md").read_text()
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _section(title: str) -> str:
    """The text under a `##`/`###` heading, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ |\Z)", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def _summary_rows() -> list[tuple[list[str], set[str]]]:
    """(paths, methods) per row of the API summary table; `/{id}/` continues the row's
    first path, as the table writes it."""
    rows = []
    for line in _section("API summary").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        paths = re.findall(r"`([^`]+)`", cells[0])
        base = paths[0]
        paths = [base.rstrip("/") + p if p.startswith("/{") else p for p in paths]
        methods = set(re.findall(r"\b(GET|POST|PUT|PATCH|DELETE)\b", cells[1]))
        if "CRUD" in cells[1]:
            methods |= set(METHODS)
        rows.append((paths, methods))
    return rows


ROWS = _summary_rows()
SAMPLE = {"{id}": "1", "{relay_id}": "1", "{task_id}": str(uuid.uuid4()), "{layout}": "custom"}


def _concrete(template: str) -> str:
    for placeholder, value in SAMPLE.items():
        template = template.replace(placeholder, value)
    return template


def test_the_table_is_read():
    assert len(ROWS) >= 14
    assert (
        ["/api/mailboxes/", "/api/mailboxes/{id}/"],
        {"GET", "POST", "PATCH", "PUT", "DELETE"},
    ) in ROWS


@pytest.mark.parametrize(("paths", "methods"), ROWS, ids=[r[0][0] for r in ROWS])
def test_each_path_routes_and_each_method_is_an_operation(paths, methods):
    assert methods, f"row {paths} names no method"
    for template in paths:
        path = _concrete(template)
        try:
            resolve(path)
        except Resolver404:
            pytest.fail(f"README names {template}, which no route serves")
        # A path outside the schema (an index, say) is fine; one in it must have them all.
        known = [m for m in METHODS if operation_for(m, path) is not None]
        if not known:
            continue
        on_this_path = {m for m in methods if operation_for(m, path) is not None}
        assert on_this_path, f"{template}: none of {sorted(methods)} is an operation"
    for method in methods:
        assert any(operation_for(method, _concrete(t)) for t in paths), (paths, method)


def test_every_operation_of_the_schema_is_in_the_table():
    named = {(m, _concrete(p)) for paths, methods in ROWS for p in paths for m in methods}
    missing = []
    for template, item in api_schema()["paths"].items():
        for method in item:
            if method.upper() in METHODS:
                path = _concrete(template)
                if not any(m == method.upper() and p == path for m, p in named):
                    missing.append(f"{method.upper()} {template}")
    assert not missing, f"operations the README's API summary does not name: {missing}"


def test_mailbox_fields_match_the_code():
    text = _section("Mailbox fields")
    create, update, reads = re.split(r"\bUpdate\b|\bA mailbox reads as\b", text)
    assert set(re.findall(r"`(\w+)`", create)) >= set(MailboxCreateSerializer().fields)
    updates = set(re.findall(r"`(\w+)`", update.split("cannot change")[0]))
    assert updates >= UPDATABLE
    assert set(re.findall(r"`([a-z_]+)`", reads)) >= set(MailboxSerializer().fields)


def test_export_layouts_match_the_table():
    row = next(line for line in README.splitlines() if "/mailbox/download/{layout}/" in line)
    named = set(re.findall(r"`([a-z.]+)`", row.split("|")[2]))
    assert set(LAYOUTS) <= named


def test_the_list_and_error_shapes_are_the_codes():
    text = _section("CSV exports")  # the general paragraph follows the exports
    assert '`{"count", "next", "previous", "results"}`' in text
    assert '`{"error": {"code", "message", "details"}}`' in text
    from mailplane.api.errors import error_body

    assert set(error_body("c", "m")["error"]) == {"code", "message", "details"}
    codes = {int(c) for c in re.findall(r"\b([45]\d\d) [a-z]", text)}
    documented = {
        int(code)
        for item in api_schema()["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "responses" in op
        for code in op["responses"]
        if code.startswith("4")
    }
    assert documented <= codes, f"README's status list lacks {documented - codes}"


def test_variables_the_readme_names_are_read_by_the_code():
    root = Path(__file__).parents[2]
    files = [*(root / "src" / "mailplane").rglob("*.py"), *(root / "scripts").iterdir()]
    code = "\n".join(p.read_text(errors="replace") for p in files if p.is_file())
    for name in set(re.findall(r"`(MAILPLANE_[A-Z_]+)", README)):
        if name.endswith("_"):  # a family, like MAILPLANE_DELIVERY_*
            continue
        suffix = name.removeprefix("MAILPLANE_")
        assert name in code or f'"{suffix}"' in code, f"README names {name}; nothing reads it"
