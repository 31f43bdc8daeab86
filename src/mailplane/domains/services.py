"""Writes for domains: create with a DKIM key and the records to publish; verify them."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.utils import timezone

from mailplane.cells.routing import data_atomic
from mailplane.cells.selectors import exists_in_other_cells
from mailplane.core.errors import Conflict, NotFound, ValidationFailed
from mailplane.dns import Resolver, cname_lookup, mx_lookup, resolver_from_settings, txt_lookup
from mailplane.domains.dkim import dkim_key_generate
from mailplane.domains.models import (
    DnsRecord,
    Domain,
    RecordPurpose,
    RecordStatus,
    VerificationState,
)
from mailplane.domains.verification import (
    Check,
    dkim_evaluate,
    dmarc_evaluate,
    mx_evaluate,
    reserved_acceptance,
    reserved_tld,
    return_path_evaluate,
    spf_evaluate,
)
from mailplane.projects.models import Project
from mailplane.relays.models import RelayServer
from mailplane.relays.schemas import is_hostname
from mailplane.tenancy.models import Organization

log = logging.getLogger(__name__)

RETURN_PATH_LABEL = "bounces"


def domain_normalise(name: str) -> str:
    """Lower-case A-label form (IDNA), without a trailing dot; raises on anything else."""
    text = str(name or "").strip().rstrip(".").lower()
    try:
        text = text.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValidationFailed.on("name", "is not a valid domain name") from exc
    if "." not in text or is_hostname(text) or text.replace(".", "").isdigit():
        raise ValidationFailed.on(
            "name", "must be a fully qualified domain name (e.g. example.com)"
        )
    return text


def platform_hosts() -> dict[str, str]:
    """The platform's own names that customer records point at."""
    conf = settings.MAILPLANE
    platform = conf["PLATFORM_DOMAIN"]
    return {
        "spf_include": f"_spf.{platform}",
        "mx": conf["MX_HOST"] or f"mx.{platform}",
        "return_path": f"rp.{platform}",
    }


def domain_records(domain: Domain) -> list[DnsRecord]:
    """The records a customer publishes for `domain` (unsaved)."""
    hosts = platform_hosts()
    name = domain.name
    return [
        DnsRecord(
            domain=domain,
            purpose=RecordPurpose.MX,
            type="MX",
            name=name,
            value=hosts["mx"],
            priority=10,
        ),
        DnsRecord(
            domain=domain,
            purpose=RecordPurpose.SPF,
            type="TXT",
            name=name,
            value=f"v=spf1 include:{hosts['spf_include']} ~all",
        ),
        DnsRecord(
            domain=domain,
            purpose=RecordPurpose.DKIM,
            type="TXT",
            name=f"{domain.dkim_selector}._domainkey.{name}",
            value=f"v=DKIM1; k=rsa; p={domain.dkim_public_key}",
        ),
        DnsRecord(
            domain=domain,
            purpose=RecordPurpose.DMARC,
            type="TXT",
            name=f"_dmarc.{name}",
            value=f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{name}; adkim=r; aspf=r",
        ),
        # Bounces come back to a host of the customer's domain so SPF aligns (RFC 7489 §3.1.2).
        DnsRecord(
            domain=domain,
            purpose=RecordPurpose.RETURN_PATH,
            type="CNAME",
            name=domain.return_path_host,
            value=hosts["return_path"],
            required=False,
        ),
    ]


def domain_create(
    *,
    organization: Organization,
    name: str,
    relay_server: RelayServer,
    project: Project | None = None,
    redirect: str = "",
) -> Domain:
    normalised = domain_normalise(name)
    key = dkim_key_generate()
    with data_atomic():
        # Unique platform-wide: the inbound MX of each cell routes by it.
        if Domain.objects.filter(name=normalised).exists() or exists_in_other_cells(
            Domain, name=normalised
        ):
            raise Conflict(
                f"domain {normalised} is already registered",
                details={"name": ["already registered"]},
            )
        domain = Domain.objects.create(
            organization=organization,
            relay_server=relay_server,
            project=project,
            name=normalised,
            redirect=redirect,
            dkim_selector=key.selector,
            dkim_private_key=key.private_pem,
            dkim_public_key=key.public_b64,
            return_path_host=f"{RETURN_PATH_LABEL}.{normalised}",
        )
        records = domain_records(domain)
        if reserved_accepted(domain.name):
            _accept_reserved(domain, records)
        DnsRecord.objects.bulk_create(records)
    return domain


def reserved_accepted(name: str) -> bool:
    """A reserved name (.test, …) that this deployment accepts without DNS (embedded)."""
    return bool(settings.MAILPLANE["ACCEPT_RESERVED_DOMAINS"]) and reserved_tld(name) is not None


def _accept_reserved(domain: Domain, records: list[DnsRecord]) -> None:
    """Mark `domain` verified and its records ok, each saying why no lookup was made."""
    now = timezone.now()
    detail = reserved_acceptance(domain.name)
    for record in records:
        record.status, record.detail, record.checked_at = RecordStatus.OK, detail, now
    if domain.verification_state != VerificationState.VERIFIED:
        domain.verification_state, domain.verified_at = VerificationState.VERIFIED, now
    domain.last_checked_at = now
    domain.save(update_fields=["verification_state", "verified_at", "last_checked_at"])


