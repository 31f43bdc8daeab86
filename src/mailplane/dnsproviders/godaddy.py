"""GoDaddy Domains API v1 (https://developer.godaddy.com/doc/endpoint/domains): records.

Requests carry `Authorization: sso-key <key>:<secret>`; errors are `{"code", "message",
"fields": [{"code", "message", "path"}]}` (429 adds `retryAfterSec`). Records are addressed
by type and zone-relative name (`@` for the apex) and have no id and no comment, so writes
go by RRset: PATCH /records adds records beside whatever is there, PUT
/records/{type}/{name} replaces the whole RRset (the records of other owners in it are
sent back as they were), DELETE /records/{type}/{name} empties it. GoDaddy offers no
conditional write, so a change someone makes to the same RRset between our read and our
PUT is lost; the window is one round trip.

Paging: the reference describes `offset` as the number of results to skip, but the
service (and the clients in the field, e.g. the Terraform provider) pages with
offset=1, 2, ... as a page number; pages hold at most 500 records. We page that way,
stop at a short page and drop repeats, which also ends correctly if offset ever counts
records.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from mailplane.dnsproviders.errors import (
    CredentialsRejected,
    ProviderUnavailable,
    RecordRejected,
    ZoneNotFound,
)
from mailplane.dnsproviders.http import ApiSession, RetryPolicy
from mailplane.dnsproviders.interface import (
    HOST_TYPES,
    ProviderRecord,
    RecordSpec,
    Zone,
    host_normalise,
    zone_candidates,
)

API_URL = "https://api.godaddy.com"
PAGE_SIZE = 500
MAX_PAGES = 200
TTL = 600  # GoDaddy's smallest TTL: changes (a new MX at migration) spread quickly


def relative_name(name: str, zone: Zone) -> str:
    """`mail.acme.test` in zone `acme.test` -> `mail`; the apex -> `@`."""
    fqdn = host_normalise(name)
    if fqdn == zone.name:
        return "@"
    suffix = "." + zone.name
    if not fqdn.endswith(suffix):
        raise RecordRejected(f"{fqdn} is not inside the GoDaddy zone {zone.name}")
    return fqdn[: -len(suffix)]


def absolute_name(name: str, zone: Zone) -> str:
    relative = host_normalise(name)
    return zone.name if relative in ("@", "") else f"{relative}.{zone.name}"


def _retry_after_sec(response: httpx.Response) -> float | None:
    try:
        hint = response.json().get("retryAfterSec")
    except (ValueError, AttributeError):
        return None
    return float(hint) if isinstance(hint, int | float) and hint >= 0 else None


def _describe(body: Any) -> str:
    if not isinstance(body, dict):
        return "no error detail"
    text = f"{str(body.get('message') or '')[:300]} (code {body.get('code')})"
    fields = body.get("fields")
    if isinstance(fields, list) and fields:
        details = [
            f"{f.get('path')}: {str(f.get('message'))[:200]}"
            for f in fields[:5]
            if isinstance(f, dict)
        ]
        text += " [" + "; ".join(details) + "]"
    return text


class GoDaddyClient:
    """One API key's view of GoDaddy DNS."""

    kind = "godaddy"

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        base_url: str = API_URL,
        policy: RetryPolicy,
        timeout: float,
    ) -> None:
        self._http = ApiSession(
            provider="GoDaddy",
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"sso-key {api_key}:{api_secret}"},
            policy=policy,
            timeout=timeout,
            retry_hint=_retry_after_sec,
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        zone: Zone | None = None,
    ) -> Any:
        response, body = self._http.request_json(method, path, params=params, json=json)
        if response.is_success:
            return body
        raise self._error(response, body, zone)

    @staticmethod
    def _error(response: httpx.Response, body: Any, zone: Zone | None) -> Exception:
        status, text = response.status_code, _describe(body)
        if status == 401:
            return CredentialsRejected(f"GoDaddy refused the API key and secret: {text}")
        if status == 403:
            return CredentialsRejected(
                f"GoDaddy denied access: {text}; its DNS API is open only to some account "
                "kinds, and a key only reaches its own account's domains"
            )
        if status == 404 and zone is not None:
            return ZoneNotFound(f"GoDaddy has no DNS zone {zone.name} in this account: {text}")
        if status == 429 or status >= 500:
            return ProviderUnavailable(f"GoDaddy answered HTTP {status}: {text}")
        return RecordRejected(f"GoDaddy refused the request: {text}")

    def _pages(self, path: str, *, zone: Zone) -> list[dict[str, Any]]:
        seen: set[tuple[Any, ...]] = set()
        records: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            batch = self._call("GET", path, params={"limit": PAGE_SIZE, "offset": page}, zone=zone)
            if not isinstance(batch, list):
                raise ProviderUnavailable("GoDaddy answered a record list without a list")
            fresh = 0
            for item in batch:
                if not isinstance(item, dict):
                    continue
                key = tuple(sorted((k, str(v)) for k, v in item.items()))
                if key not in seen:
                    seen.add(key)
                    records.append(item)
                    fresh += 1
            if len(batch) < PAGE_SIZE or not fresh:
                break
        return records

    def _rrset_path(self, zone: Zone, rtype: str, name: str) -> str:
        relative = quote(relative_name(name, zone), safe="@")
        return f"/v1/domains/{quote(zone.id)}/records/{quote(rtype)}/{relative}"

    # -- DnsProviderClient -----------------------------------------------------------
    def verify_credentials(self) -> str:
        domains = self._call("GET", "/v1/domains", params={"limit": 1})
        if not isinstance(domains, list):
            raise ProviderUnavailable("GoDaddy answered the domain list without a list")
        return "GoDaddy API key and secret accepted"

    def find_zone(self, domain: str) -> Zone:
        candidates = zone_candidates(domain)
        for name in candidates:
            response, body = self._http.request_json("GET", f"/v1/domains/{quote(name)}")
            if response.status_code == 404:
                continue
            if not response.is_success:
                raise self._error(response, body, None)
            return Zone(id=name, name=name, status="active")
        raise ZoneNotFound(
            f"no GoDaddy domain for {domain} in this account (looked for {', '.join(candidates)})"
        )

    def list_records(
        self, zone: Zone, *, name: str, type: str | None = None
    ) -> list[ProviderRecord]:
        fqdn = host_normalise(name)
        if type:
            raw = self._pages(self._rrset_path(zone, type, fqdn), zone=zone)
        else:
            raw = self._pages(f"/v1/domains/{quote(zone.id)}/records", zone=zone)
        records = [self._record(item, zone) for item in raw]
        return [r for r in records if r.name == fqdn and (type is None or r.type == type)]

    def create_record(self, zone: Zone, spec: RecordSpec, *, comment: str) -> ProviderRecord:
        body = {"type": spec.type, "name": relative_name(spec.name, zone), **self._data(spec)}
        self._call("PATCH", f"/v1/domains/{quote(zone.id)}/records", json=[body], zone=zone)
        return self._record(body, zone)

    def update_record(
        self, zone: Zone, record: ProviderRecord, spec: RecordSpec, *, comment: str | None
    ) -> ProviderRecord:
        rrset = self.list_records(zone, name=record.name, type=record.type)
        replaced, entries = False, []
        for member in rrset:
            if not replaced and member == record:
                entries.append(self._data(spec))
                replaced = True
            else:
                entries.append(self._kept(member))
        if not replaced:
            return self.create_record(zone, spec, comment=comment or "")
        self._call("PUT", self._rrset_path(zone, record.type, record.name), json=entries, zone=zone)
        return self._record({"type": spec.type, "name": record.name, **self._data(spec)}, zone)

    def delete_record(self, zone: Zone, record: ProviderRecord) -> None:
        rrset = self.list_records(zone, name=record.name, type=record.type)
        remaining = [self._kept(member) for member in rrset if member != record]
        if len(remaining) == len(rrset):
            return  # already gone
        path = self._rrset_path(zone, record.type, record.name)
        if remaining:
            self._call("PUT", path, json=remaining, zone=zone)
        else:
            self._call("DELETE", path, zone=zone)

    def close(self) -> None:
        self._http.close()

    # -- conversions -----------------------------------------------------------------
    @staticmethod
    def _data(spec: RecordSpec) -> dict[str, Any]:
        content = host_normalise(spec.content) if spec.type in HOST_TYPES else spec.content
        data: dict[str, Any] = {"data": content, "ttl": TTL}
        if spec.type == "MX":
            data["priority"] = spec.priority
        return data

    @staticmethod
    def _kept(record: ProviderRecord) -> dict[str, Any]:
        """Another record of the RRset, as GoDaddy gave it (minus type and name)."""
        return {k: v for k, v in record.raw.items() if k not in ("type", "name")}

    @staticmethod
    def _record(raw: dict[str, Any], zone: Zone) -> ProviderRecord:
        rtype = str(raw.get("type") or "").upper()
        content = str(raw.get("data") or "")
        if rtype in HOST_TYPES:
            content = host_normalise(content)
        elif rtype == "TXT" and len(content) >= 2 and content[0] == content[-1] == '"':
            content = content[1:-1]  # some records come back quoted
        priority = raw.get("priority") if rtype == "MX" else None
        return ProviderRecord(
            type=rtype,
            name=absolute_name(str(raw.get("name") or "@"), zone),
            content=content,
            priority=int(priority) if isinstance(priority, int | float) else None,
            raw=raw,
        )
