"""Per-provider configuration and credential schemas, declared once.

Each provider lists its non-secret settings (returned by the API) and its secret
credentials (stored encrypted, returned masked). Validation names the offending field.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from mailplane.core.errors import ValidationFailed
from mailplane.relays.providers import Provider

Check = Callable[[Any], str | None]  # returns an error message or None

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
    re.I,
)


def is_hostname(value: Any) -> str | None:
    return None if isinstance(value, str) and _HOSTNAME.match(value) else "must be a host name"


def is_ip(value: Any) -> str | None:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return "must be an IP address"
    return None


def is_https_url(value: Any) -> str | None:
    parsed = urlparse(str(value))
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        return "must be an http(s) URL"
    return None


def is_port(value: Any) -> str | None:
    return None if isinstance(value, int) and 0 < value < 65536 else "must be a port number"


def is_positive_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return None if ok else "must be a positive integer"


def is_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def int_between(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if ok else f"must be an integer from {low} to {high}"

    return check


# Per-destination politeness (delivery/worker.py): connections, or concurrent API requests,
# per destination domain from one worker. Past a few dozen a receiver sees a flood.
max_connections = int_between(1, 100)


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def non_empty_string(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


_PEM_ARMOUR = re.compile(r"-----(BEGIN|END) PUBLIC KEY-----|\s")


def p256_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's Signed Event Webhook verification key: an ECDSA P-256 public key, base64
    DER (SubjectPublicKeyInfo) as its settings page shows it; a PEM copy is taken too.
    Raises ValueError for anything else."""
    try:
        der = base64.b64decode(_PEM_ARMOUR.sub("", text), validate=True)
        key = load_der_public_key(der)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError("not a base64 DER public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 public key")
    return key


def is_p256_public_key(value: Any) -> str | None:
    if isinstance(value, str):
        try:
            p256_public_key(value)
        except ValueError:
            pass
        else:
            return None
    return "must be the ECDSA P-256 public key SendGrid shows (base64)"


@dataclass(frozen=True, slots=True)
class ProviderSchema:
    settings: dict[str, Check]
    required_settings: frozenset[str] = frozenset()
    credentials: dict[str, Check] = field(default_factory=dict)
    required_credentials: frozenset[str] = frozenset()


SCHEMAS: dict[Provider, ProviderSchema] = {
    Provider.MISSIONINBOX: ProviderSchema(
        settings={
            "helo_name": is_hostname,
            "source_address": is_ip,
            "max_connections_per_domain": max_connections,
        },
    ),
    Provider.MAILGUN: ProviderSchema(
        settings={
            "domain": is_hostname,
            "region": one_of("us", "eu"),
            "base_url": is_https_url,
            "max_connections_per_domain": max_connections,
        },
        required_settings=frozenset({"domain"}),
        credentials={
            "api_key": non_empty_string,
            # Mailgun's "HTTP webhook signing key": without it the webhook receiver for
            # this server is off (delivery/providers/mailgun.py).
            "webhook_signing_key": non_empty_string,
        },
        required_credentials=frozenset({"api_key"}),
    ),
    Provider.SENDGRID: ProviderSchema(
        settings={"base_url": is_https_url, "max_connections_per_domain": max_connections},
        credentials={
            "api_key": non_empty_string,
            # The Signed Event Webhook's verification key (a public key, kept with the
            # secrets so that one place holds what authenticates the provider).
            "webhook_verification_key": is_p256_public_key,
        },
        required_credentials=frozenset({"api_key"}),
    ),
    Provider.SMTP: ProviderSchema(
        settings={
            "host": is_hostname,
            "port": is_port,
            "tls_mode": one_of("none", "starttls", "implicit"),
            "tls_verify": is_bool,  # check the smarthost's certificate (default true)
            "helo_name": is_hostname,
            "max_connections_per_domain": max_connections,
        },
        required_settings=frozenset({"host", "port"}),
        credentials={"username": non_empty_string, "password": non_empty_string},
    ),
}


def _validate_section(
    section: str, values: Any, checks: dict[str, Check], required: frozenset[str]
) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ValidationFailed.on(section, "must be an object")
    errors: dict[str, list[str]] = {}
    for key, value in values.items():
        check = checks.get(key)
        if check is None:
            errors[f"{section}.{key}"] = ["unknown setting for this provider"]
        elif value is not None and (message := check(value)):
            errors[f"{section}.{key}"] = [message]
    for key in sorted(required - {k for k, v in values.items() if v not in (None, "")}):
        errors[f"{section}.{key}"] = ["required for this provider"]
    if errors:
        raise ValidationFailed("invalid relay server " + section, details=errors)
    return {k: v for k, v in values.items() if v is not None}


def validate_provider_config(
    provider: str, configuration: Any, credentials: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the cleaned (configuration, credentials) or raise ValidationFailed."""
    schema = SCHEMAS.get(Provider(provider)) if provider in Provider.values else None
    if schema is None:
        raise ValidationFailed.on("provider", f"must be one of {', '.join(SCHEMAS)}")
    cleaned = (
        _validate_section(
            "configuration", configuration, schema.settings, schema.required_settings
        ),
        _validate_section(
            "credentials", credentials, schema.credentials, schema.required_credentials
        ),
    )
    if provider == Provider.SMTP:
        # AUTH needs both halves (the smarthost provider logs in when a username is set).
        creds = cleaned[1]
        missing = [k for k in ("username", "password") if k not in creds]
        if len(missing) == 1:
            raise ValidationFailed(
                "invalid relay server credentials",
                details={f"credentials.{missing[0]}": ["required with the other AUTH field"]},
            )
    return cleaned


def mask_credentials(credentials: dict[str, Any]) -> dict[str, str]:
    """Show that a secret is set, and its last four characters, never the secret."""
    masked = {}
    for key, value in credentials.items():
        text = str(value)
        masked[key] = "****" + text[-4:] if len(text) >= 12 else "****"
    return masked