def domain_records_refresh(*, domain: Domain) -> list[str]:
    """Bring the domain's records to what the platform asks for now (a new MX host or
    platform domain, a new DKIM key); returns the purposes that changed, each back to
    `pending` until checked again. Publishing them is the DNS provider's or the owner's job."""
    wanted = {record.purpose: record for record in domain_records(domain)}
    changed: list[str] = []
    with data_atomic():
        for record in DnsRecord.objects.select_for_update().filter(domain=domain):
            new = wanted.pop(record.purpose, None)
            if new is None:
                continue
            fields = ("type", "name", "value", "priority", "required")
            if all(getattr(record, f) == getattr(new, f) for f in fields):
                continue
            for f in fields:
                setattr(record, f, getattr(new, f))
            record.status, record.detail, record.checked_at = RecordStatus.PENDING, "", None
            record.save()
            changed.append(record.purpose)
        for missing in wanted.values():
            missing.save()
            changed.append(missing.purpose)
    return changed


def domain_dkim_rotate(*, domain: Domain) -> Domain:
    """A new DKIM key under a new selector. Signing uses it at once, so publish its record
    straight away (a connected DNS provider does: dnsproviders publishes on request)."""
    key = dkim_key_generate()
    while key.selector == domain.dkim_selector:  # same month, same 16 random bits
        key = dkim_key_generate()
    with data_atomic():
        domain.dkim_selector = key.selector
        domain.dkim_private_key = key.private_pem
        domain.dkim_public_key = key.public_b64
        domain.save(update_fields=["dkim_selector", "dkim_private_key", "dkim_public_key"])
        domain_records_refresh(domain=domain)
    log.info("domain %s: new DKIM selector %s", domain.name, key.selector)
    return domain


def domain_update(
    *,
    domain: Domain,
    project: Project | Any | None = ...,
    redirect: str | None = None,
    relay_server: RelayServer | None = None,
) -> Domain:
    """Change what a domain's owner may change; `relay_server` must be theirs (the API
    checks it) and is the default for the domain's new mailboxes."""
    if relay_server is not None:
        if relay_server.organization_id != domain.organization_id:
            raise ValidationFailed.on("relay_server", f"relay server {relay_server.pk} not found")
        domain.relay_server = relay_server
    if project is not ...:
        domain.project = project
    if redirect is not None:
        domain.redirect = redirect
    domain.save()
    return domain


def domain_delete(*, domain: Domain) -> None:
    if domain.mailboxes.exists():
        raise Conflict(
            "domain still has mailboxes: delete them first", details={"domain": ["has mailboxes"]}
        )
    domain.delete()


def dns_record_check(*, record: DnsRecord, resolver: Resolver) -> Check:
    """Look up one published record and judge it (no database access: runs in threads)."""
    hosts = platform_hosts()
    domain = record.domain
    match record.purpose:
        case RecordPurpose.MX:
            return mx_evaluate(mx_lookup(record.name, resolver=resolver), expected_host=hosts["mx"])
        case RecordPurpose.SPF:
            return spf_evaluate(
                txt_lookup(record.name, resolver=resolver), include_host=hosts["spf_include"]
            )
        case RecordPurpose.DKIM:
            return dkim_evaluate(
                txt_lookup(record.name, resolver=resolver), public_key=domain.dkim_public_key
            )
        case RecordPurpose.DMARC:
            return dmarc_evaluate(txt_lookup(record.name, resolver=resolver))
        case RecordPurpose.RETURN_PATH:
            return return_path_evaluate(
                cname_lookup(record.name, resolver=resolver),
                expected_target=hosts["return_path"],
            )
    raise ValueError(f"no check for DNS record purpose {record.purpose!r}")


def domain_verify(*, domain: Domain, resolver: Resolver | None = None) -> Domain:
    """Check every record of `domain` in the DNS and record what was found.

    The lookups run in parallel and outside any transaction (each may take up to
    DNS_TIMEOUT); the results are then written in one short transaction. The domain becomes
    verified when every required record is ok, and falls back to dns_pending when a required
    record is definitely missing or wrong. A failed lookup (timeout, SERVFAIL) proves
    nothing, so it leaves the state as it was. Existing mailboxes are never touched. A
    reserved name that embedded mode accepts (`reserved_accepted`) is not looked up at all.
    """
    if reserved_accepted(domain.name):
        with data_atomic():
            locked = Domain.objects.select_for_update().filter(pk=domain.pk).first()
            if locked is None:
                raise NotFound("domain not found")
            records = list(locked.dns_records.all())
            _accept_reserved(locked, records)
            DnsRecord.objects.bulk_update(records, ["status", "detail", "checked_at"])
        return locked
    resolver = resolver or resolver_from_settings()
    records = list(domain.dns_records.select_related("domain"))
    with ThreadPoolExecutor(max_workers=max(len(records), 1)) as pool:
        checks = list(
            pool.map(lambda record: dns_record_check(record=record, resolver=resolver), records)
        )
    now = timezone.now()
    with data_atomic():
        locked = Domain.objects.select_for_update().filter(pk=domain.pk).first()
        if locked is None:
            raise NotFound("domain not found")
        for record, check in zip(records, checks, strict=True):
            record.status, record.detail, record.checked_at = check.status, check.detail, now
        DnsRecord.objects.bulk_update(records, ["status", "detail", "checked_at"])
        required = [r.status for r in records if r.required]
        before = locked.verification_state
        if all(status == RecordStatus.OK for status in required):
            if before != VerificationState.VERIFIED:
                locked.verification_state, locked.verified_at = VerificationState.VERIFIED, now
        elif any(status in (RecordStatus.MISSING, RecordStatus.INVALID) for status in required):
            locked.verification_state, locked.verified_at = VerificationState.DNS_PENDING, None
        locked.last_checked_at = now
        locked.save(update_fields=["verification_state", "verified_at", "last_checked_at"])
    if locked.verification_state != before:
        log.info("domain %s: %s -> %s", locked.name, before, locked.verification_state)
    return locked
