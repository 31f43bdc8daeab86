"""CONDSTORE and QRESYNC (RFC 7162 §3.1, §3.2) in pymap's parsing and response layer.

pymap 0.36.7 parses RFC 4466 FETCH/STORE/SELECT modifiers but knows no mod-sequences. The
storage side is imap/modseq.py (per-message values in a per-folder log) and the messages
the backend builds carry `modseq`; the commands are in imap/server.py. Here, installed by
`condstore_install()` like the corrections in imap/protocol.py:
- the FETCH attribute MODSEQ (§3.1.4.1), answered "MODSEQ (<n>)" from metadata only;
- the SEARCH key MODSEQ [<entry-name> <entry-type>] <n> (§3.1.5): messages whose
  mod-sequence is at least n. Per-flag entries are accepted and mean the message's value
  (one mod-sequence per message, which §3.1.5 allows);
- the STATUS item HIGHESTMODSEQ (§3.1.2.1);
- unsolicited FETCH responses for flag changes carry MODSEQ once the connection has
  enabled CONDSTORE (§3.1.4.1, `condstore_enabled`, a per-connection context variable:
  pymap builds those responses in `SelectedMailbox._compare`, which knows no connection).
- QRESYNC: once enabled, expunges are announced as VANISHED <uids> (§3.2.10) instead
  of EXPUNGE; `QresyncParams` parses SELECT's QRESYNC parameter (§3.2.5).
A value over 2^63 - 1 (RFC 7162 §7 mod-sequence-value) is a syntax error: BAD.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pymap.fetch import DynamicFetchValue, MessageAttributes
from pymap.interfaces.message import LoadedMessageInterface, MessageInterface
from pymap.parsing import Params
from pymap.parsing.exceptions import NotParseable
from pymap.parsing.primitives import List, Number
from pymap.parsing.response import ResponseCode, UntaggedResponse
from pymap.parsing.response.specials import ExpungeResponse, FetchResponse
from pymap.parsing.specials import (
    FetchAttribute,
    FetchValue,
    SearchKey,
    SequenceSet,
    StatusAttribute,
)
from pymap.parsing.specials.fetchattr import FetchRequirement
from pymap.search import SearchCriteria, SearchParams
from pymap.selected import SelectedMailbox

from mailplane.imap.modseq import MAX_MODSEQ

__all__ = [
    "MODSEQ_ATTR",
    "QresyncParams",
    "condstore_enabled",
    "condstore_install",
    "highest_modseq_response",
    "modseq_of",
    "modseq_value",
    "qresync_enabled",
    "search_uses_modseq",
    "vanished_response",
]

# Set in a connection's task once CONDSTORE is enabled (RFC 7162 §3.1: ENABLE CONDSTORE,
# SELECT (CONDSTORE), or the first FETCH MODSEQ / CHANGEDSINCE / SEARCH MODSEQ /
# STORE UNCHANGEDSINCE).
condstore_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "condstore_enabled", default=False
)

# Set once QRESYNC is enabled (RFC 7162 §3.2.3: ENABLE QRESYNC only); expunges are then
# announced as VANISHED (§3.2.10), never EXPUNGE.
qresync_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "qresync_enabled", default=False
)

MODSEQ_ATTR = FetchAttribute(b"MODSEQ")
_MODSEQ_KEY = re.compile(
    rb' ?(NOT )?MODSEQ(?: "(?:[^"\\]|\\.)*" (?:PRIV|SHARED|ALL))? ([0-9]+)', re.IGNORECASE
)


def modseq_value(raw: Any) -> int:
    """A mod-sequence value from a parsed argument; ValueError outside 0..2^63-1."""
    value = int(raw)
    if not 0 <= value <= MAX_MODSEQ:
        raise ValueError(raw)
    return value


def modseq_of(message: Any) -> int:
    """The message's mod-sequence (1 for one built without, e.g. an expunged copy)."""
    return int(getattr(message, "modseq", 1))


class _ModSeqFetchValue(DynamicFetchValue):
    def get_value(self) -> Any:
        return List([Number(modseq_of(self.message))])


