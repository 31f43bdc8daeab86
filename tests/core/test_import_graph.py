"""The modules of src/mailplane import each other without circles (issue 10).

Imports inside functions count too: hiding an import in a function body is how circles
were dodged (bounces → late → processor → bounces). The one way out is a comment starting
`# lazy:` on the line above (or at the end of) the import that says why it must be lazy.

Read with ast rather than by importing: the graph is what the source says, whether or
not a test happens to execute each function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mailplane

SRC = Path(mailplane.__file__).parent


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _lazy(lines: list[str], lineno: int) -> bool:
    """The import at `lineno` (1-based) is marked as lazy on purpose: at its end, or in the
    comment block right above it."""
    if lines[lineno - 1].partition("#")[2].strip().startswith("lazy:"):
        return True
    above = lineno - 2
    while above >= 0 and lines[above].strip().startswith("#"):
        if lines[above].strip().startswith("# lazy:"):
            return True
        above -= 1
    return False


def import_graph(root: Path) -> dict[str, set[str]]:
    """module → the package's modules it imports (anywhere in its body), migrations aside."""
    package = root.name
    paths = {_module_name(root, p): p for p in root.rglob("*.py") if "migrations" not in p.parts}

    def resolve(name: str) -> str | None:
        # `from a.b import c`: c is a module if there is one, else a name in a.b.
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        source = path.read_text()
        lines = source.splitlines()
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import | ast.ImportFrom) and _lazy(lines, node.lineno):
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                    base = f"{anchor}.{base}" if base else anchor
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                if name == package or name.startswith(package + "."):
                    target = resolve(name)
                    if target and target != module:
                        imported.add(target)
        graph[module] = imported
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(circles)


def test_mailplane_has_no_import_circles():
    assert import_circles(import_graph(SRC)) == []


def test_lazy_imports_say_why():
    bare = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            if line.strip() in ("# lazy:", "#lazy:") or line.rstrip().endswith("# lazy:"):
                bare.append(f"{path.relative_to(SRC)}:{number}")
    assert bare == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_circle_hidden_in_a_function_is_found(tmp_path):
    root = _package(
        tmp_path,
        {
            "bounces.py": "def match():\n    from pkg.late import store\n",
            "late.py": "from pkg import processor\n",
            "processor.py": "from pkg.bounces import verp\n",
            "other.py": "from . import late\n",
        },
    )
    assert import_circles(import_graph(root)) == [["pkg.bounces", "pkg.late", "pkg.processor"]]


def test_an_import_marked_lazy_with_a_reason_is_left_out(tmp_path):
    root = _package(
        tmp_path,
        {
            "services.py": (
                "def start():\n    # lazy: tasks imports us\n    # (reason)\n"
                "    from pkg import tasks\n"
            ),
            "tasks.py": "from pkg.services import start\n",
        },
    )
    assert import_circles(import_graph(root)) == []
    assert import_graph(root)["pkg.tasks"] == {"pkg.services"}
