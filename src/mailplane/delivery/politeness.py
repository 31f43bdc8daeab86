"""Destination politeness: per (MX group, source address) connection and message-rate
limits that tighten by themselves when a receiver says "slow down" and relax later.

Why per MX group and source: a receiver rate-limits the sending *address*, across every
domain it hosts. Gmail answering `421 4.7.28` for one Workspace domain is Google speaking
for all the domains whose MX is *.google.com, so the whole group slows down for that
source address, and only for it (another pool address has its own standing). Groups are
found from the MX host names (`mx_group`): google, microsoft, yahoo, apple, else the
registered domain of the primary MX (KumoMTA's "MX rollup" / provider blocks do the same).

The control law is AIMD, as TCP's congestion window and Postfix's concurrency scheduler:
  * a throttle reply (`throttle_reply`) halves the connection limit and the message rate
    (multiplicative decrease), at most once per hold period, so the five connections that
    all hear the same 421 in the same second count as one signal (TCP: one cut per window);
    and no new connection to the group from that source starts for the hold period;
  * each quiet period without a throttle adds one connection and a tenth of the ceiling
    rate back (additive increase) until the configured ceilings are reached again.
Postfix (SCHEDULER_README, 2.5+) feeds back only connection and handshake failures, by
1/concurrency per delivery, and suspends a destination after
`destination_concurrency_failed_cohort_limit` failed cohorts at concurrency 1; it ignores
4xx replies after the handshake, which is how Gmail and Microsoft actually throttle.
KumoMTA's Traffic Shaping Automation matches reply regexes (e.g. "unusual rate") and sets a
fixed `max_message_rate`/`connection_limit` or suspends the path for a fixed duration, then
reverts at once; AIMD recovers in steps instead, so a receiver that is still touchy throttles
again at half the speed rather than at full speed. Postal has no destination throttling at
all: its maintainers answer "slow down" requests with "queue them in your own application"
(postalserver/postal#495), and a Yahoo `421 4.7.0 [TSS04]` was taken for a hard failure
(#1415, #741).

The message rate is a token bucket (one burst's worth of capacity) whose ceiling is
unlimited by default: before any throttle only the connection limit applies; at the first
throttle the rate observed over the last minute is halved and becomes the limit, and the
limit is lifted again once the recovery reaches that observed rate.

State lives in Redis when one is configured (shared by every worker on every host), else in
this process (embedded mode: one worker). Each connection costs one Lua call to take its
slots (the relay/domain cap of limits.py and the group's, plus its messages' tokens) and
one to give them back (with the throttle report, if any): the same two round trips the
per-domain cap alone cost. Times are the caller's clock (tests inject one); slot leases
are the Redis server's, as in limits.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio
import redis.exceptions
from django.conf import settings

from mailplane.delivery.config import conf
from mailplane.delivery.limits import Destination, LocalSlots, SharedSlots
from mailplane.delivery.mx import MxHost
from mailplane.delivery.results import SendResult, Status

log = logging.getLogger("mailplane.delivery")

# --- groups ----------------------------------------------------------------------------

# MX host suffix -> group: the big receivers whose throttles span every domain they host.
# settings.MAILPLANE["DELIVERY_POLITENESS_GROUPS"] adds to (or overrides) these.
MX_GROUPS: dict[str, str] = {
    "google.com": "google",
    "googlemail.com": "google",
    "outlook.com": "microsoft",  # *.mail.protection.outlook.com, olc.protection.outlook.com
    "hotmail.com": "microsoft",
    "yahoodns.net": "yahoo",  # Yahoo and AOL
    "icloud.com": "apple",
}

# Second-level labels under which a ccTLD registers names (example.co.uk): without the
# public suffix list, the registered domain of mx.example.co.uk is taken as example.co.uk.
_SECOND_LEVEL = {"co", "com", "net", "org", "gov", "ac", "edu", "ne", "or", "go"}
_GROUP_NAME = re.compile(r"[^a-z0-9.\-]")


def _group_table() -> dict[str, str]:
    extra = settings.MAILPLANE.get("DELIVERY_POLITENESS_GROUPS") or {}
    return {**MX_GROUPS, **{str(k).lower().strip("."): str(v) for k, v in extra.items()}}


def host_group(host: str, table: Mapping[str, str] | None = None) -> str:
    """The group of one MX host name: a known provider's, else its registered domain."""
    name = _GROUP_NAME.sub("", host.lower().rstrip("."))[:253] or "-"
    table = _group_table() if table is None else table
    labels = name.split(".")
    for i in range(len(labels) - 1):
        group = table.get(".".join(labels[i:]))
        if group is not None:
            return group
    try:
        ipaddress.ip_address(name)
        return name  # an address literal is its own group
    except ValueError:
        pass
    keep = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL else 2
    return ".".join(labels[-keep:])