class ModSeqSearchCriteria(SearchCriteria):
    """SEARCH MODSEQ n: the message's mod-sequence is n or higher (RFC 7162 §3.1.5)."""

    def __init__(self, value: int, params: SearchParams) -> None:
        super().__init__(params)
        self.value = value

    def matches(
        self, msg_seq: int, msg: MessageInterface, loaded_msg: LoadedMessageInterface
    ) -> bool:
        return modseq_of(msg) >= self.value


def search_uses_modseq(keys: Iterable[SearchKey]) -> bool:
    """Whether a MODSEQ key appears anywhere in the criteria (nested ones included)."""
    pending = list(keys)
    while pending:
        key = pending.pop()
        if key.value == b"MODSEQ":
            return True
        if key.value == b"KEYSET":
            pending.extend(key.filter_key_set)
        elif key.value == b"OR":
            pending.extend(key.filter_key_or)
    return False


_pymap_fetch_parse = FetchAttribute.parse.__func__  # type: ignore[attr-defined]
_pymap_fetch_requirement = FetchAttribute.requirement.fget  # type: ignore[attr-defined]
_pymap_search_parse = SearchKey.parse.__func__  # type: ignore[attr-defined]
_pymap_search_requirement = SearchKey.requirement.fget  # type: ignore[attr-defined]
_pymap_criteria_of: Any = None
_pymap_compare = SelectedMailbox._compare


def _fetch_parse(cls: type[FetchAttribute], buf: memoryview, params: Params) -> Any:
    match = FetchAttribute._attrname_pattern.match(buf)
    if match is not None and match.group(1).upper() == b"MODSEQ":
        return cls(b"MODSEQ"), buf[match.end(0) :]
    return _pymap_fetch_parse(cls, buf, params)


def _fetch_requirement(self: FetchAttribute) -> FetchRequirement:
    if self.value == b"MODSEQ":
        return FetchRequirement.METADATA
    result: FetchRequirement = _pymap_fetch_requirement(self)
    return result


def _search_parse(cls: type[SearchKey], buf: memoryview, params: Params) -> Any:
    match = _MODSEQ_KEY.match(buf)
    if match is not None:
        after = buf[match.end(0) :]
        if after[:1] not in (b"", b" ", b")", b"\r", b"\n"):
            raise NotParseable(buf)
        try:
            value = modseq_value(match.group(2))
        except ValueError:
            raise NotParseable(buf) from None
        return cls(b"MODSEQ", value, match.group(1) is not None), after
    return _pymap_search_parse(cls, buf, params)


def _search_requirement(self: SearchKey) -> FetchRequirement:
    if self.value == b"MODSEQ":
        return FetchRequirement.METADATA
    result: FetchRequirement = _pymap_search_requirement(self)
    return result


def criteria_of(cls: type[SearchCriteria], key: SearchKey, params: SearchParams) -> Any:
    """SearchCriteria.of with MODSEQ (wraps whatever `of` was installed before)."""
    if key.value == b"MODSEQ" and not key.inverse and key.value not in params.disabled:
        assert isinstance(key.filter, int)
        return ModSeqSearchCriteria(key.filter, params)
    return _pymap_criteria_of(cls, key, params)


def _compare(self: SelectedMailbox, before: Any, after: Any, with_uid: bool) -> Any:
    """pymap's untagged updates; flag changes carry MODSEQ once CONDSTORE is enabled."""
    responses = _pymap_compare(self, before, after, with_uid)
    if not condstore_enabled.get():
        yield from responses
        return
    if qresync_enabled.get():
        responses = _vanished(responses, before)
    uid_of: dict[int, int] | None = None
    cache = self._messages._cache
    for response in responses:
        if isinstance(response, FetchResponse) and MODSEQ_ATTR not in response.data:
            if uid_of is None:
                uid_of = {seq: uid for uid, seq in after.seqs_cache.items()}
            uid = uid_of.get(response.seq)
            message = cache.get(uid) if uid is not None else None
            if message is not None:
                value = FetchValue.of(MODSEQ_ATTR, List([Number(modseq_of(message))]))
                response = FetchResponse(response.seq, [*response.data.values(), value])
        yield response


