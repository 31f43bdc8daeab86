"""Cloudflare API v4 (https://developers.cloudflare.com/api/): zones and DNS records.

Requests carry `Authorization: Bearer <API token>`; every reply is the v4 envelope
`{"success", "errors": [{"code", "message"}], "messages", "result", "result_info"}`, lists
paged with `page`/`per_page` and `result_info.total_pages`. The token needs Zone:Read and
DNS:Edit on the customer's zones. Records Mailplane writes carry a `comment` naming it (free
zones allow 100 characters; tags need a paid plan, so they are not used).

TXT content travels as RFC 1035 quoted character-strings of at most 255 bytes each (what
Cloudflare asks for; it warns on bare text): `txt_quote` / `txt_unquote`.
"""

from __future__ import annotations

import contextlib
from typing import Any

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

API_URL = "https://api.cloudflare.com/client/v4"
RECORDS_PER_PAGE = 100  # the list's default; the API accepts 5 to 5,000,000
ZONES_PER_PAGE = 5  # an exact-name search finds one zone; 5 is the smallest page allowed
MAX_PAGES = 1000
TTL_AUTOMATIC = 1
# Error codes that mean "this token may not do this" rather than "bad request":
# 1000 invalid API token, 9109 invalid access token, 10000 authentication error
# (the token lacks a permission), 9106 and 6003/6111 missing or malformed credentials.
AUTH_ERROR_CODES = frozenset({1000, 6003, 6111, 9106, 9109, 10000})
# 7000 no route for that URI, 7003 could not route (an unknown zone identifier).
ZONE_ERROR_CODES = frozenset({7000, 7003})
RECORD_MISSING_CODE = 81044  # "Record does not exist."


def txt_quote(text: str) -> str:
    """`text` as quoted character-strings of at most 255 bytes (RFC 1035 §3.3.14, §5.1)."""
    chunks: list[str] = []
    current, size = "", 0
    for char in text:
        width = len(char.encode())
        if size + width > 255:
            chunks.append(current)
            current, size = "", 0
        current += char
        size += width
    chunks.append(current)
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def txt_unquote(content: str) -> str:
    """Cloudflare's TXT content as the DNS serves it: character-strings joined. Bare
    (unquoted) content, which older records have, is one string as it stands."""
    text = content.strip()
    if not text.startswith('"'):
        return content
    strings: list[str] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        if text[i] != '"':
            return content  # not a list of quoted strings after all: take it verbatim
        i += 1
        current: list[str] = []
        while i < len(text) and text[i] != '"':
            if text[i] == "\\" and i + 1 < len(text):
                if text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
                    current.append(chr(int(text[i + 1 : i + 4])))  # \DDD (RFC 1035 §5.1)
                    i += 4
                    continue
                i += 1
            current.append(text[i])
            i += 1
        if i >= len(text):
            return content  # an unterminated quote: take it verbatim
        strings.append("".join(current))
        i += 1
    return "".join(strings)


def _messages(body: Any) -> str:
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return "no error detail"
    parts = []
    for error in errors[:5]:
        if isinstance(error, dict):
            parts.append(f"{str(error.get('message', ''))[:300]} (code {error.get('code')})")
    return "; ".join(parts) or "no error detail"


def _codes(body: Any) -> set[int]:
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return set()
    return {e["code"] for e in errors if isinstance(e, dict) and isinstance(e.get("code"), int)}


class RecordMissing(RecordRejected):
    """The record was deleted since it was listed."""