def mx_group(hosts: Iterable[MxHost]) -> str | None:
    """The group of a domain: that of its most preferred MX host (lowest preference, then
    name, so that every worker picks the same one); None without hosts."""
    ordered = sorted(hosts, key=lambda h: (h.preference, h.name))
    return host_group(ordered[0].name) if ordered else None


# --- throttle replies ------------------------------------------------------------------

# Replies in which a receiver asks for less, sooner than a bounce class would say so:
# Gmail 421/450 4.7.28 ("unusual rate"), 450 4.2.1 ("receiving mail at a rate"),
# Microsoft 4.7.500-699 (451 4.7.500 "server busy", 4.7.650 "exceeded the rate limit"),
# Yahoo 421 4.7.0 [TSS04]/[TS01]/[TS02]. Greylisting ("try again later") is not one: it
# says nothing about the rate. A 5.7.5xx/6xx is a block, not a throttle (bounce_classes).
_THROTTLE = re.compile(
    r"\b4\.7\.28\b|\b4\.7\.[56]\d\d\b|receiving mail at a rate|unusual rate|\btss?0[124]\b|"
    r"rate.?limit|too many (messages|connections|emails|mails)|throttl|"
    r"exceeded (the )?(rate|sending)|slow down|temporarily rate"
)
_REPLY_SCAN = 2048  # a reply's first characters decide: a 1 MB reply costs no more


def _extra_patterns() -> list[re.Pattern[str]]:
    raw = settings.MAILPLANE.get("DELIVERY_THROTTLE_PATTERNS") or ()
    return [re.compile(str(p), re.IGNORECASE) for p in raw]


# Gmail's 450 4.2.1 "the user you are trying to contact is receiving mail at a rate that
# prevents additional messages": one recipient's rate. It still counts against the group
# (the receiver is counting us), but the connection's other recipients are other users.
_ONE_RECIPIENT = re.compile(r"receiving mail at a rate|\b4\.2\.1\b")


def throttle_stops_connection(result: SendResult) -> bool:
    """Whether, after this reply, the connection's remaining messages should wait rather
    than be offered: a throttle of the sending address, not of one recipient."""
    return throttle_reply(result) and not _ONE_RECIPIENT.search(result.reply[:_REPLY_SCAN])


def throttle_reply(result: SendResult) -> bool:
    """Whether a failed attempt's reply asks us to slow down (delivered: never)."""
    if result.status is Status.DELIVERED or not result.attempted:
        return False
    reply = result.reply[:_REPLY_SCAN].lower()
    if _THROTTLE.search(reply):
        return True
    return any(p.search(reply) for p in _extra_patterns())


