"""The one list of sending providers a relay server can name.

Everything else keys on these members: the settings schema of each (relays/schemas.py),
its sender (delivery/providers), its webhook receiver if it has one
(delivery/providers/<name>.py), the CLI's choices and the model's. A new provider is a
member here plus its entries there; tests/relays/test_provider_registry.py checks that
every member has each part and that no module spells a name out instead.

A leaf module (no Django app needed): the CLI builds its parser before Django is set up.
"""

from __future__ import annotations

from django.db.models import TextChoices


class Provider(TextChoices):
    MISSIONINBOX = "missioninbox", "MissionInbox (native, direct to MX)"
    MAILGUN = "mailgun", "Mailgun"
    SENDGRID = "sendgrid", "SendGrid"
    SMTP = "smtp", "SMTP smarthost"


# What every new account gets (seed 000: the service's own native relay server).
DEFAULT_PROVIDER = Provider.MISSIONINBOX