@dataclass(frozen=True, slots=True)
class QresyncParams:
    """SELECT's (QRESYNC (uidvalidity modseq [known-uids [seq-match-data]])), RFC 7162 §3.2.5."""

    uid_validity: int
    modseq: int
    known_uids: frozenset[int] | None

    @classmethod
    def parse(cls, arg: Any) -> QresyncParams:
        """From pymap's parsed option argument; ValueError when it is not that shape."""
        items = list(arg.value) if arg is not None else []
        if len(items) == 1 and isinstance(items[0], List):
            items = list(items[0].value)
        if not 2 <= len(items) <= 4:
            raise ValueError(items)
        words: list[bytes] = []
        for item in items[:3]:
            word = getattr(item, "value", None)
            if not isinstance(word, bytes):
                raise ValueError(items)
            words.append(word)
        uid_validity = int(words[0])
        if not 0 < uid_validity < 2**32:
            raise ValueError(uid_validity)
        modseq = modseq_value(words[1])
        if modseq == 0:
            raise ValueError(modseq)  # §7: mod-sequence-value here is nz
        known: frozenset[int] | None = None
        if len(items) >= 3:
            try:
                known_set, rest = SequenceSet.parse(memoryview(words[2] + b" "), Params(uid=True))
            except NotParseable:
                raise ValueError(words[2]) from None
            if known_set.is_all or bytes(rest).strip():
                raise ValueError(words[2])
            highest = max(_bounds(known_set))
            if highest >= 2**32:
                raise ValueError(words[2])
            known = known_set.flatten(highest)
        if len(items) == 4 and not isinstance(items[3], List):
            raise ValueError(items[3])
        return cls(uid_validity, modseq, known)


def _bounds(seq_set: SequenceSet) -> list[int]:
    """Every number written in a sequence set (to bound its expansion)."""
    found: list[int] = []
    for elem in seq_set.value:
        parts = elem if isinstance(elem, tuple) else (elem,)
        found.extend(part for part in parts if isinstance(part, int))
    return found or [0]


def vanished_response(uids: Iterable[int], *, earlier: bool = False) -> UntaggedResponse:
    """`* VANISHED [(EARLIER)] <uid-set>` (RFC 7162 §3.2.10)."""
    prefix = b"VANISHED (EARLIER) " if earlier else b"VANISHED "
    return UntaggedResponse(prefix + bytes(SequenceSet.build(uids, True)))


def _vanished(responses: Iterable[Any], before: Any) -> Iterable[Any]:
    """EXPUNGE responses (pymap's, by sequence number) as one VANISHED of their UIDs."""
    held: list[Any] = []
    gone: list[int] = []
    uid_of: dict[int, int] | None = None
    for response in responses:
        if isinstance(response, ExpungeResponse):
            if uid_of is None:
                uid_of = {seq: uid for uid, seq in before.seqs_cache.items()}
            gone.append(uid_of[response.seq])
        else:
            held.append(response)
    if gone:
        yield vanished_response(gone)
    yield from held


def highest_modseq_response(value: int) -> UntaggedResponse:
    """`* OK [HIGHESTMODSEQ n]` (RFC 7162 §3.1.2.1)."""
    return UntaggedResponse(
        b"Highest mod-sequence.",
        ResponseCode.of(b"HIGHESTMODSEQ %d" % value),
        condition=b"OK",
    )


def condstore_install() -> None:
    """Install the pieces above into pymap (idempotent)."""
    global _pymap_criteria_of
    if FetchAttribute.parse.__func__ is _fetch_parse:  # type: ignore[attr-defined]
        return
    FetchAttribute.parse = classmethod(_fetch_parse)  # type: ignore[method-assign,assignment]
    FetchAttribute.requirement = property(_fetch_requirement)  # type: ignore[method-assign,assignment]
    SearchKey.parse = classmethod(_search_parse)  # type: ignore[method-assign,assignment]
    SearchKey.requirement = property(_search_requirement)  # type: ignore[method-assign,assignment]
    _pymap_criteria_of = SearchCriteria.of.__func__  # type: ignore[attr-defined]
    SearchCriteria.of = classmethod(criteria_of)  # type: ignore[method-assign,assignment]
    simple = dict(MessageAttributes._simple_attrs)
    simple[b"MODSEQ"] = _ModSeqFetchValue
    MessageAttributes._simple_attrs = simple
    StatusAttribute.valid_statuses = StatusAttribute.valid_statuses | {b"HIGHESTMODSEQ"}
    SelectedMailbox._compare = _compare  # type: ignore[method-assign]