# --- limits and state ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """The ceilings and the control law's constants (config.py documents the defaults)."""

    max_connections: int
    max_rate: float  # messages per minute; 0: no ceiling until a throttle
    min_rate: float
    burst_ms: int
    hold_ms: int
    quiet_ms: int
    rate_step: float  # fraction of the ceiling (or of the rate at the throttle) per period

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            max_connections=max(1, int(conf("DELIVERY_POLITENESS_MAX_CONNECTIONS"))),
            max_rate=max(0.0, float(conf("DELIVERY_POLITENESS_MAX_RATE"))),
            min_rate=max(1.0, float(conf("DELIVERY_POLITENESS_MIN_RATE"))),
            burst_ms=max(1, int(float(conf("DELIVERY_POLITENESS_BURST_SECONDS")) * 1000)),
            hold_ms=max(0, int(float(conf("DELIVERY_THROTTLE_HOLD_SECONDS")) * 1000)),
            quiet_ms=max(1, int(float(conf("DELIVERY_POLITENESS_QUIET_SECONDS")) * 1000)),
            rate_step=max(0.01, float(conf("DELIVERY_POLITENESS_RATE_STEP"))),
        )

    def args(self) -> list[float | int]:
        return [
            self.max_connections,
            self.max_rate,
            self.min_rate,
            self.burst_ms,
            self.hold_ms,
            self.quiet_ms,
            self.rate_step,
        ]


@dataclass(frozen=True, slots=True)
class PoliteKey:
    group: str
    source: str  # the source address ("default": the host's own)


@dataclass(slots=True)
class Grant:
    """What a connection may do: carry `granted` of its messages now (0: none, hold them
    all); the rest wait until `until` (epoch ms). The caller sets `throttled` when the
    receiver said slow down; `until` is then the end of the new hold."""

    granted: int
    until: int = 0
    throttled: bool = False
    limit: int = 0  # the group's connection limit when this was granted (for logs, tests)


# The state machine, once in Python (embedded mode) and once in Lua (Redis): a hash of
#   conn   connection limit below the ceiling (absent: at the ceiling)
#   rate   messages/min below the ceiling (absent: at the ceiling, which may be none)
#   until  no new connection before (ms)
#   calm   start of the current quiet period (absent: fully relaxed)
#   cut    last halving (ms)
#   tokens, ts   the bucket and when it was last filled
#   peak   the rate observed at the throttle, the target when there is no ceiling
#   win, cur, prev   messages granted in this and the last minute (the observed rate)
_FIELDS = ("conn", "rate", "until", "calm", "cut", "tokens", "ts", "peak", "win", "cur", "prev")


def _relax(s: dict[str, float], lim: Limits, now: float) -> None:
    calm = s.get("calm")
    if calm is None or now - calm < lim.quiet_ms:
        return
    k = math.floor((now - calm) / lim.quiet_ms)
    if "conn" in s:
        s["conn"] += k
        if s["conn"] >= lim.max_connections:
            del s["conn"]
    if "rate" in s:
        target = lim.max_rate if lim.max_rate > 0 else s.get("peak", 0.0)
        s["rate"] += k * max(1.0, target * lim.rate_step)
        if s["rate"] >= target:
            del s["rate"]
    s["calm"] = calm + k * lim.quiet_ms
    if "conn" not in s and "rate" not in s:
        del s["calm"]


def _rate(s: dict[str, float], lim: Limits) -> float | None:
    if "rate" in s:
        return min(s["rate"], lim.max_rate) if lim.max_rate > 0 else s["rate"]
    return lim.max_rate if lim.max_rate > 0 else None