class CloudflareClient:
    """One API token's view of Cloudflare DNS."""

    kind = "cloudflare"

    def __init__(
        self,
        *,
        api_token: str,
        base_url: str = API_URL,
        policy: RetryPolicy,
        timeout: float,
    ) -> None:
        self._http = ApiSession(
            provider="Cloudflare",
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_token}"},
            policy=policy,
            timeout=timeout,
        )

    # -- the envelope ----------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        zone: Zone | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        response, body = self._http.request_json(method, path, params=params, json=json)
        if response.is_success and isinstance(body, dict) and body.get("success") is True:
            info = body.get("result_info")
            return body.get("result"), info if isinstance(info, dict) else {}
        raise self._error(response, body, zone)

    def _error(self, response: httpx.Response, body: Any, zone: Zone | None) -> Exception:
        status, codes, text = response.status_code, _codes(body), _messages(body)
        if status in (401, 403) or codes & AUTH_ERROR_CODES:
            if 10000 in codes:
                return CredentialsRejected(
                    f"Cloudflare refused the API token: {text}; it needs the Zone:Read and "
                    "DNS:Edit permissions on this zone"
                )
            return CredentialsRejected(f"Cloudflare refused the API token: {text}")
        if RECORD_MISSING_CODE in codes:
            return RecordMissing(f"Cloudflare: the record no longer exists: {text}")
        if zone is not None and (status == 404 or codes & ZONE_ERROR_CODES):
            return ZoneNotFound(f"Cloudflare has no zone {zone.name} ({zone.id}): {text}")
        if status == 429 or status >= 500 or body is None:
            return ProviderUnavailable(f"Cloudflare answered HTTP {status}: {text}")
        return RecordRejected(f"Cloudflare refused the request: {text}")

    def _pages(self, path: str, params: dict[str, Any], *, zone: Zone | None) -> list[Any]:
        items: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            result, info = self._call("GET", path, params={**params, "page": page}, zone=zone)
            if not isinstance(result, list):
                raise ProviderUnavailable("Cloudflare answered a list request without a list")
            items.extend(result)
            total_pages = info.get("total_pages")
            if not result or not isinstance(total_pages, int) or page >= total_pages:
                break
        return items

    # -- DnsProviderClient -----------------------------------------------------------
    def verify_credentials(self) -> str:
        result, _ = self._call("GET", "/user/tokens/verify")
        state = result.get("status") if isinstance(result, dict) else None
        if state != "active":
            raise CredentialsRejected(f"the Cloudflare API token is {state or 'not active'}")
        zones, info = self._call("GET", "/zones", params={"per_page": ZONES_PER_PAGE})
        count = info.get("total_count", len(zones) if isinstance(zones, list) else 0)
        return f"Cloudflare API token active; it can see {count} zone(s)"

    def find_zone(self, domain: str) -> Zone:
        candidates = zone_candidates(domain)
        for name in candidates:
            zones = self._pages("/zones", {"name": name, "per_page": ZONES_PER_PAGE}, zone=None)
            for found in zones:
                if isinstance(found, dict) and host_normalise(str(found.get("name"))) == name:
                    return Zone(id=str(found["id"]), name=name, status=str(found.get("status")))
        raise ZoneNotFound(
            f"no Cloudflare zone for {domain} that this API token can see "
            f"(looked for {', '.join(candidates)})"
        )

    def list_records(
        self, zone: Zone, *, name: str, type: str | None = None
    ) -> list[ProviderRecord]:
        params: dict[str, Any] = {"name": host_normalise(name), "per_page": RECORDS_PER_PAGE}
        if type:
            params["type"] = type
        raw = self._pages(f"/zones/{zone.id}/dns_records", params, zone=zone)
        return [self._record(item) for item in raw if isinstance(item, dict)]

    def create_record(self, zone: Zone, spec: RecordSpec, *, comment: str) -> ProviderRecord:
        body = {**self._body(spec), "name": host_normalise(spec.name), "type": spec.type}
        body["ttl"] = TTL_AUTOMATIC
        if spec.type == "CNAME":
            body["proxied"] = False  # mail hosts must resolve to the target itself
        body["comment"] = comment
        result, _ = self._call("POST", f"/zones/{zone.id}/dns_records", json=body, zone=zone)
        return self._record(result)

    def update_record(
        self, zone: Zone, record: ProviderRecord, spec: RecordSpec, *, comment: str | None
    ) -> ProviderRecord:
        body = self._body(spec)
        if comment is not None:
            body["comment"] = comment
        result, _ = self._call(
            "PATCH", f"/zones/{zone.id}/dns_records/{record.id}", json=body, zone=zone
        )
        return self._record(result)

    def delete_record(self, zone: Zone, record: ProviderRecord) -> None:
        with contextlib.suppress(RecordMissing):  # already gone: what deleting was for
            self._call("DELETE", f"/zones/{zone.id}/dns_records/{record.id}", zone=zone)

    def close(self) -> None:
        self._http.close()

    # -- conversions -----------------------------------------------------------------
    @staticmethod
    def _body(spec: RecordSpec) -> dict[str, Any]:
        if spec.type == "TXT":
            return {"content": txt_quote(spec.content)}
        if spec.type == "MX":
            return {"content": host_normalise(spec.content), "priority": spec.priority}
        if spec.type in HOST_TYPES:
            return {"content": host_normalise(spec.content)}
        return {"content": spec.content}

    @staticmethod
    def _record(raw: Any) -> ProviderRecord:
        if not isinstance(raw, dict) or not raw.get("type") or raw.get("name") is None:
            raise ProviderUnavailable("Cloudflare answered with a malformed DNS record")
        rtype = str(raw["type"]).upper()
        content = str(raw.get("content") or "")
        if rtype == "TXT":
            content = txt_unquote(content)
        elif rtype in HOST_TYPES:
            content = host_normalise(content)
        priority = raw.get("priority") if rtype == "MX" else None
        return ProviderRecord(
            type=rtype,
            name=host_normalise(str(raw["name"])),
            content=content,
            priority=int(priority) if isinstance(priority, int | float) else None,
            id=str(raw.get("id") or ""),
            comment=str(raw.get("comment") or ""),
            raw=raw,
        )
