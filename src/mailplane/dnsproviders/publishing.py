"""Make a zone hold a domain's records, touching only Mailplane's own.

For each record the domain asks for (domains.DnsRecord: MX, SPF, DKIM, DMARC and the
return-path CNAME) the zone is read at that name, and what is there is split into
Mailplane's records (known from the ledger, `PublishedRecord`, or on Cloudflare from their
comment) and everyone else's. Then:

- the zone already serves the wanted record through someone else's record: nothing to
  write (`present`); a stale record of ours beside it is removed;
- something of someone else's stands in the way: nothing is written and the outcome says
  what and why (`conflict`): another TXT record at the DKIM name; any record at the
  return-path name (a CNAME must stand alone); a second SPF record (RFC 7208 §4.5 allows
  one: with merge_spf Mailplane instead adds its include to the customer's record, and
  from then on keeps just that term up to date);
- a DMARC record of the customer's own is kept as it is: its policy is theirs to choose;
- otherwise our record is created, corrected or left as it is (`created`, `updated`,
  `unchanged`), and duplicates of ours are removed.

Records of ours no longer wanted (the selector of a replaced DKIM key) are deleted, an old
DKIM key only a week after it was replaced, so mail signed with it still verifies on
arrival. Nothing is written when the zone is already right, so running it twice changes
nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mailplane.dnsproviders.interface import (
    HOST_TYPES,
    DnsProviderClient,
    ProviderRecord,
    RecordSpec,
    Zone,
    host_normalise,
)
from mailplane.dnsproviders.models import PublishedRecord
from mailplane.domains.models import DnsRecord, Domain, RecordPurpose

DKIM_RETIRED_KEEP = timedelta(days=7)
_ALL = re.compile(r"[-~?+]?all", re.IGNORECASE)
_DMARC = re.compile(r"v\s*=\s*DMARC1\s*(;|$)", re.IGNORECASE)  # RFC 7489 §6.4


class Action(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"  # ours, already right
    PRESENT = "present"  # served by a record that is not ours: left alone
    MERGED = "merged"  # our include added to (or updated in) the customer's SPF record
    CONFLICT = "conflict"  # refused: a record that is not ours stands in the way
    KEPT = "kept"  # a retired record of ours, kept a while yet (an old DKIM key)
    DELETED = "deleted"  # a record of ours that is no longer wanted


@dataclass(frozen=True, slots=True)
class Outcome:
    purpose: str
    type: str
    name: str
    action: Action
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {
            "purpose": self.purpose,
            "type": self.type,
            "name": self.name,
            "action": self.action.value,
            "detail": self.detail,
        }


def record_comment(purpose: str) -> str:
    """The comment on our Cloudflare records; its first word says whose and what for."""
    return f"mailplane:{purpose} managed by Mailplane; edits are overwritten"


def is_spf(text: str) -> bool:
    """RFC 7208 §4.5: an SPF record starts with "v=spf1" followed by a space or its end."""
    lowered = text.lower()
    return lowered == "v=spf1" or lowered.startswith("v=spf1 ")


def _short(text: str, limit: int = 80) -> str:
    return '"' + (text if len(text) <= limit else text[: limit - 1] + "…") + '"'


def _describe(record: ProviderRecord | RecordSpec) -> str:
    if record.type == "MX":
        return f"MX {record.priority} {record.content}"
    return f"{record.type} {_short(record.content)}"


def spf_with_include(record: str, include: str, *, replacing: Iterable[str] = ()) -> str:
    """`record` with `include` in place of any of `replacing`, else before its `all`
    (mechanisms after `all` are never evaluated, RFC 7208 §5.1), else at the end."""
    old = {term.lower() for term in replacing}
    terms = record.split()
    kept: list[str] = []
    placed = False
    for term in terms:
        if term.lower() in old:
            if not placed:
                kept.append(include)
                placed = True
            continue
        kept.append(term)
    if not placed:
        at = next((i for i, t in enumerate(kept) if i and _ALL.fullmatch(t)), len(kept))
        kept.insert(at, include)
    return " ".join(kept)


class ZonePublisher:
    """One run of publishing `domain`'s records into `zone` through `client`."""

    def __init__(
        self,
        *,
        domain: Domain,
        client: DnsProviderClient,
        zone: Zone,
        merge_spf: bool,
        now: datetime,
    ) -> None:
        self.domain, self.client, self.zone = domain, client, zone
        self.provider = client.kind
        self.merge_spf, self.now = merge_spf, now
        self.ledger = list(
            PublishedRecord.objects.filter(
                domain=domain, provider=self.provider, zone_name=zone.name
            )
        )
        self.outcomes: list[Outcome] = []

    def publish(self) -> list[Outcome]:
        wanted = list(DnsRecord.objects.filter(domain=self.domain).order_by("id"))
        for record in wanted:
            spec = RecordSpec(
                record.type, host_normalise(record.name), record.value, record.priority
            )
            self._publish(record.purpose, spec)
        self._retire({(r.purpose, r.type, host_normalise(r.name)) for r in wanted})
        return self.outcomes

    # -- whose is it -----------------------------------------------------------------
    def _entries_for(self, record: ProviderRecord, purpose: str) -> list[PublishedRecord]:
        found = []
        for entry in self.ledger:
            if entry.spf_term or entry.purpose != purpose:
                continue
            if entry.type != record.type or entry.name != record.name:
                continue
            if record.id and entry.provider_record_id:
                if entry.provider_record_id == record.id:
                    found.append(entry)
            elif entry.content == record.content and (
                record.type != "MX" or entry.priority == record.priority
            ):
                found.append(entry)
        return found

    def _is_mine(self, record: ProviderRecord, purpose: str) -> bool:
        if self._entries_for(record, purpose):
            return True
        return record.comment.startswith(f"mailplane:{purpose} ")

    # -- the ledger: written before the provider is asked, dropped after -------------
    def _note(
        self, purpose: str, spec: RecordSpec, *, record_id: str = "", spf_term: str = ""
    ) -> PublishedRecord:
        content = host_normalise(spec.content) if spec.type in HOST_TYPES else spec.content
        entry = PublishedRecord.objects.create(
            domain=self.domain,
            provider=self.provider,
            zone_name=self.zone.name,
            purpose=purpose,
            type=spec.type,
            name=host_normalise(spec.name),
            content=content,
            priority=spec.priority if spec.type == "MX" else None,
            provider_record_id=record_id,
            spf_term=spf_term,
        )
        self.ledger.append(entry)
        return entry

    def _forget(self, entries: Iterable[PublishedRecord]) -> None:
        for entry in list(entries):
            if entry in self.ledger:
                self.ledger.remove(entry)
                entry.delete()

    def _forget_vanished(self, purpose: str, spec: RecordSpec, mine: list[ProviderRecord]) -> None:
        """Ledger rows for records no longer in the zone (deleted, or on GoDaddy edited
        into someone else's) recognise nothing any more."""
        live = {id(e) for r in mine for e in self._entries_for(r, purpose)}
        self._forget(
            e
            for e in list(self.ledger)
            if not e.spf_term
            and (e.purpose, e.type, e.name) == (purpose, spec.type, spec.name)
            and id(e) not in live
        )

    # -- writes ----------------------------------------------------------------------
    def _create(self, purpose: str, spec: RecordSpec) -> None:
        entry = self._note(purpose, spec)
        created = self.client.create_record(self.zone, spec, comment=record_comment(purpose))
        if created.id:
            entry.provider_record_id = created.id
            entry.save(update_fields=["provider_record_id"])

    def _update(self, purpose: str, record: ProviderRecord, spec: RecordSpec) -> None:
        old = self._entries_for(record, purpose)
        self._note(purpose, spec, record_id=record.id)
        self.client.update_record(self.zone, record, spec, comment=record_comment(purpose))
        self._forget(old)

    def _delete(self, purpose: str, records: Iterable[ProviderRecord]) -> int:
        count = 0
        for record in records:
            entries = self._entries_for(record, purpose)
            self.client.delete_record(self.zone, record)
            self._forget(entries)
            count += 1
        return count

    def _outcome(self, purpose: str, spec: RecordSpec, action: Action, detail: str) -> None:
        self.outcomes.append(Outcome(purpose, spec.type, spec.name, action, detail))

    # -- one wanted record -----------------------------------------------------------
    def _publish(self, purpose: str, spec: RecordSpec) -> None:
        # A CNAME must be alone at its name (RFC 1034 §3.6.2), so every type there counts.
        any_type = spec.type == "CNAME"
        found = self.client.list_records(
            self.zone, name=spec.name, type=None if any_type else spec.type
        )
        mine = [r for r in found if r.type == spec.type and self._is_mine(r, purpose)]
        theirs = [r for r in found if r not in mine]
        self._forget_vanished(purpose, spec, mine)
        if purpose == RecordPurpose.SPF:
            self._publish_spf(spec, mine, theirs)
            return
        rivals = {
            RecordPurpose.DKIM: theirs,
            RecordPurpose.DMARC: [r for r in theirs if _DMARC.match(r.content)],
            RecordPurpose.RETURN_PATH: theirs,
        }.get(RecordPurpose(purpose), [r for r in theirs if r.type == spec.type])
        if any(r.matches(spec) for r in rivals):
            removed = self._delete(purpose, mine)
            note = f"; {removed} older record(s) of Mailplane's removed" if removed else ""
            self._outcome(
                purpose,
                spec,
                Action.PRESENT,
                "the zone already has this record, not created by Mailplane: left as it is" + note,
            )
        elif purpose == RecordPurpose.DMARC and rivals:
            removed = self._delete(purpose, mine)  # two DMARC records void both (§6.6.3)
            self._outcome(
                purpose,
                spec,
                Action.PRESENT,
                f"your own DMARC record {_short(rivals[0].content)} is kept: its policy is "
                "yours to choose" + ("; Mailplane's was removed" if removed else ""),
            )
        elif purpose == RecordPurpose.DKIM and rivals:
            self._outcome(
                purpose,
                spec,
                Action.CONFLICT,
                f"{spec.name} already has a record Mailplane did not create "
                f"({_describe(rivals[0])}); verifiers may read any TXT record there "
                "(RFC 6376 §3.6.2.2), so the DKIM key needs the name to itself: remove it "
                "and publish again",
            )
        elif purpose == RecordPurpose.RETURN_PATH and rivals:
            kinds = ", ".join(sorted({r.type for r in rivals}))
            self._outcome(
                purpose,
                spec,
                Action.CONFLICT,
                f"{spec.name} already has {kinds} record(s) Mailplane did not create; a CNAME "
                "must be the only record at its name (RFC 1034 §3.6.2): remove them and "
                "publish again",
            )
        else:
            self._converge(purpose, spec, mine)

    def _converge(self, purpose: str, spec: RecordSpec, mine: list[ProviderRecord]) -> None:
        """Exactly one record of ours, serving `spec`."""
        if not mine:
            self._create(purpose, spec)
            self._outcome(purpose, spec, Action.CREATED, _describe(spec))
            return
        keep, *extra = sorted(mine, key=lambda r: not r.matches(spec))
        removed = self._delete(purpose, extra)
        note = f"; {removed} duplicate(s) removed" if removed else ""
        if not self._entries_for(keep, purpose):  # known by its comment only: adopt it
            self._note(
                purpose,
                RecordSpec(keep.type, keep.name, keep.content, keep.priority),
                record_id=keep.id,
            )
        if keep.matches(spec):
            self._outcome(purpose, spec, Action.UNCHANGED, "already published" + note)
        else:
            self._update(purpose, keep, spec)
            self._outcome(purpose, spec, Action.UPDATED, f"was {_describe(keep)}" + note)

    def _publish_spf(
        self, spec: RecordSpec, mine: list[ProviderRecord], theirs: list[ProviderRecord]
    ) -> None:
        purpose = RecordPurpose.SPF
        include = next(t for t in spec.content.split() if t.lower().startswith("include:"))
        merged = [e for e in self.ledger if e.purpose == purpose and e.spf_term]
        foreign = [r for r in theirs if is_spf(r.content)]
        if not foreign:
            self._forget(merged)  # the record we had merged into is gone
            self._converge(purpose, spec, mine)
            return
        if len(foreign) > 1:
            self._outcome(
                purpose,
                spec,
                Action.CONFLICT,
                f"{len(foreign)} SPF records at {spec.name} were not created by Mailplane; "
                "RFC 7208 §4.5 allows one (receivers treat more as a permanent error): merge "
                f"them into one that includes {include}",
            )
            return
        record = foreign[0]
        terms = {t.lower() for t in record.content.split()}
        if include.lower() in terms:
            removed = self._delete(purpose, mine)
            self._outcome(
                purpose,
                spec,
                Action.PRESENT,
                f"your SPF record already includes {include}: left as it is"
                + ("; Mailplane's own SPF record removed" if removed else ""),
            )
            return
        ours_in_it = [e.spf_term for e in merged if e.spf_term.lower() in terms]
        if not ours_in_it and not self.merge_spf:
            self._outcome(
                purpose,
                spec,
                Action.CONFLICT,
                f"{spec.name} has an SPF record Mailplane did not create "
                f"({_short(record.content)}), and only one may exist (RFC 7208 §4.5): add "
                f"{include} to it before its `all`, or publish again with merge_spf to let "
                "Mailplane add it",
            )
            return
        content = spf_with_include(record.content, include, replacing=ours_in_it)
        merged_spec = RecordSpec("TXT", record.name, content)
        self._note(purpose, merged_spec, record_id=record.id, spf_term=include)
        self.client.update_record(self.zone, record, merged_spec, comment=None)
        self._forget(e for e in merged if e.spf_term != include)
        removed = self._delete(purpose, mine)
        what = f"replaced {', '.join(ours_in_it)} with" if ours_in_it else "added"
        self._outcome(
            purpose,
            spec,
            Action.MERGED,
            f"{what} {include} in your SPF record: now {_short(content)}"
            + ("; Mailplane's own SPF record removed" if removed else ""),
        )

    # -- records of ours no longer wanted --------------------------------------------
    def _retire(self, wanted: set[tuple[str, str, str]]) -> None:
        groups: dict[tuple[str, str, str], list[PublishedRecord]] = {}
        for entry in self.ledger:
            key = (entry.purpose, entry.type, entry.name)
            if not entry.spf_term and key not in wanted:
                groups.setdefault(key, []).append(entry)
        for (purpose, rtype, name), entries in groups.items():
            for entry in entries:
                if entry.retired_at is None:
                    entry.retired_at = self.now
                    entry.save(update_fields=["retired_at"])
            retired_at = min(e.retired_at or self.now for e in entries)
            spec = RecordSpec(rtype, name, entries[0].content, entries[0].priority)
            if purpose == RecordPurpose.DKIM and self.now - retired_at < DKIM_RETIRED_KEEP:
                until = (retired_at + DKIM_RETIRED_KEEP).date().isoformat()
                self._outcome(
                    purpose,
                    spec,
                    Action.KEPT,
                    f"the replaced DKIM key stays published until {until}, so mail signed "
                    "with it still verifies",
                )
                continue
            found = self.client.list_records(self.zone, name=name, type=rtype)
            removed = self._delete(purpose, [r for r in found if self._entries_for(r, purpose)])
            self._forget(entries)
            if removed:
                self._outcome(purpose, spec, Action.DELETED, "no longer used: deleted")