def _acquire(
    s: dict[str, float], lim: Limits, now: float, want: int, open_now: int
) -> tuple[int, int, int]:
    """(granted, until, limit); granted -1: every slot is taken (wait and ask again)."""
    _relax(s, lim, now)
    limit = int(min(s.get("conn", lim.max_connections), lim.max_connections))
    until = s.get("until", 0.0)
    if now < until:
        return 0, int(until), limit
    if open_now >= limit:
        return -1, 0, limit
    granted = want
    rate = _rate(s, lim)
    if rate is not None:
        cap = max(1.0, rate * lim.burst_ms / 60000)
        ts = s.get("ts")
        tokens = cap if ts is None else s.get("tokens", 0.0)
        if ts is not None and now > ts:
            tokens += (now - ts) * rate / 60000
        tokens = min(tokens, cap)
        s["ts"] = now
        granted = max(0, min(want, math.floor(tokens)))
        s["tokens"] = tokens - granted
        if granted < want:  # the rest waits until the bucket has room for it (or is full)
            needed = min(want - granted, math.floor(cap))
            until = int(now + math.ceil((needed - s["tokens"]) * 60000 / rate))
            if granted < 1:
                return 0, until, limit
    if now - s.get("win", 0.0) >= 60000:
        s["prev"] = s.get("cur", 0.0) if now - s.get("win", 0.0) < 120000 else 0.0
        s["cur"] = 0.0
        s["win"] = now
    s["cur"] = s.get("cur", 0.0) + granted
    return granted, int(until) if granted < want else 0, limit


def _throttle(s: dict[str, float], lim: Limits, now: float) -> int:
    """A throttle reply: halve (once per hold period), hold; return the hold's end."""
    _relax(s, lim, now)
    if "cut" not in s or now - s["cut"] >= lim.hold_ms:
        limit = min(s.get("conn", lim.max_connections), lim.max_connections)
        s["conn"] = max(1, math.floor(limit / 2))
        rate = _rate(s, lim)
        if rate is None:  # no ceiling: start from what was sent in the last minute
            rate = max(s.get("cur", 0.0), s.get("prev", 0.0), 2 * lim.min_rate)
            s["peak"] = rate
        s["rate"] = max(lim.min_rate, rate / 2)
        cap = max(1.0, s["rate"] * lim.burst_ms / 60000)
        s["tokens"] = min(s.get("tokens", cap), cap)
        s.setdefault("ts", now)
        s["cut"] = now
    s["until"] = max(s.get("until", 0.0), now + lim.hold_ms)
    s["calm"] = now
    return int(s["until"])


# The same, in Lua. KEYS: domain slots, group slots, group state. ARGV: now, lease, token,
# domain cap, want, the Limits' args (6..12), state ttl.
_LUA_COMMON = """
local F = {'conn','rate','until','calm','cut','tokens','ts','peak','win','cur','prev'}
local function load(key)
  local v = redis.call('HMGET', key, unpack(F))
  local s = {}
  for i, name in ipairs(F) do if v[i] then s[name] = tonumber(v[i]) end end
  return s
end
local function save(key, s, ttl)
  redis.call('DEL', key)
  local flat = {}
  for _, name in ipairs(F) do
    if s[name] ~= nil then table.insert(flat, name); table.insert(flat, tostring(s[name])) end
  end
  if #flat > 0 then redis.call('HSET', key, unpack(flat)); redis.call('PEXPIRE', key, ttl) end
end
local maxc, maxr, minr = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local burst, hold, quiet, rstep = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]),
  tonumber(ARGV[12])
local function relax(s, now)
  if s.calm == nil or now - s.calm < quiet then return end
  local k = math.floor((now - s.calm) / quiet)
  if s.conn ~= nil then
    s.conn = s.conn + k
    if s.conn >= maxc then s.conn = nil end
  end
  if s.rate ~= nil then
    local target = maxr
    if maxr <= 0 then target = s.peak or 0 end
    s.rate = s.rate + k * math.max(1, target * rstep)
    if s.rate >= target then s.rate = nil end
  end
  s.calm = s.calm + k * quiet
  if s.conn == nil and s.rate == nil then s.calm = nil end
end
local function rate_of(s)
  if s.rate ~= nil then
    if maxr > 0 then return math.min(s.rate, maxr) end
    return s.rate
  end
  if maxr > 0 then return maxr end
  return nil
end
"""

