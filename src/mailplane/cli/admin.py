"""Operator commands: accounts, API keys, relay servers, domain checks."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mailplane.core.errors import DomainError


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
    rc.add_argument(
        "--provider", required=True, choices=["missioninbox", "mailgun", "sendgrid", "smtp"]
    )
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


def _fail(message: str) -> int:
    print(f"mailplane: {message}", file=sys.stderr)
    return 2


def _org(slug: str) -> Any:
    from mailplane.core.errors import NotFound
    from mailplane.tenancy.models import Organization

    org = Organization.objects.filter(slug=slug).first()
    if org is None:
        raise NotFound(f"no organization {slug!r}")
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
