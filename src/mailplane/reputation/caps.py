"""Hourly and daily volume caps per email server and per server key, in recipients.

Seed 002 asks for "volume caps per hour and per day (configurable)"; Postal has an hourly
one per server. Each cap owner (a server, a key) counts its recipients in CapUsage rows,
one per clock hour (UTC), the day being the sum of its hours (core/windows.py, as the
warm-up's caps). A recipient is counted once, when it enters the window:

- a key in `refuse` mode: at the send API (`caps_reserve`), in the enqueue's transaction
  and under the server's and key's row locks, so concurrent requests cannot overshoot;
  a message that does not fit is refused (429) with the time it would be accepted;
- a key in `hold` mode, and mail sent without a key: at delivery (`caps_admit`), under the
  same locks; an over-cap recipient waits unattempted (processor's `Outcome.retry_at`)
  until the window that is full opens again. Every held recipient of an owner gets the
  same retry time, and the claim orders by (next attempt, id): the backlog drains in the
  order it was queued, before mail that arrives later.

A paused server or key (pause.py) has its queued mail held here too, rechecked every
PAUSE_RECHECK, so that mail queued before the pause does not leave meanwhile.

A recipient an operator released (queue/transitions.py `queue_release`, wait reason
`released`) passes both holds once: Postal's release of a held message sends it whatever
held it. It is still counted, so the mail after it waits for the room it took.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeGuard

from django.db.models import Q

from mailplane.cells.routing import data_atomic
from mailplane.core.errors import DomainError, LimitReached
from mailplane.core.windows import Allowance, hour_of, window_add, window_counts
from mailplane.queue.models import QueuedRecipient, WaitReason
from mailplane.reputation.errors import OverCap
from mailplane.reputation.models import CapUsage
from mailplane.servers.models import CapMode, EmailServer, Reputation, ServerKey
from mailplane.servers.selectors import ServerLink, server_links

PAUSE_RECHECK = timedelta(minutes=15)
_CAPPED = Q(hourly_cap__isnull=False) | Q(daily_cap__isnull=False)


def scope_of(owner: Reputation) -> str:
    return f"{'key' if isinstance(owner, ServerKey) else 'server'}:{owner.pk}"


def _capped(owner: Reputation | None) -> TypeGuard[Reputation]:
    return owner is not None and (owner.hourly_cap is not None or owner.daily_cap is not None)


def _allowances(owners: Iterable[Reputation], *, now: datetime) -> dict[str, Allowance]:
    """Each capped owner's allowance now, by scope (two queries for any number)."""
    capped = {scope_of(o): o for o in owners if _capped(o)}
    if not capped:
        return {}
    this_hour, today = window_counts(
        CapUsage.objects.all(), owner="scope", count="recipients", owners=capped, now=now
    )
    return {
        scope: Allowance.of(
            hourly=o.hourly_cap,
            daily=o.daily_cap,
            this_hour=this_hour.get(scope, 0),
            today=today.get(scope, 0),
        )
        for scope, o in capped.items()
    }


def _record(allowances: dict[str, Allowance], *, now: datetime) -> None:
    for scope, allowance in allowances.items():
        if allowance.granted:
            window_add(
                CapUsage, hour=hour_of(now), lookup={"scope": scope}, recipients=allowance.granted
            )


def _locked(server: EmailServer, key: ServerKey | None) -> tuple[EmailServer, ServerKey | None]:
    """The server's and the key's rows under their locks (server first: one order for
    every taker), with the caps as they are now."""
    locked_server = EmailServer.objects.select_for_update().get(pk=server.pk)
    locked_key = ServerKey.objects.select_for_update().get(pk=key.pk) if key is not None else None
    return locked_server, locked_key


def _name(owner: Reputation) -> str:
    return f"server key {owner.pk}" if isinstance(owner, ServerKey) else f"server {owner.pk}"


def _never_fits(owners: Sequence[Reputation], n: int) -> LimitReached | None:
    """A message over a cap itself: no wait helps, so not a 429."""
    for owner in owners:
        for cap, window in ((owner.hourly_cap, "hour"), (owner.daily_cap, "day")):
            if cap is not None and n > cap:
                return LimitReached(
                    f"the message has {n} recipients, over the cap of {cap} per {window} of "
                    f"{_name(owner)}",
                    details={"to": [f"at most {cap} recipients per {window}"]},
                )
    return None