_LUA_ACQUIRE = (
    _LUA_COMMON
    + """
local t = redis.call('TIME')
local rnow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now, lease, token = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local dcap, want, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[13])
local s = load(KEYS[3])
relax(s, now)
local limit = math.min(s.conn or maxc, maxc)
local hold_until = s['until'] or 0
if now < hold_until then save(KEYS[3], s, ttl); return {0, hold_until, limit} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', rnow)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', rnow)
if redis.call('ZCARD', KEYS[1]) >= dcap or redis.call('ZCARD', KEYS[2]) >= limit then
  save(KEYS[3], s, ttl)
  return {-1, 0, limit}
end
local granted = want
local rest_until = 0
local rate = rate_of(s)
if rate ~= nil then
  local cap = math.max(1, rate * burst / 60000)
  local tokens = s.tokens or 0
  if s.ts == nil then tokens = cap elseif now > s.ts then
    tokens = tokens + (now - s.ts) * rate / 60000
  end
  tokens = math.min(tokens, cap)
  s.ts = now
  granted = math.max(0, math.min(want, math.floor(tokens)))
  s.tokens = tokens - granted
  if granted < want then
    local needed = math.min(want - granted, math.floor(cap))
    rest_until = math.floor(now + math.ceil((needed - s.tokens) * 60000 / rate))
    if granted < 1 then
      save(KEYS[3], s, ttl)
      return {0, rest_until, limit}
    end
  end
end
local win = s.win or 0
if now - win >= 60000 then
  if now - win < 120000 then s.prev = s.cur or 0 else s.prev = 0 end
  s.cur = 0
  s.win = now
end
s.cur = (s.cur or 0) + granted
save(KEYS[3], s, ttl)
redis.call('ZADD', KEYS[1], rnow + lease, token)
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('ZADD', KEYS[2], rnow + lease, token .. 'g')
redis.call('PEXPIRE', KEYS[2], lease)
return {granted, rest_until, limit}
"""
)

# KEYS as above. ARGV: now, -, token, -, throttled (0/1), Limits' args, ttl.
_LUA_RELEASE = (
    _LUA_COMMON
    + """
redis.call('ZREM', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[3] .. 'g')
if ARGV[5] ~= '1' then return 0 end
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[13])
local s = load(KEYS[3])
relax(s, now)
if s.cut == nil or now - s.cut >= hold then
  local limit = math.min(s.conn or maxc, maxc)
  s.conn = math.max(1, math.floor(limit / 2))
  local rate = rate_of(s)
  if rate == nil then
    rate = math.max(s.cur or 0, s.prev or 0, 2 * minr)
    s.peak = rate
  end
  s.rate = math.max(minr, rate / 2)
  local cap = math.max(1, s.rate * burst / 60000)
  s.tokens = math.min(s.tokens or cap, cap)
  if s.ts == nil then s.ts = now end
  s.cut = now
end
s['until'] = math.max(s['until'] or 0, now + hold)
s.calm = now
save(KEYS[3], s, ttl)
return s['until']
"""
)


def state_key(key: PoliteKey) -> str:
    return f"mailplane:delivery:polite:{key.group}:{key.source}"


def _state_ttl_ms(lim: Limits) -> int:
    """Forget a group's state once it would have relaxed fully anyway (and a day at least)."""
    periods = lim.max_connections + math.ceil(1 / lim.rate_step) + 1
    return max(86_400_000, lim.hold_ms + periods * lim.quiet_ms)


# Embedded mode: the process's own state, shared by the runs of this process (run_once
# passes, and the API's throttle_state in `mailplane serve`'s single process).
_local_state: dict[PoliteKey, dict[str, float]] = {}
_local_open: dict[PoliteKey, int] = {}


_redis_used: set[str] = set()  # the Redis servers this process kept state in


