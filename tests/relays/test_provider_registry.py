"""One list of provider names (relays/providers.py), and every part keyed on it (issue 10):
each provider has its settings schema and its sender, and no module spells a name out.
"""

from __future__ import annotations

import ast

from mailplane.delivery.providers import SENDERS, provider_for
from mailplane.relays.models import RelayServer
from mailplane.relays.providers import Provider
from mailplane.relays.schemas import SCHEMAS, validate_provider_config
from tests.core.test_import_graph import SRC

REGISTRY = SRC / "relays" / "providers.py"
# The same word meaning something else: a message's way in (queue.models.MessageSource).
OTHER_MEANINGS = {("queue/models.py", "smtp")}


def test_every_provider_has_a_schema_and_a_sender():
    assert set(SCHEMAS) == set(Provider)
    assert set(SENDERS) == set(Provider)
    assert [value for value, _ in RelayServer._meta.get_field("provider").choices] == list(
        Provider.values
    )


def test_every_provider_builds_its_sender_from_its_least_valid_settings():
    least = {
        Provider.MISSIONINBOX: ({}, {}),
        Provider.MAILGUN: ({"domain": "mg.acme.test"}, {"api_key": "key-123"}),
        Provider.SENDGRID: ({}, {"api_key": "SG.123"}),
        Provider.SMTP: ({"host": "smarthost.acme.test", "port": 587}, {}),
    }
    assert set(least) == set(Provider)
    for provider, (configuration, credentials) in least.items():
        configuration, credentials = validate_provider_config(provider, configuration, credentials)
        sender = provider_for(
            provider=provider, configuration=configuration, credentials=credentials
        )
        assert callable(sender.send) and sender.max_connections_per_domain >= 1, provider


def test_no_module_spells_a_provider_name_out():
    spelled = []
    for path in sorted(SRC.rglob("*.py")):
        if path == REGISTRY or "migrations" in path.parts:
            continue
        where = str(path.relative_to(SRC))
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and node.value in Provider.values
                and (where, node.value) not in OTHER_MEANINGS
            ):
                spelled.append(f"{where}:{node.lineno}: {node.value!r}")
    assert spelled == []