def caps_reserve(
    *, server: EmailServer, server_key: ServerKey | None, counts: Sequence[int], now: datetime
) -> list[DomainError | None]:
    """Refuse mode: reserve each message's recipients (`counts`, in order) within the
    server's and the key's caps; None for a message admitted, else why (OverCap: until
    when; LimitReached: more recipients than a cap takes at all). A batch is admitted as
    a prefix: after the first OverCap the rest wait too, so that what is accepted keeps
    the batch's order. Call inside the enqueue's transaction: the count and the messages
    commit (or roll back) together."""
    if server_key is None or server_key.cap_mode != CapMode.REFUSE:
        return [None] * len(counts)
    if not (_capped(server) or _capped(server_key)):
        return [None] * len(counts)
    with data_atomic():
        locked_server, locked_key = _locked(server, server_key)
        owners: list[Reputation] = [o for o in (locked_server, locked_key) if _capped(o)]
        allowances = _allowances(owners, now=now)
        results: list[DomainError | None] = []
        refused: OverCap | None = None
        for n in counts:
            never = _never_fits(owners, n)
            if never is not None:
                results.append(never)
                continue
            if refused is None:
                full = [(o, allowances[scope_of(o)]) for o in owners]
                over = [(o, a) for o, a in full if not a.fits(n)]
                if over:
                    retry = max(a.reopens_at(now, n) for _, a in over)
                    names = ", ".join(_name(o) for o, _ in over)
                    refused = OverCap.until(
                        f"over the volume cap of {names}", retry_at=retry, now=now
                    )
                else:
                    for _, allowance in full:
                        allowance.granted += n
            results.append(refused)
        _record(allowances, now=now)
    return results


@dataclass
class CapAdmission:
    """What `caps_admit` decided: each held recipient's reply and retry time, and the
    scopes each admitted one was counted against (to give back if it is not sent)."""

    held: dict[int, tuple[str, datetime]] = field(default_factory=dict)
    charged: dict[int, list[str]] = field(default_factory=dict)
    paused: set[int] = field(default_factory=set)  # those of `held` held by a pause


def caps_admit(
    rows: Sequence[QueuedRecipient],
    *,
    now: datetime,
    links: Mapping[int, ServerLink] | None = None,
) -> CapAdmission:
    """Hold mode, at delivery: admit `rows` (in claim order) within their servers' and
    keys' caps and reserve what is admitted; hold the rest, and every recipient of a
    paused server or key. Three queries when nothing is capped or paused; the owners'
    rows are locked (servers, then keys, by id) only when something is."""
    admission = CapAdmission()
    if links is None:  # (delivery passes the batch's, loaded once for pools and caps)
        links = server_links({r.message_id for r in rows})
    wanted = {r.message_id for r in rows}
    keys_of = {m: link.server_key_id for m, link in links.items() if m in wanted}
    servers_of = {m: link.server_id for m, link in links.items() if m in wanted}
    if not keys_of:
        return admission
    watched = _CAPPED | Q(paused_at__isnull=False)
    server_ids = set(servers_of.values())
    key_ids = {k for k in keys_of.values() if k is not None}
    if not (
        EmailServer.objects.filter(watched, pk__in=server_ids).exists()
        or ServerKey.objects.filter(watched, pk__in=key_ids).exists()
    ):
        return admission
    with data_atomic():
        locked = EmailServer.objects.select_for_update().filter(pk__in=server_ids)
        servers = {s.pk: s for s in locked.order_by("id")}
        locked_keys = ServerKey.objects.select_for_update().filter(pk__in=key_ids)
        keys = {k.pk: k for k in locked_keys.order_by("id")}
        allowances = _allowances([*servers.values(), *keys.values()], now=now)
        for row in rows:
            if row.message_id not in keys_of:
                continue  # not sent through a server (SMTP submission): no caps here
            server = servers[servers_of[row.message_id]]
            key_id = keys_of[row.message_id]
            key = keys.get(key_id) if key_id is not None else None
            released = row.wait_reason == WaitReason.RELEASED
            paused = next((o for o in (key, server) if o is not None and o.paused_at), None)
            if paused is not None and not released:
                reply = f"451 4.7.1 {_name(paused)} is paused: {paused.paused_reason}"
                admission.held[row.pk] = (reply, now + PAUSE_RECHECK)
                admission.paused.add(row.pk)
                continue
            if key is not None and key.cap_mode == CapMode.REFUSE:
                continue  # counted when the API accepted it
            owners: list[Reputation] = [o for o in (server, key) if _capped(o)]
            over = [o for o in owners if not allowances[scope_of(o)].fits()]
            if over and not released:
                retry = max(allowances[scope_of(o)].reopens_at(now) for o in over)
                names = ", ".join(_name(o) for o in over)
                reply = f"451 4.7.0 volume cap: {names} at its cap until {retry:%Y-%m-%d %H:%M} UTC"
                admission.held[row.pk] = (reply, retry)
                continue
            for owner in owners:
                allowances[scope_of(owner)].granted += 1
            admission.charged[row.pk] = [scope_of(o) for o in owners]
        _record(allowances, now=now)
    return admission


def caps_release(charged: Iterable[list[str]], *, now: datetime) -> None:
    """Give back what admitted recipients were counted that are not sent after all (a
    warm-up cap held them): they are counted again when they are admitted again."""
    back: dict[str, int] = {}
    for scopes in charged:
        for scope in scopes:
            back[scope] = back.get(scope, 0) + 1
    for scope, n in back.items():
        window_add(CapUsage, hour=hour_of(now), lookup={"scope": scope}, recipients=-n)