def politeness_reset() -> None:
    """Forget every group's state: this process's, and what it kept in Redis (tests: each
    starts with no receiver throttling it)."""
    _local_state.clear()
    _local_open.clear()
    for url in list(_redis_used):
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            keys = list(client.scan_iter("mailplane:delivery:polite:*", count=1000))
            if keys:
                client.delete(*keys)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            pass
        finally:
            client.close()
    _redis_used.clear()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _at(now: int | None) -> int:
    """The caller's fixed clock (tests), else the time of this very call: a poll for a
    busy slot or a release after a long connection sees the time it happens at."""
    return _now_ms() if now is None else now


class _Wakeups:
    """Who waits for a group's slot in this process: woken one at a time when one of this
    process's connections to the group ends, else after a poll interval (with Redis 0.02 s
    doubling to 0.5 s: another worker's release is only seen by asking again), so that a
    chunk waiting for a busy group takes a freed slot at once instead of after its backoff,
    and a hundred waiting chunks do not each wake every 0.02-0.5 s for nothing."""

    def __init__(self, *, first: float = 0.02, most: float = 0.5) -> None:
        self._conditions: dict[PoliteKey, asyncio.Condition] = {}
        self.first, self.most = first, most

    @asynccontextmanager
    async def waiting(self, key: PoliteKey) -> AsyncIterator[Callable[[], Awaitable[None]]]:
        condition = self._conditions.get(key)
        if condition is None:
            condition = self._conditions[key] = asyncio.Condition()
        interval = self.first

        async def wait() -> None:
            nonlocal interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(condition.wait(), interval)
            interval = min(interval * 2, self.most)

        async with condition:
            yield wait

    async def released(self, key: PoliteKey) -> None:
        condition = self._conditions.get(key)
        if condition is not None:
            async with condition:
                condition.notify()


class LocalPoliteSlots(LocalSlots):
    """Per-destination semaphores (limits.py) plus this process's politeness state."""

    def __init__(self) -> None:
        super().__init__()
        self.limits = Limits.from_settings()
        # This process's releases wake a waiter; the timeout only covers another run in
        # the same process (two workers in one test): short polls cost the loop timers.
        self.wakeups = _Wakeups(first=1.0, most=1.0)

    @asynccontextmanager
    async def polite(
        self, destination: Destination, cap: int, key: PoliteKey, *, want: int, now: int | None
    ) -> AsyncIterator[Grant]:
        async with self.slot(destination, cap):
            state = _local_state.setdefault(key, {})
            async with self.wakeups.waiting(key) as wait:
                while True:
                    granted, until, limit = _acquire(
                        state, self.limits, _at(now), want, _local_open.get(key, 0)
                    )
                    if granted >= 0:
                        break
                    await wait()  # the group's connections are all in use
            grant = Grant(granted, until, limit=limit)
            if granted == 0:
                yield grant
                return
            _local_open[key] = _local_open.get(key, 0) + 1
            try:
                yield grant
            finally:
                _local_open[key] -= 1
                if grant.throttled:
                    grant.until = _throttle(state, self.limits, _at(now))
                await self.wakeups.released(key)


