"""queue/transitions.py is the only writer of message state (issue 10): no other module
changes a recipient's status, creates an event, a queue row or a suppression.

Read from the source with ast, so that a new writer anywhere under src/ fails here before
any test has to exercise it. The claim (delivery/claims.py) may set its lease columns.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mailplane

SRC = Path(mailplane.__file__).parent
OWNER = SRC / "queue" / "transitions.py"
# The models whose rows only the owner creates or changes.
OWNED = {"DeliveryEvent", "Suppression", "EventSequence", "QueuedRecipient"}
# QueuedRecipient columns others may write (the claim's lease).
LEASE_COLUMNS = {"claimed_by", "claimed_until"}
WRITES = {
    "update",
    "bulk_create",
    "bulk_update",
    "create",
    "get_or_create",
    "update_or_create",
    "delete",
    "save",
}


def _root_name(node: ast.AST) -> str | None:
    """The name a call chain starts from: QueuedRecipient in QueuedRecipient.objects.filter()."""
    while True:
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        else:
            return node.id if isinstance(node, ast.Name) else None


def state_writes(source: str) -> list[str]:
    """Each place in `source` that writes an owned model, as 'line: what'."""
    tree = ast.parse(source)
    # Names bound to an owned model's querysets (rows = QueuedRecipient.objects.filter(…)),
    # followed through re-assignments (rows = rows.filter(…)) until nothing new is bound.
    aliases: dict[str, str] = {}
    while True:
        before = dict(aliases)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                root = _root_name(node.value)
                model = root if root in OWNED else aliases.get(root or "")
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if model and isinstance(target, ast.Name) and target.id not in OWNED:
                        aliases[target.id] = model
        if aliases == before:
            break
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in OWNED:
            found.append(f"{node.lineno}: builds a {func.id}")
        elif isinstance(func, ast.Attribute) and func.attr in WRITES:
            root = _root_name(func.value)
            model = root if root in OWNED else aliases.get(root or "")
            if model is None:
                continue
            columns = {k.arg or "**" for k in node.keywords}
            lease_only = bool(columns) and columns <= LEASE_COLUMNS
            if model == "QueuedRecipient" and func.attr == "update" and lease_only:
                continue  # the claim's lease, no state
            found.append(f"{node.lineno}: {model}….{func.attr}({', '.join(sorted(columns))})")
    return found


def test_only_the_transitions_module_writes_message_state():
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        if path == OWNER or "migrations" in path.parts:
            continue
        writes = state_writes(path.read_text())
        if writes:
            offenders[str(path.relative_to(SRC))] = writes
    assert offenders == {}


def test_the_owner_does_write_state():
    # The scan sees the writes where they are (the test above is not vacuous).
    writes = "\n".join(state_writes(OWNER.read_text()))
    for expected in ("builds a DeliveryEvent", "builds a Suppression", "builds a QueuedRecipient"):
        assert expected in writes
    assert "QueuedRecipient….update(**)" in writes  # the grouped UPDATE of outcomes
    assert "QueuedRecipient….bulk_create" in writes


@pytest.mark.parametrize(
    "writer",
    [
        # What delivery/late.py and processor.py did before issue 10.
        "QueuedRecipient.objects.filter(pk=row.pk).update(status=s, last_reply=r)",
        "DeliveryEvent.objects.bulk_create(events)",
        "Suppression.objects.bulk_create(suppressions, ignore_conflicts=True)",
        "events.append(DeliveryEvent(organization_id=1, type=kind))",
        "QueuedRecipient.objects.filter(pk__in=ids)[:5].update(attempts=0)",
        "QueuedRecipient.objects.filter(pk__in=ids, claimed_by=w).update(**fields)",
        "rows = QueuedRecipient.objects.all()\nrows = rows.filter(x=1)\nrows.update(status=s)",
        "Suppression.objects.filter(address=a).delete()",
    ],
)
def test_the_scan_flags_state_writes(writer):
    assert state_writes(writer) != []


def test_the_scan_lets_the_claim_take_its_lease():
    claim = "QueuedRecipient.objects.filter(pk__in=ids).update(claimed_by=w, claimed_until=u)"
    assert state_writes(claim) == []
    assert state_writes("QueuedRecipient.objects.filter(pk=1).exists()") == []
