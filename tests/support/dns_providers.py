"""Local HTTP servers implementing Cloudflare's API v4 and GoDaddy's Domains API v1 DNS
requests, as documented, for the DNS-provider clients to talk to.

Cloudflare (base URL `<server>/client/v4`): Bearer tokens; GET /user/tokens/verify;
GET /zones?name= (per_page 5-50); GET/POST /zones/{id}/dns_records (name, type filters,
page/per_page 5-5,000,000, `result_info`); GET/PATCH/PUT/DELETE /zones/{id}/dns_records/{id};
the `{"success","errors":[{"code","message"}],"messages","result"}` envelope, with the
documented error codes (1000 invalid token, 9109 invalid access token, 10000 authentication
error, 7003 unknown zone, 81044 record missing, 81053 CNAME clash, 81058 identical record,
9xxx validation); TXT content as quoted character-strings of at most 255 bytes (bare
text is split, as Cloudflare does); comments up to 100 characters (free plan).

GoDaddy (base URL `<server>`): `sso-key KEY:SECRET`; GET /v1/domains, GET /v1/domains/{d};
GET /v1/domains/{d}/records[/{type}[/{name}]] paged with limit (at most 500) and offset
(the page number, from 1); PATCH /records (add); PUT and DELETE /records/{type}/{name};
errors `{"code","message","fields":[{"code","message","path"}]}` (401
UNABLE_TO_AUTHENTICATE / MALFORMED_CREDENTIALS, 403 ACCESS_DENIED, 404 UNKNOWN_DOMAIN, 422
INVALID_BODY, 429 TOO_MANY_REQUESTS with retryAfterSec); TTL at least 600.

Both serve the zones they hold through a `DnsServer` (tests/support/dns_server.py) when
given one, so what a client publishes is what the DNS answers: the domain verification that
follows a publish asks real DNS questions. `force(status, body, headers)` queues replies for
the next requests (429 with Retry-After, 5xx); `requests` logs every request received.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from tests.support.dns_server import DnsServer

Reply = tuple[int, dict[str, str], Any]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def json_of(self, kind: type) -> Any:
        """The JSON body if it parses and is a `kind` (dict, list), else None."""
        try:
            body = self.json
        except ValueError:
            return None
        return body if isinstance(body, kind) else None

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class _Forced:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    method: str | None = None  # only for requests with this method


class JsonApiServer:
    """An HTTP server answering JSON; subclasses implement `answer`."""

    prefix = ""

    def __init__(self, *, dns: DnsServer | None = None) -> None:
        self.dns = dns
        self.lock = threading.RLock()
        self.requests: list[Seen] = []
        self._forced: list[_Forced] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.root + self.prefix

    @property
    def writes(self) -> list[Seen]:
        return [r for r in self.requests if r.method != "GET"]

    def force(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        times: int = 1,
        method: str | None = None,
    ) -> None:
        with self.lock:
            self._forced.extend(
                _Forced(status, body, dict(headers or {}), method) for _ in range(times)
            )

    def start(self) -> JsonApiServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs
            disable_nagle_algorithm = True  # headers and body leave at once (no 40 ms stall)

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    unquote(parts.path),
                    parse_qs(parts.query, keep_blank_values=True),
                    dict(self.headers.items()),
                    self.rfile.read(min(length, 1 << 20)),
                )
                status, headers, body = api._reply(seen)
                seen.status = status
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler

    def _reply(self, seen: Seen) -> Reply:
        with self.lock:
            self.requests.append(seen)
            for i, forced in enumerate(self._forced):
                if forced.method in (None, seen.method):
                    del self._forced[i]
                    return forced.status, forced.headers, forced.body
            return self.answer(seen)

    def answer(self, seen: Seen) -> Reply:
        raise NotImplementedError

    # -- serving the zones through the test DNS server ---------------------------------
    def _serve_name(self, name: str, records: list[tuple[str, str, int | None]]) -> None:
        """Make the DNS answer exactly `records` [(type, rdata, priority)] at `name`."""
        if self.dns is None:
            return
        self.dns.remove(name)
        for rtype, content, priority in records:
            if rtype == "MX":
                self.dns.mx(name, content, preference=priority or 0)
            elif rtype == "CNAME":
                self.dns.cname(name, content)
            elif rtype == "TXT" and content.startswith('"'):
                self.dns.add(name, "TXT", content)  # zone-file syntax: quoted strings
            elif rtype == "TXT":
                self.dns.txt(name, content)
            elif rtype == "A":
                self.dns.a(name, content)
            else:
                self.dns.add(name, rtype, content)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _int(value: str | None, default: int) -> int | None:
    if value is None or value == "":
        return default
    return int(value) if value.isdigit() else None


# =====================================================================================
# Cloudflare
# =====================================================================================
CF_TYPES = {"A", "AAAA", "CAA", "CNAME", "MX", "NS", "SRV", "TXT"}
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _cf_strings(content: str) -> list[str] | None:
    """The character-strings of quoted TXT content, or None if it is not all quoted."""
    rest = content.strip()
    strings = []
    while rest:
        match = _QUOTED.match(rest)
        if match is None:
            return None
        strings.append(re.sub(r"\\(.)", r"\1", match.group(1)))
        rest = rest[match.end() :].lstrip()
    return strings


class FakeCloudflare(JsonApiServer):
    prefix = "/client/v4"

    def __init__(self, *, dns: DnsServer | None = None) -> None:
        super().__init__(dns=dns)
        self.tokens: dict[str, dict[str, Any]] = {}
        self.zones: dict[str, dict[str, Any]] = {}
        self.records: dict[str, dict[str, dict[str, Any]]] = {}

    # -- test set-up -------------------------------------------------------------------
    def add_token(
        self, token: str, *, status: str = "active", zones: set[str] | None = None
    ) -> None:
        self.tokens[token] = {"id": uuid.uuid4().hex, "status": status, "zones": zones}

    def add_zone(self, name: str, *, status: str = "active") -> str:
        zone_id = uuid.uuid4().hex
        self.zones[zone_id] = {"id": zone_id, "name": name, "status": status}
        self.records[zone_id] = {}
        return zone_id

    def add_record(self, zone_id: str, **fields: Any) -> dict[str, Any]:
        """A record someone else made (no Mailplane comment), straight into the zone."""
        return self.add_records(zone_id, [fields])[0]

    def add_records(self, zone_id: str, many: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self.lock:
            added = [self._new_record(zone_id, {"ttl": 1, "proxied": False, **f}) for f in many]
            for record in added:
                self.records[zone_id][record["id"]] = record
            for name in {r["name"] for r in added}:
                self._sync(zone_id, name)
            return added

    def zone_records(self, zone_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.records[zone_id].values()]

    # -- envelope ----------------------------------------------------------------------
    @staticmethod
    def ok(result: Any, info: dict[str, Any] | None = None, status: int = 200) -> Reply:
        body: dict[str, Any] = {"result": result, "success": True, "errors": [], "messages": []}
        if info is not None:
            body["result_info"] = info
        return status, {}, body

    @staticmethod
    def error(status: int, code: int, message: str) -> Reply:
        body = {
            "result": None,
            "success": False,
            "errors": [{"code": code, "message": message}],
            "messages": [],
        }
        return status, {}, body

    def _page(self, seen: Seen, items: list[Any], *, low: int, high: int, default: int) -> Reply:
        page, per_page = _int(seen.param("page"), 1), _int(seen.param("per_page"), default)
        if page is None or page < 1:
            return self.error(400, 1001, "page must be a positive integer")
        if per_page is None or not low <= per_page <= high:
            return self.error(400, 1004, f"per_page must be between {low} and {high}")
        chunk = items[(page - 1) * per_page : page * per_page]
        total_pages = max(1, -(-len(items) // per_page))
        info = {
            "page": page,
            "per_page": per_page,
            "count": len(chunk),
            "total_count": len(items),
            "total_pages": total_pages,
        }
        return self.ok(chunk, info)

    # -- requests ----------------------------------------------------------------------
    def answer(self, seen: Seen) -> Reply:
        if not seen.path.startswith(self.prefix + "/"):
            return self.error(404, 7000, "No route for that URI")
        path = seen.path[len(self.prefix) :]
        auth = seen.headers.get("Authorization")
        if auth is None:
            return self.error(
                400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers"
            )
        scheme, _, token = auth.partition(" ")
        if scheme != "Bearer" or not token:
            return self.error(400, 6003, "Invalid request headers")
        grant = self.tokens.get(token)
        if path == "/user/tokens/verify" and seen.method == "GET":
            if grant is None:
                return self.error(401, 1000, "Invalid API Token")
            return (
                200,
                {},
                {
                    "result": {"id": grant["id"], "status": grant["status"]},
                    "success": True,
                    "errors": [],
                    "messages": [
                        {
                            "code": 10000,
                            "message": "This API Token is valid and active",
                            "type": None,
                        }
                    ],
                },
            )
        if grant is None or grant["status"] != "active":
            return self.error(403, 9109, "Invalid access token")
        visible = [
            z for z in self.zones.values() if grant["zones"] is None or z["id"] in grant["zones"]
        ]
        if path == "/zones" and seen.method == "GET":
            name = seen.param("name")
            found = [z for z in visible if name is None or z["name"] == name.lower()]
            return self._page(seen, found, low=5, high=50, default=20)
        match = re.fullmatch(r"/zones/([^/]+)/dns_records(?:/([^/]+))?", path)
        if match is None:
            return self.error(404, 7000, "No route for that URI")
        zone_id, record_id = match.groups()
        if zone_id not in self.zones:
            return self.error(
                404,
                7003,
                f"Could not route to /zones/{zone_id}/dns_records, perhaps your "
                "object identifier is invalid?",
            )
        if zone_id not in {z["id"] for z in visible}:
            return self.error(403, 10000, "Authentication error")
        if record_id is None:
            if seen.method == "GET":
                return self._list(seen, zone_id)
            if seen.method == "POST":
                return self._create(seen, zone_id)
            return self.error(405, 10405, "Method not allowed")
        record = self.records[zone_id].get(record_id)
        if record is None:
            return self.error(404, 81044, "Record does not exist.")
        if seen.method == "GET":
            return self.ok(record)
        if seen.method == "DELETE":
            del self.records[zone_id][record_id]
            self._sync(zone_id, record["name"])
            return self.ok({"id": record_id})
        if seen.method in ("PATCH", "PUT"):
            return self._change(seen, zone_id, record)
        return self.error(405, 10405, "Method not allowed")

    def _list(self, seen: Seen, zone_id: str) -> Reply:
        name, rtype = seen.param("name"), seen.param("type")
        items = [
            r
            for r in self.records[zone_id].values()
            if (name is None or r["name"] == name.lower()) and (rtype is None or r["type"] == rtype)
        ]
        return self._page(
            seen, sorted(items, key=lambda r: r["created_on"]), low=5, high=5_000_000, default=100
        )

    def _create(self, seen: Seen, zone_id: str) -> Reply:
        body = seen.json_of(dict)
        if body is None:
            return self.error(400, 9207, "Request body is invalid.")
        problem = self._invalid(zone_id, body, replacing=None)
        if problem:
            return problem
        record = self._new_record(zone_id, body)
        self.records[zone_id][record["id"]] = record
        self._sync(zone_id, record["name"])
        return self.ok(record)

    def _change(self, seen: Seen, zone_id: str, record: dict[str, Any]) -> Reply:
        body = seen.json_of(dict)
        if body is None:
            return self.error(400, 9207, "Request body is invalid.")
        merged = {**record, **body} if seen.method == "PATCH" else {"ttl": 1, **body}
        problem = self._invalid(zone_id, merged, replacing=record["id"])
        if problem:
            return problem
        old_name = record["name"]
        updated = {
            **self._new_record(zone_id, merged),
            "id": record["id"],
            "created_on": record["created_on"],
        }
        self.records[zone_id][record["id"]] = updated
        self._sync(zone_id, old_name)
        self._sync(zone_id, updated["name"])
        return self.ok(updated)

    def _invalid(
        self, zone_id: str, body: dict[str, Any], *, replacing: str | None
    ) -> Reply | None:
        zone = self.zones[zone_id]["name"]
        rtype, name, content = body.get("type"), body.get("name"), body.get("content")
        if rtype not in CF_TYPES:
            return self.error(400, 9101, "DNS record type is invalid.")
        if not isinstance(name, str) or not name:
            return self.error(400, 9005, "DNS name is invalid.")
        name = name.lower().rstrip(".")
        if name != zone and not name.endswith("." + zone):
            return self.error(400, 9007, f"DNS name {name} is not in the zone {zone}.")
        if not isinstance(content, str) or not content:
            return self.error(400, 9005, f"Content for {rtype} record is invalid.")
        ttl = body.get("ttl", 1)
        if not isinstance(ttl, int) or not (ttl == 1 or 60 <= ttl <= 86400):
            return self.error(
                400, 9011, "TTL must be between 60 and 86400 seconds, or 1 for Automatic."
            )
        if rtype == "MX":
            priority = body.get("priority")
            if not isinstance(priority, int) or not 0 <= priority <= 65535:
                return self.error(400, 9100, "MX records require a priority between 0 and 65535.")
        if rtype == "TXT":
            strings = _cf_strings(content) if content.startswith('"') else None
            if content.startswith('"') and strings is None:
                return self.error(400, 9005, "Content for TXT record is invalid.")
            if strings and any(len(s.encode()) > 255 for s in strings):
                return self.error(400, 9005, "TXT character-strings must be at most 255 bytes.")
        comment = body.get("comment")
        if comment is not None and (not isinstance(comment, str) or len(comment) > 100):
            return self.error(400, 9219, "DNS record comment cannot be longer than 100 characters.")
        others = [
            r for r in self.records[zone_id].values() if r["id"] != replacing and r["name"] == name
        ]
        if rtype == "CNAME" and others:
            return self.error(
                400, 81053, "An A, AAAA, or CNAME record with that host already exists."
            )
        if any(r["type"] == "CNAME" for r in others):
            return self.error(400, 81054, "A CNAME record with that host already exists.")
        for other in others:
            if (
                other["type"] == rtype
                and _cf_text(other["content"]) == _cf_text(content)
                and (rtype != "MX" or other.get("priority") == body.get("priority"))
            ):
                return self.error(400, 81058, "An identical record already exists.")
        return None

    def _new_record(self, zone_id: str, body: dict[str, Any]) -> dict[str, Any]:
        zone = self.zones[zone_id]
        content = body["content"]
        if body["type"] == "TXT" and not content.startswith('"') and len(content.encode()) > 255:
            pieces = [content[i : i + 255] for i in range(0, len(content), 255)]
            content = " ".join(f'"{p}"' for p in pieces)  # split, as Cloudflare does
        now = _now()
        record = {
            "id": body.get("id") or uuid.uuid4().hex,
            "zone_id": zone_id,
            "zone_name": zone["name"],
            "name": str(body["name"]).lower().rstrip("."),
            "type": body["type"],
            "content": content,
            "proxiable": body["type"] in ("A", "AAAA", "CNAME"),
            "proxied": bool(body.get("proxied", False)),
            "ttl": body.get("ttl", 1),
            "comment": body.get("comment"),
            "tags": body.get("tags", []),
            "meta": {},
            "created_on": body.get("created_on") or now,
            "modified_on": now,
        }
        if body["type"] == "MX":
            record["priority"] = body["priority"]
        return record

    def _sync(self, zone_id: str, name: str) -> None:
        if self.zones[zone_id]["status"] != "active":
            return
        at = [r for r in self.records[zone_id].values() if r["name"] == name]
        self._serve_name(name, [(r["type"], r["content"], r.get("priority")) for r in at])


def _cf_text(content: str) -> str:
    strings = _cf_strings(content) if content.startswith('"') else None
    return "".join(strings) if strings is not None else content


# =====================================================================================
# GoDaddy
# =====================================================================================
GD_TYPES = {"A", "AAAA", "CNAME", "MX", "NS", "SOA", "SRV", "TXT"}
GD_PAGE_MAX = 500


class FakeGoDaddy(JsonApiServer):
    def __init__(self, *, dns: DnsServer | None = None) -> None:
        super().__init__(dns=dns)
        self.accounts: dict[str, dict[str, Any]] = {}
        self.domains: dict[str, list[dict[str, Any]]] = {}

    # -- test set-up -------------------------------------------------------------------
    def add_account(self, key: str, secret: str, *, denied: bool = False) -> None:
        self.accounts[key] = {"secret": secret, "denied": denied}

    def add_domain(self, name: str) -> None:
        self.domains[name] = []

    def add_record(self, domain: str, **fields: Any) -> None:
        """A record someone else made, straight into the zone (`name` relative)."""
        self.add_records(domain, [fields])

    def add_records(self, domain: str, many: list[dict[str, Any]]) -> None:
        with self.lock:
            self.domains[domain].extend({"ttl": 3600, **f} for f in many)
            for name in {f["name"] for f in many}:
                self._sync(domain, name)

    def zone_records(self, domain: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.domains[domain]]

    @staticmethod
    def error(
        status: int, code: str, message: str, fields: list[dict[str, str]] | None = None
    ) -> Reply:
        body: dict[str, Any] = {"code": code, "message": message}
        if fields:
            body["fields"] = fields
        return status, {}, body

    # -- requests ----------------------------------------------------------------------
    def answer(self, seen: Seen) -> Reply:
        auth = seen.headers.get("Authorization")
        if not auth:
            return self.error(
                401, "UNABLE_TO_AUTHENTICATE", "Unauthorized : Credentials must be specified"
            )
        match = re.fullmatch(r"sso-key ([^:\s]+):(\S+)", auth)
        if match is None:
            return self.error(
                401, "MALFORMED_CREDENTIALS", "Unauthorized : Could not parse credentials"
            )
        account = self.accounts.get(match.group(1))
        if account is None or account["secret"] != match.group(2):
            return self.error(
                401,
                "UNABLE_TO_AUTHENTICATE",
                "Unauthorized : Could not authenticate API key/secret",
            )
        if account["denied"]:
            return self.error(403, "ACCESS_DENIED", "Authenticated user is not allowed access")
        if seen.path == "/v1/domains" and seen.method == "GET":
            limit = _int(seen.param("limit"), 1000) or 1000
            listed = [
                {"domain": d, "domainId": i + 1, "status": "ACTIVE"}
                for i, d in enumerate(sorted(self.domains))
            ]
            return 200, {}, listed[:limit]
        match = re.fullmatch(r"/v1/domains/([^/]+)(/records(?:/([^/]+)(?:/([^/]+))?)?)?", seen.path)
        if match is None:
            return self.error(404, "NOT_FOUND", "The requested resource was not found")
        domain, records_part, rtype, name = match.groups()
        if domain not in self.domains:
            if records_part:
                return self.error(
                    404,
                    "UNKNOWN_DOMAIN",
                    "The given domain is not registered, or does not have a zone file",
                )
            return self.error(404, "NOT_FOUND", f"Domain {domain} not found")
        if not records_part:
            if seen.method != "GET":
                return self.error(405, "METHOD_NOT_ALLOWED", "Method not allowed")
            return (
                200,
                {},
                {"domain": domain, "status": "ACTIVE", "nameServers": ["ns1.godaddy.test"]},
            )
        if rtype is not None and rtype not in GD_TYPES:
            return self.error(422, "INVALID_BODY", f"type {rtype} is not one of {sorted(GD_TYPES)}")
        if seen.method == "GET":
            return self._list(seen, domain, rtype, name)
        if seen.method == "PATCH" and rtype is None:
            return self._add(seen, domain)
        if seen.method == "PUT" and rtype and name:
            return self._replace(seen, domain, rtype, name)
        if seen.method == "DELETE" and rtype and name:
            rrset = [r for r in self.domains[domain] if r["type"] == rtype and r["name"] == name]
            if not rrset:
                return self.error(404, "NOT_FOUND", f"No {rtype} records named {name}")
            self.domains[domain] = [r for r in self.domains[domain] if r not in rrset]
            self._sync(domain, name)
            return 204, {}, None
        return self.error(404, "NOT_FOUND", "The requested resource was not found")

    def _list(self, seen: Seen, domain: str, rtype: str | None, name: str | None) -> Reply:
        offset, limit = _int(seen.param("offset"), 0), _int(seen.param("limit"), GD_PAGE_MAX)
        if offset is None or limit is None or limit < 1:
            return self.error(
                422,
                "INVALID_QUERY",
                "Request query doesn't fulfill schema",
                [
                    {
                        "code": "UNEXPECTED_TYPE",
                        "message": "must be a positive integer",
                        "path": "limit",
                    }
                ],
            )
        limit = min(limit, GD_PAGE_MAX)
        page = max(offset, 1)  # the service pages by page number (1, 2, ...)
        items = [
            r
            for r in self.domains[domain]
            if (rtype is None or r["type"] == rtype) and (name is None or r["name"] == name)
        ]
        return 200, {}, [dict(r) for r in items[(page - 1) * limit : page * limit]]

    def _valid(
        self, record: Any, path: str, *, rtype: str | None = None, name: str | None = None
    ) -> list[dict[str, str]]:
        problems: list[dict[str, str]] = []
        if not isinstance(record, dict):
            return [{"code": "UNEXPECTED_TYPE", "message": "must be an object", "path": path}]
        kind = rtype or record.get("type")
        where = name or record.get("name")
        if kind not in GD_TYPES:
            problems.append(
                {
                    "code": "UNEXPECTED_TYPE",
                    "message": f"type must be one of {sorted(GD_TYPES)}",
                    "path": f"{path}.type",
                }
            )
        if not isinstance(where, str) or not re.fullmatch(
            r"@|[A-Za-z0-9_*]([A-Za-z0-9_.-]*[A-Za-z0-9_])?", where
        ):
            problems.append(
                {
                    "code": "INVALID_VALUE",
                    "message": "name is not a valid record name",
                    "path": f"{path}.name",
                }
            )
        data = record.get("data")
        if not isinstance(data, str) or not data or len(data) > 4096:
            problems.append(
                {"code": "INVALID_VALUE", "message": "data is required", "path": f"{path}.data"}
            )
        ttl = record.get("ttl", 3600)
        if not isinstance(ttl, int) or ttl < 600:
            problems.append(
                {
                    "code": "INVALID_VALUE",
                    "message": "ttl must be at least 600",
                    "path": f"{path}.ttl",
                }
            )
        if kind == "MX":
            priority = record.get("priority")
            if not isinstance(priority, int) or not 0 <= priority <= 65535:
                problems.append(
                    {
                        "code": "INVALID_VALUE",
                        "message": "priority is required for MX",
                        "path": f"{path}.priority",
                    }
                )
        if kind == "CNAME" and where == "@":
            problems.append(
                {
                    "code": "INVALID_VALUE",
                    "message": "a CNAME cannot be at the apex",
                    "path": f"{path}.name",
                }
            )
        return problems

    def _add(self, seen: Seen, domain: str) -> Reply:
        body = seen.json_of(list)
        if body is None:
            return self.error(
                422, "INVALID_BODY", "Request body doesn't fulfill schema: expected an array"
            )
        problems = [p for i, r in enumerate(body) for p in self._valid(r, f"records[{i}]")]
        if not problems:
            for i, record in enumerate(body):
                for other in self.domains[domain]:
                    if all(other.get(k) == record.get(k) for k in ("type", "name", "data")):
                        problems.append(
                            {
                                "code": "DUPLICATE_RECORD",
                                "message": "Another record with the same attributes already exists",
                                "path": f"records[{i}]",
                            }
                        )
        if problems:
            return self.error(
                422,
                "INVALID_BODY",
                "Request body doesn't fulfill schema, see details in `fields`",
                problems,
            )
        for record in body:
            self.domains[domain].append({"ttl": 3600, **record})
            self._sync(domain, record["name"])
        return 200, {}, None

    def _replace(self, seen: Seen, domain: str, rtype: str, name: str) -> Reply:
        body = seen.json_of(list)
        if body is None:
            return self.error(
                422, "INVALID_BODY", "Request body doesn't fulfill schema: expected an array"
            )
        problems = [
            p
            for i, r in enumerate(body)
            for p in self._valid(r, f"records[{i}]", rtype=rtype, name=name)
        ]
        if problems:
            return self.error(
                422,
                "INVALID_BODY",
                "Request body doesn't fulfill schema, see details in `fields`",
                problems,
            )
        kept = [r for r in self.domains[domain] if not (r["type"] == rtype and r["name"] == name)]
        self.domains[domain] = kept + [
            {"ttl": 3600, **r, "type": rtype, "name": name} for r in body
        ]
        self._sync(domain, name)
        return 200, {}, None

    def _sync(self, domain: str, name: str) -> None:
        fqdn = domain if name == "@" else f"{name}.{domain}"
        at = [r for r in self.domains[domain] if r["name"] == name]
        self._serve_name(fqdn, [(r["type"], r["data"], r.get("priority")) for r in at])


# =====================================================================================
# fixtures
# =====================================================================================
CF_TOKEN = "cf-test-token-0123456789abcdefABCDEF"
GD_KEY, GD_SECRET = "gd_test_key_0123456789", "gd_test_secret_ABCDEFGH"


@pytest.fixture
def fake_cloudflare(dns_server: DnsServer, settings: Any) -> Iterator[FakeCloudflare]:
    fake = FakeCloudflare(dns=dns_server)
    fake.add_token(CF_TOKEN)
    fake.start()
    settings.MAILPLANE = {**settings.MAILPLANE, "CLOUDFLARE_API_URL": fake.base_url}
    yield fake
    fake.stop()


@pytest.fixture
def fake_godaddy(dns_server: DnsServer, settings: Any) -> Iterator[FakeGoDaddy]:
    fake = FakeGoDaddy(dns=dns_server)
    fake.add_account(GD_KEY, GD_SECRET)
    fake.start()
    settings.MAILPLANE = {**settings.MAILPLANE, "GODADDY_API_URL": fake.base_url}
    yield fake
    fake.stop()