class SharedPoliteSlots(SharedSlots):
    """limits.SharedSlots plus the group's slots, tokens and state in one Lua call."""

    def __init__(self, url: str, *, owner: str, lease_seconds: float) -> None:
        super().__init__(url, owner=owner, lease_seconds=lease_seconds)
        self.limits = Limits.from_settings()
        self._polite_acquire = self._client.register_script(_LUA_ACQUIRE)
        self._polite_release = self._client.register_script(_LUA_RELEASE)
        self._local = LocalPoliteSlots()
        self.wakeups = _Wakeups()
        self._ttl = _state_ttl_ms(self.limits)
        _redis_used.add(url)

    def _args(self, now: int, token: str, cap: int, want: int) -> list[Any]:
        return [now, self._lease_ms, token, cap, want, *self.limits.args(), self._ttl]

    @asynccontextmanager
    async def polite(
        self, destination: Destination, cap: int, key: PoliteKey, *, want: int, now: int | None
    ) -> AsyncIterator[Grant]:
        dkey, skey = self.key(destination), state_key(key)
        keys = [dkey, f"{skey}:conns", skey]
        token = f"{self._owner}:{next(self._tokens)}"
        try:
            async with self.wakeups.waiting(key) as wait:
                while True:
                    granted, until, limit = (
                        int(x)
                        for x in await self._polite_acquire(
                            keys=keys, args=self._args(_at(now), token, cap, want)
                        )
                    )
                    if granted >= 0:
                        break
                    # Every slot is taken: until one of ours is given back, or (another
                    # worker's) the next poll, backing off.
                    await wait()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("politeness: Redis unavailable (%s); using this worker's state", exc)
            async with self._local.polite(destination, cap, key, want=want, now=now) as grant:
                yield grant
            return
        grant = Grant(granted, until, limit=limit)
        if granted == 0:
            yield grant
            return
        self._held[token] = dkey
        self._held[token + "g"] = keys[1]
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_forever())
        try:
            yield grant
        finally:
            del self._held[token], self._held[token + "g"]
            args = self._args(_at(now), token, cap, 0)
            args[4] = 1 if grant.throttled else 0
            try:
                until = await self._polite_release(keys=keys, args=args)
                if grant.throttled:
                    grant.until = int(until)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("politeness: release failed (%s); the lease will end", exc)
                if grant.throttled:
                    grant.until = _at(now) + self.limits.hold_ms
            await self.wakeups.released(key)


PoliteSlots = LocalPoliteSlots | SharedPoliteSlots


def polite_slots(*, owner: str) -> PoliteSlots:
    """Shared when Redis is configured, else this process's (limits.destination_slots)."""
    url = str(settings.MAILPLANE.get("REDIS_URL") or "")
    if url:
        return SharedPoliteSlots(
            url, owner=owner, lease_seconds=float(conf("DELIVERY_SLOT_LEASE_SECONDS"))
        )
    return LocalPoliteSlots()


def politeness_enabled() -> bool:
    return bool(conf("DELIVERY_POLITENESS"))


# --- what the queue view reads ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThrottleState:
    """A group's standing for one source address, as the queue view shows it."""

    until: datetime | None  # no new connection before this (None: not held)
    connections: int  # the current connection limit
    rate: float | None  # messages/min (None: no limit)
    limits: Limits = field(repr=False)


def _read(key: PoliteKey) -> dict[str, float]:
    url = str(settings.MAILPLANE.get("REDIS_URL") or "")
    if not url:
        return dict(_local_state.get(key, {}))
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        raw = client.hmget(state_key(key), _FIELDS)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return dict(_local_state.get(key, {}))
    finally:
        client.close()
    return {name: float(v) for name, v in zip(_FIELDS, raw, strict=True) if v is not None}


def throttle_details(group: str, source: str, *, now: datetime | None = None) -> ThrottleState:
    lim = Limits.from_settings()
    state = _read(PoliteKey(group, source))
    at = (now.timestamp() * 1000) if now is not None else _now_ms()
    _relax(state, lim, at)  # what the next connection would see
    until = state.get("until", 0.0)
    return ThrottleState(
        until=datetime.fromtimestamp(until / 1000, UTC) if until > at else None,
        connections=int(min(state.get("conn", lim.max_connections), lim.max_connections)),
        rate=_rate(state, lim),
        limits=lim,
    )


def throttle_state(group: str, source: str, *, now: datetime | None = None) -> datetime | None:
    """Until when no new connection goes to `group` from `source` because the receiver
    asked us to slow down (None: not held). The reason a queue view shows for the
    messages held with "destination throttle" replies (`throttle_hold_reply`)."""
    return throttle_details(group, source, now=now).until


def throttle_hold_reply(key: PoliteKey, until: datetime) -> str:
    """The reply recorded on a message held (not attempted) by politeness."""
    return (
        f"451 4.7.0 destination throttle: {key.group} from {key.source} "
        f"until {until:%Y-%m-%dT%H:%M:%SZ}"
    )
