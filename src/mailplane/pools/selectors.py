"""Which source address a message leaves from: its pool by the most specific assignment."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from django.db.models import QuerySet

from mailplane.pools.models import IpPool, PoolAddress, PoolAssignment
from mailplane.servers.selectors import ServerLink, server_links


@dataclass(frozen=True, slots=True)
class Source:
    """Where a connection comes from: the address it binds and the name it gives in EHLO."""

    address: str
    helo_name: str


@dataclass(frozen=True, slots=True)
class PoolChoice:
    pool: str
    sources: tuple[Source, ...]  # enabled addresses; empty: the pool has none to send from

    def source_for(self, message_id: int) -> Source | None:
        """One address per message, spread over the pool and stable across retries (a
        receiver greylisting on the address sees the same one again)."""
        if not self.sources:
            return None
        return self.sources[message_id % len(self.sources)]


def _scope_rank(a: PoolAssignment) -> int:
    """Most specific first: key, stream, server, account."""
    if a.server_key_id is not None:
        return 0
    if a.stream_id is not None:
        return 1
    if a.server_id is not None:
        return 2
    return 3


def pool_choices(
    messages: Sequence[tuple[int, int]], *, links: Mapping[int, ServerLink] | None = None
) -> dict[int, PoolChoice]:
    """(message id, organization id) pairs → each message's pool, for those that have one.

    Three queries for a whole batch: the messages' server links (none when the caller has
    them: `links`), their accounts' assignments, and those pools' enabled addresses."""
    if not messages:
        return {}
    if links is None:
        links = server_links([m for m, _ in messages])
    assignments = sorted(
        PoolAssignment.objects.filter(organization_id__in={o for _, o in messages}).select_related(
            "pool"
        ),
        key=_scope_rank,
    )
    if not assignments:
        return {}
    addresses: dict[int, list[Source]] = {}
    for row in PoolAddress.objects.filter(
        pool_id__in={a.pool_id for a in assignments}, enabled=True
    ).order_by("id"):
        addresses.setdefault(row.pool_id, []).append(Source(row.address, row.helo_name))
    choices: dict[int, PoolChoice] = {}
    for message_id, organization_id in messages:
        link = links.get(message_id)
        server, stream, key = link if link is not None else (None, None, None)
        for a in assignments:
            if a.organization_id != organization_id:
                continue
            if (
                (a.server_key_id is None or a.server_key_id == key)
                and (a.stream_id is None or a.stream_id == stream)
                and (a.server_id is None or a.server_id == server)
            ):
                choices[message_id] = PoolChoice(a.pool.name, tuple(addresses.get(a.pool_id, ())))
                break
    return choices


def pool_list() -> QuerySet[IpPool]:
    return IpPool.objects.prefetch_related("addresses", "assignments").order_by("id")


def pool_get(*, name: str) -> IpPool | None:
    return IpPool.objects.filter(name=name).first()


def pools_of(organization_ids: Collection[int]) -> QuerySet[PoolAssignment]:
    return PoolAssignment.objects.filter(organization_id__in=list(organization_ids))
