"""Operator commands: accounts, API keys, relay servers, DNS providers, domain checks."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mailplane.core.errors import DomainError
from mailplane.relays.providers import Provider


def add_commands(sub: Any) -> None:
    org = sub.add_parser("org", help="accounts (organizations)").add_subparsers(
        dest="action", required=True
    )
    create = org.add_parser("create", help="create an account; prints its first API key last")
    create.add_argument("--name", required=True)
    create.add_argument("--email", required=True, help="owner's email (login name)")
    create.add_argument("--plan", default="starter", choices=["starter", "pro", "enterprise"])
    create.add_argument("--slug")
    create.set_defaults(func=org_create)
    listing = org.add_parser("list")
    listing.set_defaults(func=org_list)
    hosts = org.add_parser("set-hosts", help="dedicated SMTP/IMAP host names (single tenant)")
    hosts.add_argument("--org", required=True)
    hosts.add_argument("--smtp-host", default="")
    hosts.add_argument("--imap-host", default="")
    hosts.set_defaults(func=org_set_hosts)

    key = sub.add_parser("key", help="API keys").add_subparsers(dest="action", required=True)
    kc = key.add_parser("create", help="prints the new key on its last line")
    kc.add_argument("--org", required=True)
    kc.add_argument("--name", default="default")
    kc.set_defaults(func=key_create)
    kl = key.add_parser("list")
    kl.add_argument("--org", required=True)
    kl.set_defaults(func=key_list)
    kr = key.add_parser("revoke")
    kr.add_argument("--org", required=True)
    kr.add_argument("--id", type=int, required=True)
    kr.set_defaults(func=key_revoke)

    relay = sub.add_parser("relay", help="relay servers").add_subparsers(
        dest="action", required=True
    )
    rc = relay.add_parser("create")
    rc.add_argument("--name", required=True)
    rc.add_argument("--provider", required=True, choices=Provider.values)
    rc.add_argument("--org", help="assign to this account at once")
    rc.add_argument("--config", default="{}", help="JSON object of settings")
    rc.add_argument("--credentials", default="{}", help="JSON object of secrets")
    rc.set_defaults(func=relay_create)
    ra = relay.add_parser("assign")
    ra.add_argument("--id", type=int, required=True)
    ra.add_argument("--org", required=True)
    ra.set_defaults(func=relay_assign)

    domain = sub.add_parser("domain", help="customer domains").add_subparsers(
        dest="action", required=True
    )
    dv = domain.add_parser(
        "verify", help="check a domain's DNS records now; exit status 0 if verified, 1 if not"
    )
    dv.add_argument("--id", type=int, required=True)
    dv.set_defaults(func=domain_verify)
    dp = domain.add_parser(
        "publish-dns",
        help="publish a domain's records through its DNS provider now, then verify them",
    )
    dp.add_argument("--id", type=int, required=True)
    dp.add_argument("--dns-provider", type=int, help="connection id (default: the domain's)")
    dp.add_argument(
        "--merge-spf", action="store_true", help="add our include to an existing SPF record"
    )
    dp.set_defaults(func=domain_publish_dns)

    dns = sub.add_parser("dns-provider", help="accounts' Cloudflare / GoDaddy connections")
    dns_actions = dns.add_subparsers(dest="action", required=True)
    da = dns_actions.add_parser(
        "add",
        help="store credentials read as a JSON object from stdin (never from the command "
        'line, which other users can see): {"api_token": ...} for Cloudflare, '
        '{"api_key": ..., "api_secret": ...} for GoDaddy',
    )
    da.add_argument("--org", required=True)
    da.add_argument("--provider", required=True, choices=["cloudflare", "godaddy"])
    da.add_argument("--name", required=True)
    da.set_defaults(func=dns_provider_add)
    dl = dns_actions.add_parser("list")
    dl.add_argument("--org", required=True)
    dl.set_defaults(func=dns_provider_list)
    dt = dns_actions.add_parser("test", help="check the credentials with the provider")
    dt.add_argument("--id", type=int, required=True)
    dt.set_defaults(func=dns_provider_test)
    dr = dns_actions.add_parser("remove")
    dr.add_argument("--id", type=int, required=True)
    dr.set_defaults(func=dns_provider_remove)


def _fail(message: str) -> int:
    print(f"mailplane: {message}", file=sys.stderr)
    return 2


def _org(slug: str) -> Any:
    from mailplane.cells.routing import route_set
    from mailplane.cells.selectors import organization_route
    from mailplane.core.errors import NotFound
    from mailplane.tenancy.models import Organization

    org = Organization.objects.filter(slug=slug).first()
    if org is None:
        raise NotFound(f"no organization {slug!r}")
    # One command per process: the rest of it reads and writes the account's cell.
    route_set(organization_route(organization=org))
    return org


def _guard(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            result: int = func(args)
            return result
        except DomainError as exc:
            details = "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.details.items())
            return _fail(f"{exc.message}" + (f" ({details})" if details else ""))
        except json.JSONDecodeError as exc:
            return _fail(f"invalid JSON: {exc}")

    return run


@_guard
def org_create(args: argparse.Namespace) -> int:
    from mailplane.tenancy.services import api_key_create, organization_create

    org = organization_create(
        name=args.name, owner_email=args.email, plan=args.plan, slug=args.slug
    )
    issued = api_key_create(organization=org, name="default")
    print(f"organization {org.slug} (id {org.pk}, plan {org.plan}) created")
    print(issued.secret)
    return 0


@_guard
def org_list(args: argparse.Namespace) -> int:
    from mailplane.tenancy.models import Organization

    for org in Organization.objects.order_by("id"):
        print(f"{org.pk}\t{org.slug}\t{org.plan}\t{org.name}")
    return 0


@_guard
def org_set_hosts(args: argparse.Namespace) -> int:
    org = _org(args.org)
    org.dedicated_smtp_host, org.dedicated_imap_host = args.smtp_host, args.imap_host
    org.save(update_fields=["dedicated_smtp_host", "dedicated_imap_host"])
    print(
        f"{org.slug}: smtp={org.dedicated_smtp_host or '(shared)'} "
        f"imap={org.dedicated_imap_host or '(shared)'}"
    )
    return 0


@_guard
def key_create(args: argparse.Namespace) -> int:
    from mailplane.tenancy.services import api_key_create

    issued = api_key_create(organization=_org(args.org), name=args.name)
    print(f"key {issued.api_key.pk} ({issued.api_key.name}) created; it is shown only once")
    print(issued.secret)
    return 0


@_guard
def key_list(args: argparse.Namespace) -> int:
    for key in _org(args.org).api_keys.order_by("id"):
        state = "revoked" if key.revoked_at else "active"
        print(f"{key.pk}\t{key.prefix}…\t{key.name}\t{state}\tlast used {key.last_used_at or '-'}")
    return 0


@_guard
def key_revoke(args: argparse.Namespace) -> int:
    from mailplane.tenancy.services import api_key_revoke

    api_key_revoke(organization=_org(args.org), key_id=args.id)
    print(f"key {args.id} revoked")
    return 0


@_guard
def relay_create(args: argparse.Namespace) -> int:
    from mailplane.relays.services import relay_server_create

    server = relay_server_create(
        organization=_org(args.org) if args.org else None,
        name=args.name,
        provider=args.provider,
        configuration=json.loads(args.config),
        credentials=json.loads(args.credentials),
    )
    print(f"relay server {server.pk} ({server.provider}) created")
    return 0


@_guard
def relay_assign(args: argparse.Namespace) -> int:
    from mailplane.core.errors import NotFound
    from mailplane.relays.models import RelayServer
    from mailplane.relays.services import relay_server_assign

    server = RelayServer.objects.filter(pk=args.id).first()
    if server is None:
        raise NotFound(f"no relay server {args.id}")
    relay_server_assign(server=server, organization=_org(args.org))
    print(f"relay server {server.pk} assigned to {args.org}")
    return 0


@_guard
def domain_verify(args: argparse.Namespace) -> int:
    from mailplane.core.errors import NotFound
    from mailplane.domains import services
    from mailplane.domains.models import Domain

    domain = Domain.objects.filter(pk=args.id).first()
    if domain is None:
        raise NotFound(f"no domain {args.id}")
    domain = services.domain_verify(domain=domain)
    print(f"{domain.name}: {domain.verification_state}")
    for record in domain.dns_records.all():
        optional = "" if record.required else " (optional)"
        print(f"  {record.status:<8} {record.type:<5} {record.name}{optional}: {record.detail}")
    return 0 if domain.is_verified else 1


def _connection(connection_id: int) -> Any:
    from mailplane.core.errors import NotFound
    from mailplane.dnsproviders.models import DnsProviderConnection

    connection = DnsProviderConnection.objects.filter(pk=connection_id).first()
    if connection is None:
        raise NotFound(f"no DNS-provider connection {connection_id}")
    return connection


@_guard
def dns_provider_add(args: argparse.Namespace) -> int:
    from mailplane.dnsproviders.services import dns_provider_create

    connection = dns_provider_create(
        organization=_org(args.org),
        name=args.name,
        provider=args.provider,
        credentials=json.loads(sys.stdin.read(64 * 1024) or "null"),
    )
    print(f"DNS-provider connection {connection.pk} ({connection.provider}) stored")
    return 0


@_guard
def dns_provider_list(args: argparse.Namespace) -> int:
    from mailplane.relays.schemas import mask_credentials

    for connection in _org(args.org).dns_providers.order_by("id"):
        masked = ",".join(f"{k}={v}" for k, v in mask_credentials(connection.credentials).items())
        print(
            f"{connection.pk}\t{connection.provider}\t{connection.name}\t{masked}\t"
            f"{connection.status}"
        )
    return 0


@_guard
def dns_provider_test(args: argparse.Namespace) -> int:
    from mailplane.dnsproviders import services

    connection = services.dns_provider_test(connection=_connection(args.id))
    print(f"{connection.status}: {connection.status_detail}")
    return 0 if connection.status == "valid" else 1


@_guard
def dns_provider_remove(args: argparse.Namespace) -> int:
    from mailplane.dnsproviders.services import dns_provider_delete

    dns_provider_delete(connection=_connection(args.id))
    print(f"DNS-provider connection {args.id} removed (published records stay in the zone)")
    return 0


@_guard
def domain_publish_dns(args: argparse.Namespace) -> int:
    from mailplane.core.errors import NotFound
    from mailplane.dnsproviders.errors import ProviderUnavailable
    from mailplane.dnsproviders.models import DomainDnsPublication
    from mailplane.dnsproviders.services import domain_dns_publish
    from mailplane.domains.models import Domain

    domain = Domain.objects.filter(pk=args.id).first()
    if domain is None:
        raise NotFound(f"no domain {args.id}")
    if args.dns_provider is not None:
        connection = _connection(args.dns_provider)
        if connection.organization_id != domain.organization_id:
            raise NotFound(f"no DNS-provider connection {args.dns_provider} for that account")
        DomainDnsPublication.objects.update_or_create(
            domain=domain, defaults={"connection": connection}
        )
    try:
        result = domain_dns_publish(domain=domain, merge_spf=args.merge_spf)
    except ProviderUnavailable as exc:
        return _fail(f"{exc.message}; try again later")
    print(f"{domain.name}: zone {result['zone']} at {result['provider']}")
    for record in result["records"]:
        print(f"  {record['action']:<9} {record['type']:<5} {record['name']}: {record['detail']}")
    if "zone_note" in result:
        print(f"  note: {result['zone_note']}")
    print(f"{domain.name}: {result['verification_state']}")
    return 0 if result["verification_state"] == "verified" else 1
