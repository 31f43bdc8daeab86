"""The API idiom holds (docs/architecture.md): views read through selectors and write
through services, so the rules live where SMTP, IMAP, the CLI and jobs can call them too;
services raise domain errors and one handler (api/errors.py) renders them.

Read from the source (ast), like tests/core/test_import_graph.py, over every module of
`api/`: one that queries a model's manager, opens a transaction or catches a database
error is doing a selector's or a service's job; one that builds an error body, answers a
constant 4xx/5xx itself or catches a DomainError is doing the handler's.

Two modules are the machinery the rules name, each allowed only the one thing it exists
for: `fields.py` queries (`OwnedField` resolves a body's reference to the caller's own
object, for every serializer), `errors.py` builds error answers and catches DomainError (it
is the handler: DRF's, and `domain_errors_rendered` for plain Django views).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mailplane.api

API = Path(mailplane.api.__file__).parent
# module -> the kinds of problem it exists to have (see the docstring)
ALLOWED = {"fields.py": {"query"}, "errors.py": {"error body", "error status", "catch"}}
DATABASE_NAMES = {"transaction", "IntegrityError", "connection", "connections"}
RESPONSES = {"Response", "JsonResponse", "HttpResponse"}


def _error_status(node: ast.expr) -> bool:
    """`status=404`, `status=status.HTTP_503_SERVICE_UNAVAILABLE`, `status=HTTP_400_…`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value >= 400
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return name.startswith(("HTTP_4", "HTTP_5"))


def _name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _problems(path: Path) -> list[tuple[str, str]]:
    """(kind, where and why) of each thing in the module that is not a view's job."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute) and node.attr == "objects":
            found.append(("query", f"{where}: .objects (a query: use a selector)"))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("django.db"):
            names = {alias.name for alias in node.names} & DATABASE_NAMES
            if names:
                found.append(("query", f"{where}: {sorted(names)} (a service's job)"))
        if isinstance(node, ast.Call) and _name(node.func) == "error_body":
            found.append(("error body", f"{where}: error_body() (raise a DomainError)"))
        if isinstance(node, ast.Call) and _name(node.func) in RESPONSES:
            for keyword in node.keywords:
                if keyword.arg == "status" and _error_status(keyword.value):
                    found.append(("error status", f"{where}: an error answered by hand"))
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            caught = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            if any(_name(c) in ("DomainError", "IntegrityError", "DatabaseError") for c in caught):
                found.append(("catch", f"{where}: catches {ast.unparse(node.type)}"))
    return found


def test_api_modules_neither_query_nor_write_nor_render_errors():
    modules = sorted(API.glob("*.py"))
    assert {p.name for p in modules} >= {"bulk.py", "exports.py", "provider_webhooks.py"}
    problems = [
        why
        for path in modules
        for kind, why in _problems(path)
        if kind not in ALLOWED.get(path.name, set())
    ]
    assert not problems, problems


def test_the_allowed_modules_still_need_their_allowance():
    """An allowance nothing uses any more is removed, not kept 'just in case'."""
    for name, kinds in ALLOWED.items():
        used = {kind for kind, _ in _problems(API / name)}
        assert kinds <= used, (name, kinds - used)


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("from django.db import transaction\n", "query"),
        ("def get(request):\n    return Project.objects.filter(pk=1)\n", "query"),
        ("x = error_body('conflict', 'taken')\n", "error body"),
        ("r = Response({}, status=409)\n", "error status"),
        ("r = Response({}, status=status.HTTP_503_SERVICE_UNAVAILABLE)\n", "error status"),
        ("try:\n    f()\nexcept (ValueError, DomainError):\n    pass\n", "catch"),
    ],
)
def test_the_check_finds_what_it_forbids(tmp_path, source, kind):
    """It would fail on the code it forbids..."""
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    assert [k for k, _ in _problems(bad)] == [kind]


def test_the_check_lets_a_view_connect(tmp_path):
    """...and not on a view that only connects."""
    good = tmp_path / "good.py"
    good.write_text(
        "def post(self, request):\n"
        "    job = thing_start(organization=organization_of(request))\n"
        "    return Response(shown, status=status.HTTP_201_CREATED)\n"
    )
    assert _problems(good) == []
