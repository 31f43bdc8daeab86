"""Writes for DNS-provider connections, and the job that publishes a domain's records."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from mailplane.cells.routing import data_atomic
from mailplane.core.errors import Conflict, LimitReached, NotFound, ValidationFailed
from mailplane.core.ids import id_or_none
from mailplane.dnsproviders.errors import (
    CredentialsRejected,
    DnsProviderError,
    ProviderGaveUp,
    ProviderUnavailable,
)
from mailplane.dnsproviders.http import INTERACTIVE_POLICY, JOB_POLICY
from mailplane.dnsproviders.models import (
    ConnectionStatus,
    DnsProviderConnection,
    DomainDnsPublication,
)
from mailplane.dnsproviders.publishing import Action, ZonePublisher
from mailplane.dnsproviders.registry import PROVIDERS, client_for, credentials_validate
from mailplane.domains.models import Domain
from mailplane.domains.services import domain_create, domain_verify
from mailplane.jobs.models import Job, JobStatus
from mailplane.jobs.registry import job_handler
from mailplane.jobs.services import MAX_ATTEMPTS, job_start
from mailplane.projects.models import Project
from mailplane.relays.models import RelayServer
from mailplane.tenancy.models import Organization

log = logging.getLogger(__name__)

PUBLISH_JOB = "domain.dns_publish"
MAX_CONNECTIONS = 20  # per account: a handful of DNS accounts, not a store for secrets
PUBLISH_LEASE = timedelta(minutes=10)  # a publish claimed longer ago died with its worker


def _name(name: Any) -> str:
    text = str(name or "").strip()
    if not text:
        raise ValidationFailed.on("name", "must not be blank")
    if len(text) > 200:
        raise ValidationFailed.on("name", "must be at most 200 characters")
    return text


# -- connections -----------------------------------------------------------------------
def dns_provider_create(
    *, organization: Organization, name: str, provider: str, credentials: Any
) -> DnsProviderConnection:
    """Store the credentials (encrypted); they are checked by `dns_provider_test`."""
    clean = credentials_validate(provider, credentials)
    with data_atomic():
        Organization.objects.select_for_update().filter(pk=organization.pk).first()
        if DnsProviderConnection.objects.filter(organization=organization).count() >= (
            MAX_CONNECTIONS
        ):
            raise LimitReached(f"an account may hold {MAX_CONNECTIONS} DNS-provider connections")
        return DnsProviderConnection.objects.create(
            organization=organization, name=_name(name), provider=provider, credentials=clean
        )


def dns_provider_get(*, organization: Organization, connection_id: Any) -> DnsProviderConnection:
    pk = id_or_none(connection_id)
    found = (
        DnsProviderConnection.objects.filter(organization=organization, pk=pk).first()
        if pk
        else None
    )
    if found is None:
        raise NotFound("DNS-provider connection not found")
    return found


def dns_provider_for_field(
    *, organization: Organization, connection_id: Any, field: str = "dns_provider"
) -> DnsProviderConnection:
    """A connection named in a request body: unknown ids are a 400 on that field."""
    try:
        return dns_provider_get(organization=organization, connection_id=connection_id)
    except NotFound as exc:
        raise ValidationFailed.on(
            field, f"DNS-provider connection {connection_id} not found"
        ) from exc


def dns_provider_update(
    *, connection: DnsProviderConnection, name: str | None = None, credentials: Any = None
) -> DnsProviderConnection:
    """Rename, or replace the credentials (all of them: they are never read back)."""
    fields = []
    if name is not None:
        connection.name = _name(name)
        fields.append("name")
    if credentials is not None:
        connection.credentials = credentials_validate(connection.provider, credentials)
        connection.status, connection.status_detail = ConnectionStatus.UNTESTED, ""
        connection.tested_at = None
        fields += ["credentials", "status", "status_detail", "tested_at"]
    if fields:
        connection.save(update_fields=fields)
    return connection


def dns_provider_delete(*, connection: DnsProviderConnection) -> None:
    """Forget the credentials. Records already published stay in the zone."""
    connection.delete()


def dns_provider_test(*, connection: DnsProviderConnection) -> DnsProviderConnection:
    """Ask the provider whether the credentials work, and record the answer."""
    client = client_for(connection.provider, connection.credentials, policy=INTERACTIVE_POLICY)
    try:
        detail = client.verify_credentials()
        status = ConnectionStatus.VALID
    except CredentialsRejected as exc:
        status, detail = ConnectionStatus.INVALID, exc.message
    except DnsProviderError as exc:
        status, detail = ConnectionStatus.ERROR, str(exc)
    finally:
        client.close()
    connection.status, connection.status_detail = status, detail
    connection.tested_at = timezone.now()
    connection.save(update_fields=["status", "status_detail", "tested_at"])
    return connection


# -- publishing ------------------------------------------------------------------------
def domain_dns_publish_start(
    *,
    organization: Organization,
    domain: Domain,
    connection: DnsProviderConnection | None = None,
    merge_spf: bool = False,
) -> Job:
    """Bind `domain` to `connection` (or keep its binding) and queue a publish. A publish
    already queued for the domain with the same options is returned instead of a second."""
    if domain.organization_id != organization.pk:
        raise NotFound("domain not found")
    with data_atomic():
        publication = DomainDnsPublication.objects.filter(domain=domain).first()
        if connection is None:
            if publication is None:
                raise ValidationFailed.on(
                    "dns_provider", "this domain has no DNS provider yet: name a connection"
                )
        elif connection.organization_id != organization.pk:
            raise ValidationFailed.on(
                "dns_provider", f"DNS-provider connection {connection.pk} not found"
            )
        elif publication is None:
            publication = DomainDnsPublication.objects.create(domain=domain, connection=connection)
        elif publication.connection_id != connection.pk:
            publication.connection = connection
            publication.zone_id = publication.zone_name = ""
            publication.save(update_fields=["connection", "zone_id", "zone_name"])
        payload = {
            "domain_id": domain.pk,
            "connection_id": publication.connection_id,
            "merge_spf": bool(merge_spf),
        }
        queued = Job.objects.filter(  # not yet started: it will see the domain as it is now
            organization=organization,
            kind=PUBLISH_JOB,
            status=JobStatus.PENDING,
            started_at__isnull=True,
        )
        for job in queued:
            if job.payload == payload:
                return job
        return job_start(organization=organization, kind=PUBLISH_JOB, payload=payload)


def domain_dns_publish_request(
    *,
    organization: Organization,
    domain: Domain,
    dns_provider: int | None = None,
    merge_spf: bool = False,
) -> Job:
    """A publish as a request asks for it: through connection id `dns_provider` (one the
    account does not have is a 400 on that field), or through the domain's own."""
    connection = (
        None
        if dns_provider is None
        else dns_provider_for_field(organization=organization, connection_id=dns_provider)
    )
    return domain_dns_publish_start(
        organization=organization, domain=domain, connection=connection, merge_spf=merge_spf
    )


