"""The API idiom holds (docs/architecture.md): views read through selectors and write
through services, so the rules live where SMTP, IMAP, the CLI and jobs can call them too.

Read from the source (ast), like tests/core/test_import_graph.py: an API module that
queries a model's manager, opens a transaction or catches a database error is doing a
selector's or a service's job. `api/fields.py` is the one exception: `OwnedField`
resolves a body's reference to the caller's own object, for every serializer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mailplane.api

API = Path(mailplane.api.__file__).parent
ALLOWED = {"fields.py"}
# Known exceptions, each with its reason; moving them out is on the list (docs).
EXCEPTIONS = {
    # The Idempotency-Key answer is stored in the transaction that queues the message.
    "send.py": "transaction",
}
DATABASE_NAMES = {"transaction", "IntegrityError", "connection", "connections"}


def _problems(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr == "objects":
            found.append(f"{path.name}:{node.lineno}: .objects (a query: use a selector)")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("django.db"):
            names = {alias.name for alias in node.names} & DATABASE_NAMES
            if names:
                found.append(f"{path.name}:{node.lineno}: {sorted(names)} (a service's job)")
    return found


def test_api_modules_neither_query_nor_write():
    problems = [
        p
        for path in sorted(API.glob("*.py"))
        if path.name not in ALLOWED
        for p in _problems(path)
        if not (path.name in EXCEPTIONS and EXCEPTIONS[path.name] in p)
    ]
    assert not problems, problems


def test_the_check_finds_a_query_and_a_transaction(tmp_path):
    """It would fail on the code it forbids."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from django.db import transaction\n"
        "def get(request):\n"
        "    return Project.objects.filter(pk=1)\n"
    )
    assert len(_problems(bad)) == 2
