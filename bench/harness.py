"""What every benchmark does first: Django on a throw-away data directory, and an account
with a verified `bench.test` domain (verification itself is not what is measured)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent.parent / "src"


def bench_django(*, env: dict[str, str], database_url: str | None = None) -> None:
    """Configure this process from `env`, start Django and migrate."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailplane.settings")
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    elif "DATABASE_URL" not in env:
        os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def bench_account(*, plan: str = "enterprise") -> tuple[Any, Any, Any]:
    """(organization, its native relay server, a verified bench.test domain)."""
    from mailplane.domains.models import Domain, VerificationState
    from mailplane.domains.services import domain_create
    from mailplane.tenancy.services import organization_create

    org = organization_create(name="Bench", owner_email="bench@bench.test", plan=plan)
    relay = org.relay_servers.order_by("id").first()
    assert relay is not None
    domain = domain_create(organization=org, name="bench.test", relay_server=relay)
    Domain.objects.filter(pk=domain.pk).update(verification_state=VerificationState.VERIFIED)
    return org, relay, domain