def domain_create_published(
    *,
    organization: Organization,
    name: str,
    relay_server: RelayServer,
    project: Project | None = None,
    redirect: str = "",
    dns_provider: int | None = None,
) -> tuple[Domain, Job | None]:
    """Add a domain and, with `dns_provider`, queue the publishing of its records through
    that connection. The connection is checked first: a wrong id creates nothing."""
    connection = (
        None
        if dns_provider is None
        else dns_provider_for_field(organization=organization, connection_id=dns_provider)
    )
    domain = domain_create(
        organization=organization,
        name=name,
        relay_server=relay_server,
        project=project,
        redirect=redirect,
    )
    if connection is None:
        return domain, None
    job = domain_dns_publish_start(organization=organization, domain=domain, connection=connection)
    return domain, job


def _claim(publication: DomainDnsPublication) -> bool:
    now = timezone.now()
    free = Q(publishing_since__isnull=True) | Q(publishing_since__lt=now - PUBLISH_LEASE)
    return bool(
        DomainDnsPublication.objects.filter(free, pk=publication.pk).update(publishing_since=now)
    )


def domain_dns_publish(*, domain: Domain, merge_spf: bool = False) -> dict[str, Any]:
    """Publish the domain's records through its connection, then check them in the DNS.

    Returns what was done per record and what verification found. Raises the permanent
    errors of `dnsproviders.errors` (the job fails with their message) and
    ProviderUnavailable (the job is tried again later).
    """
    publication = (
        DomainDnsPublication.objects.select_related("connection").filter(domain=domain).first()
    )
    if publication is None:
        raise ValidationFailed.on("dns_provider", "this domain has no DNS provider")
    if not _claim(publication):
        raise Conflict(f"records of {domain.name} are being published already; try again soon")
    connection = publication.connection
    client = client_for(connection.provider, connection.credentials, policy=JOB_POLICY)
    try:
        zone = client.find_zone(domain.name)
        DomainDnsPublication.objects.filter(pk=publication.pk).update(
            zone_id=zone.id, zone_name=zone.name
        )
        outcomes = ZonePublisher(
            domain=domain, client=client, zone=zone, merge_spf=merge_spf, now=timezone.now()
        ).publish()
    finally:
        client.close()
        DomainDnsPublication.objects.filter(pk=publication.pk).update(publishing_since=None)
    verified = domain_verify(domain=domain)
    result: dict[str, Any] = {
        "domain": domain.name,
        "provider": connection.provider,
        "dns_provider": connection.pk,
        "zone": zone.name,
        "records": [o.as_dict() for o in outcomes],
        "counts": dict(Counter(o.action.value for o in outcomes)),
        "verification_state": verified.verification_state,
        "verification": [
            {"purpose": r.purpose, "status": r.status, "detail": r.detail}
            for r in verified.dns_records.all()
        ],
    }
    if zone.status not in ("active", ""):
        result["zone_note"] = (
            f"the {PROVIDERS[connection.provider].name} zone {zone.name} is {zone.status}: "
            "its records are served once the domain's name servers point at it"
        )
    DomainDnsPublication.objects.filter(pk=publication.pk).update(
        published_at=timezone.now(), last_result=result
    )
    conflicts = sum(1 for o in outcomes if o.action is Action.CONFLICT)
    log.info(
        "domain %s: DNS published through %s (%s): %s",
        domain.name,
        connection.provider,
        zone.name,
        ", ".join(f"{k} {v}" for k, v in result["counts"].items()) or "nothing to do",
    )
    if conflicts:
        log.warning(
            "domain %s: %d DNS record(s) left unpublished (conflict)", domain.name, conflicts
        )
    return result


@job_handler(PUBLISH_JOB)
def _domain_dns_publish_job(job: Job) -> dict[str, Any]:
    domain = Domain.objects.filter(
        pk=job.payload["domain_id"], organization=job.organization
    ).first()
    if domain is None:
        raise NotFound("domain not found (deleted since the publish was queued)")
    try:
        return domain_dns_publish(domain=domain, merge_spf=bool(job.payload.get("merge_spf")))
    except ProviderUnavailable as exc:
        if job.attempts >= MAX_ATTEMPTS:
            raise ProviderGaveUp(f"gave up after {job.attempts} attempts: {exc.message}") from exc
        raise  # temporary: the job is run again by the sweep
