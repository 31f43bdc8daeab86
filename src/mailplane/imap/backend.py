"""The Mailplane pymap backend: pymap's Maildir storage, Mailplane's logins.

Storage is pymap's own maildir backend (Maildir++ layout, `dovecot-uidlist` for UIDs) pointed
at the storage contract's tree, STORAGE_ROOT/org-<id>/<address>/, so a tenant's mail stays
under its own directory. What we replace is everything about users: pymap's maildir backend
reads users and passwords from files; ours asks the database (see `auth`).

Behaviours added on top of pymap's maildir classes:
- Folder names are checked (`names.mailbox_name_check`) before any storage call, and the
  layout (`storage.layout.ConfinedLayout`) refuses any path outside the mailbox's tree.
- LIST patterns match in linear time (`names.ListPattern`) and are bounded in length; SEARCH
  keys are bounded in number and evaluated on a worker pool, so one client's command cannot
  starve the event loop that serves every other connection.
- New messages get UIDs in arrival order (Maildir file names start with the delivery time),
  not in directory order, so the oldest message of a folder has the lowest UID.
- RFC 6154 special-use attributes on LIST for Sent, Drafts, Trash and Junk.
- IDLE that notices external deliveries: `maildir_deliver` (another process) renames files
  into new/. pymap assigns them UIDs in `MailboxData.reset()` (a full scan) but IDLE only
  re-scans once per loop, after a fixed 1 s wait. Here the wait polls the new/ and cur/
  directory mtimes (two stat calls) and re-scans only when they change, so a delivery is
  announced within one poll interval and a quiet mailbox costs almost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import os
import re
import time
import weakref
from argparse import Namespace
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from mailbox import MaildirMessage
from typing import Any

from pymap.backend.maildir import Config as MaildirConfig
from pymap.backend.maildir import FilterSet, Session
from pymap.backend.maildir.flags import MaildirFlags
from pymap.backend.maildir.layout import MaildirLayout
from pymap.backend.maildir.mailbox import LoadedMessage, MailboxData, MailboxSet, Maildir, Message
from pymap.backend.maildir.subscriptions import Subscriptions
from pymap.backend.maildir.uidlist import Record, UidList
from pymap.concurrent import Event, Subsystem
from pymap.config import BackendCapability
from pymap.context import socket_info
from pymap.exceptions import (
    AuthorizationFailure,
    InvalidAuth,
    MailboxConflict,
    MailboxError,
    MailboxNotFound,
    NotAllowedError,
    NotSupportedError,
)
from pymap.fetch import FetchRequirement
from pymap.health import HealthStatus
from pymap.interfaces.backend import BackendInterface
from pymap.interfaces.login import IdentityInterface, LoginInterface
from pymap.interfaces.token import TokenCredentials
from pymap.listtree import ListEntry, ListTree
from pymap.mailbox import MailboxSnapshot
from pymap.mime import MessageContent
from pymap.parsing.commands import Commands
from pymap.parsing.response import ResponseCode, ResponseNo
from pymap.parsing.specials import ObjectId
from pymap.parsing.specials.flag import Flag, Wildcard
from pymap.search import SearchCriteriaSet, SearchParams
from pymap.selected import SelectedMailbox
from pymap.token import AllTokens
from pymap.user import UserMetadata
from pysasl import SASLAuth
from pysasl.creds.server import ServerCredentials
from pysasl.hashing import BuiltinHash

from mailplane.imap.auth import (
    CredentialCache,
    LoginGate,
    LoginLimits,
    MailboxLogin,
    mailbox_authenticate,
)
from mailplane.imap.auth import login_guard as default_login_guard
from mailplane.imap.extensions import CAPABILITIES, extension_commands
from mailplane.imap.modseq import ModSeqs, modseq_bump, modseq_lock_path, modseqs_read
from mailplane.imap.names import (
    DELIMITER,
    MAX_LIST_PATTERN,
    ListPattern,
    ListPatternTooLong,
    MailboxNameInvalid,
    mailbox_name_check,
)
from mailplane.imap.toc import TocMaildir
from mailplane.storage.layout import ConfinedLayout
from mailplane.storage.maildir import SPECIAL_FOLDERS, maildir_ensure

__all__ = ["MailplaneBackend", "MailplaneConfig"]

# RFC 9051 §5.4: an authenticated client may stay silent for 30 minutes before autologout;
# IDLE clients re-issue IDLE at least every 29 minutes (RFC 2177).
AUTHENTICATED_TIMEOUT = 30 * 60.0
# Before login nothing justifies a long silence: it only holds a socket open.
UNAUTHENTICATED_TIMEOUT = 60.0
IDLE_POLL_INTERVAL = 0.25
MAX_APPEND_LEN = 50 * 1024 * 1024


class MailplaneConfig(MaildirConfig):
    """pymap settings plus the timeouts and polling interval pymap does not have."""

    def __init__(
        self,
        args: Namespace,
        *,
        authenticated_timeout: float = AUTHENTICATED_TIMEOUT,
        unauthenticated_timeout: float = UNAUTHENTICATED_TIMEOUT,
        idle_poll_interval: float = IDLE_POLL_INTERVAL,
        auth_workers: int = 4,
        login_guard: LoginLimits | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(args, **extra)
        self.authenticated_timeout = authenticated_timeout
        self.unauthenticated_timeout = unauthenticated_timeout
        self.idle_poll_interval = idle_poll_interval
        # Brute-force limits (per address, per client IP) and the verification cache: the
        # same classes as SMTP AUTH. The limits live in Redis when one is configured, shared
        # with SMTP AUTH and every other IMAP process; the cache is this process's.
        self.login_guard = login_guard or default_login_guard()
        self.login_gate = LoginGate()  # parallel guesses are checked one after another
        self.credential_cache = CredentialCache()
        # pysasl looks its mechanisms up in the package entry points on every call (a scan
        # of every installed distribution's metadata, ~4 ms): build the set once, not per
        # connection. SASLAuth holds no per-connection state.
        self._tls_auth = SASLAuth.named([b"PLAIN", b"LOGIN"])
        # scrypt and the ORM are blocking: logins run on this pool, never on the loop.
        self.auth_executor = ThreadPoolExecutor(auth_workers, thread_name_prefix="imap-auth")
        # SEARCH criteria are evaluated here, a batch of messages at a time: a BODY search
        # compiles a regular expression per key and message, seconds of CPU on a large
        # mailbox, and the loop keeps serving everyone meanwhile (the GIL switches every
        # 5 ms). Two threads: a crowd of searchers shares them instead of adding threads.
        self.search_executor = ThreadPoolExecutor(2, thread_name_prefix="imap-search")

    @classmethod
    def build(
        cls,
        *,
        storage_root: str,
        host: str | None = None,
        port: int = 143,
        ssl_context: Any = None,
        **overrides: Any,
    ) -> MailplaneConfig:
        """A config without pymap's command line (pymap's `from_args` needs argparse)."""
        args = Namespace(passlib_cfg=None, proxy_protocol=None, debug=False, inherited_sockets=None)
        options: dict[str, Any] = {
            "host": host,
            "port": port,
            "base_dir": storage_root,
            "layout": "++",
            "colon": None,
            # Blocking maildir I/O runs on the loop: per-call costs are small (a few syscalls),
            # and pymap's thread subsystem would hold one thread per IDLE connection.
            "subsystem": Subsystem.for_asyncio(),
            "ssl_context": ssl_context,
            "hash_context": BuiltinHash(),
            "max_append_len": MAX_APPEND_LEN,
            "bad_command_limit": 5,
            "invalid_user_sleep": 0.3,
            "reject_dnsbl": False,
        }
        options.update(overrides)
        return cls(args, **options)

    @property
    def backend_capability(self) -> BackendCapability:
        return BackendCapability(idle=True, object_id=True, multi_append=True, custom=CAPABILITIES)

    @property
    def commands(self) -> Commands:
        # pymap's command registry, with the extensions' commands (imap/extensions.py).
        return extension_commands()

    @property
    def greeting(self) -> bytes:
        # pymap calls socket.getfqdn() per connection: a blocking resolver call on the loop.
        return b"Mailplane IMAP ready."

    @property
    def tls_auth(self) -> SASLAuth:
        # PLAIN and LOGIN only: the challenge-response mechanisms need the clear password stored.
        return self._tls_auth


_LINE_END = re.compile(rb"\r?\n")


class _RawMessage(MaildirMessage):
    """The file's bytes as stored: pymap only calls bytes() on what `get_message` returns."""

    raw = b""

    def __bytes__(self) -> bytes:
        return self.raw


class CrlfMaildir(TocMaildir):
    """Keeps messages byte-exact with CRLF line ends, as `maildir_deliver` stores them.

    Its table of contents is `TocMaildir`'s: listed once per command, not per lookup.

    The stdlib's email generator rewrites every line end to LF, both when `add` writes and
    when `get_message` is turned back into bytes, so pymap would serve LF-only messages.
    RFC 5322 §2.1 lines end in CRLF and IMAP clients check RFC822.SIZE against the bytes.
    """

    def _create_tmp(self) -> Any:
        # The stdlib creates the file 0666 minus the umask (usually 0644): mail is private.
        handle = super()._create_tmp()  # type: ignore[misc]
        os.fchmod(handle.fileno(), 0o600)
        return handle

    def get_message(self, key: str) -> MaildirMessage:
        message = _RawMessage()
        message.raw = _LINE_END.sub(b"\r\n", self.get_bytes(key))
        return message

    def _dump_message(self, message: Any, target: Any, mangle_from_: bool = False) -> None:
        if isinstance(message, _RawMessage):
            target.write(message.raw)
        else:
            buffer = io.BytesIO()
            super()._dump_message(message, buffer, mangle_from_)
            target.write(_LINE_END.sub(b"\r\n", buffer.getvalue()))
        # APPEND, COPY and MOVE answer OK once this returns: the bytes must be on disk
        # before the rename into cur/ or new/ (the stdlib's `add` never fsyncs).
        target.flush()
        os.fsync(target.fileno())

    def add(self, message: Any) -> str:
        key = super().add(message)
        subdir = message.get_subdir() if isinstance(message, MaildirMessage) else "new"
        fd = os.open(os.path.join(self._path, subdir), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)  # the rename itself, durable before OK
        finally:
            os.close(fd)
        return key


class OffLoopMessage(Message):
    """pymap's Maildir message, loaded without holding the event loop for long.

    FETCH writes every response of a command before it next waits on the socket, and
    pymap loads (reads and parses) each message's content on the way: FETCH BODY[] or
    SEARCH BODY over thousands of messages held the event loop, and with it every other
    connection, for the whole command. Here a large message is parsed on a worker thread,
    and small ones (a fraction of a millisecond each; a thread hop would cost about as
    much) give other connections a turn every `LOAD_YIELD_EVERY` loads.
    """

    __slots__ = ["modseq"]  # RFC 7162 mod-sequence, set where the message is built
    modseq: int

    LOAD_YIELD_EVERY = 8
    PARSE_OFF_LOOP = 64 * 1024  # bytes
    _loads = 0

    async def load_content(self, requirement: FetchRequirement) -> LoadedMessage:
        maildir, key = self._maildir, self._key
        if key is None or maildir is None or requirement.has_none(FetchRequirement.CONTENT):
            return LoadedMessage(self, requirement, None)
        try:
            raw = bytes(maildir.get_message(key))
        except (KeyError, FileNotFoundError):
            return LoadedMessage(self, requirement, None)
        if len(raw) > self.PARSE_OFF_LOOP:
            content = await asyncio.to_thread(MessageContent.parse, raw)
        else:
            content = MessageContent.parse(raw)
            OffLoopMessage._loads += 1
            if OffLoopMessage._loads % self.LOAD_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return LoadedMessage(self, requirement, content)


class _SecretCapture:
    """A pysasl identity that records the secret offered, so that we check it ourselves."""

    def __init__(self) -> None:
        self.secret: str | None = None

    def compare_authcid(self, authcid: str) -> bool:
        return True

    def compare_secret(self, secret: str) -> bool:
        self.secret = secret
        return True


class LoginsUnavailable(InvalidAuth):
    """This client failed too often (on this address, or on any): NO [UNAVAILABLE] (RFC 5530)."""

    def __init__(self) -> None:
        super().__init__("Too many failed logins; try again later.")

    def get_response(self, tag: bytes) -> ResponseNo:
        return ResponseNo(tag, self._raw, ResponseCode.of(b"UNAVAILABLE"))


def _client_ip() -> str:
    """The peer's IP as pymap saw it (after a PROXY header, if configured)."""
    try:
        ip = socket_info.get().peername_ip
    except LookupError:
        return "unknown"
    return str(ip) if ip is not None else "unknown"


class Login(LoginInterface):
    """Authenticates against the Mailbox table; the identity is the lower-case address."""

    def __init__(self, config: MailplaneConfig) -> None:
        super().__init__()
        self.config = config
        self._tokens = AllTokens(config)

    @property
    def tokens(self) -> AllTokens:
        return self._tokens

    async def authenticate(self, credentials: ServerCredentials) -> Identity:
        if isinstance(credentials, TokenCredentials):
            raise InvalidAuth()  # pymap login tokens are not issued by Mailplane
        capture = _SecretCapture()
        credentials.verify(capture)  # type: ignore[arg-type]
        if capture.secret is None:
            raise InvalidAuth()
        address = credentials.authcid.strip().lower()
        password = capture.secret
        ip = _client_ip()
        async with self.config.login_gate.turn(address=address, ip=ip):
            login = await self._check(address, password, ip)
        return Identity(self.config, login)

    async def _check(self, address: str, password: str, ip: str) -> MailboxLogin:
        guard = self.config.login_guard
        attempt = guard.attempt(address=address, ip=ip)
        if attempt.refused:
            # RFC 5530 UNAVAILABLE: this client is refused before any password check.
            raise LoginsUnavailable()
        if attempt.delay:
            await asyncio.sleep(attempt.delay)  # this client has been failing: slow it down
        loop = asyncio.get_running_loop()
        async with self.config.login_gate.slot(ip=ip):
            login = await loop.run_in_executor(
                self.config.auth_executor,
                lambda: mailbox_authenticate(
                    address=address, password=password, cache=self.config.credential_cache
                ),
            )
        if login is None:
            guard.failed(attempt)
            # Slow down guessing a little; the connection's other clients are unaffected.
            await asyncio.sleep(self.config.invalid_user_sleep)
            raise InvalidAuth()
        guard.succeeded(attempt)
        return login

    async def authorize(self, authenticated: IdentityInterface, authzid: str) -> Identity:
        assert isinstance(authenticated, Identity)
        # No proxy logins: the authorization identity, if given, must be the mailbox itself.
        if authzid and authzid.lower() != authenticated.name:
            raise AuthorizationFailure()
        return authenticated


class Identity(IdentityInterface):
    """A logged-in mailbox; its session opens the mailbox's Maildir++ tree."""

    def __init__(self, config: MailplaneConfig, login: MailboxLogin) -> None:
        super().__init__()
        self.config = config
        self.login = login

    @property
    def name(self) -> str:
        return self.login.address

    @property
    def roles(self) -> frozenset[str]:
        return frozenset()

    async def new_token(self, *, expiration: datetime | None = None) -> str | None:
        return None

    @asynccontextmanager
    async def new_session(self) -> AsyncIterator[MailplaneSession]:
        root = await asyncio.to_thread(
            maildir_ensure,
            organization_id=self.login.organization_id,
            address=self.login.address,
        )
        path = str(root)
        layout: MaildirLayout[CrlfMaildir] = ConfinedLayout(path, CrlfMaildir)
        await _subscribe_defaults(path)
        mailbox_set = MailplaneMailboxSet(CrlfMaildir(path, create=False), layout, self.config)
        yield MailplaneSession(self.name, self.config, mailbox_set, FilterSet(path))

    async def get(self) -> UserMetadata:
        return UserMetadata(self.config, self.name)

    async def set(self, metadata: UserMetadata) -> int | None:
        raise NotAllowedError("Mailboxes are managed through the Mailplane API.")

    async def delete(self) -> None:
        raise NotAllowedError("Mailboxes are managed through the Mailplane API.")


async def _subscribe_defaults(path: str) -> None:
    """Subscribe the special folders once, so LSUB-driven clients show them."""
    if os.path.exists(Subscriptions.get_file(path)):
        return
    async with Subscriptions.with_write(path) as subs:
        for folder in ("INBOX", *SPECIAL_FOLDERS):
            subs.set(folder, True)


class MailplaneSession(Session):
    """pymap's maildir session: special-use attributes, bounded LIST, SEARCH that yields."""

    # Messages SEARCH evaluates per batch on the search pool.
    SEARCH_BATCH = 16

    async def list_mailboxes(
        self,
        ref_name: str,
        filter_: str,
        subscribed: bool = False,
        selected: SelectedMailbox | None = None,
    ) -> tuple[Iterable[tuple[str, str | None, Sequence[bytes]]], SelectedMailbox | None]:
        if len(ref_name) + len(filter_) > MAX_LIST_PATTERN:
            raise ListPatternTooLong()
        entries, updates = await super().list_mailboxes(ref_name, filter_, subscribed, selected)
        # RFC 6154 §2: the attribute goes with the mailbox in LIST responses; pymap writes
        # the backslash itself, so names are given without it.
        marked = [
            (name, delim, [*attrs, SPECIAL_FOLDERS[name].lstrip("\\").encode()])
            if name in SPECIAL_FOLDERS
            else (name, delim, attrs)
            for name, delim, attrs in entries
        ]
        return marked, updates

    async def list_extended(
        self,
        ref_name: str,
        patterns: Sequence[str],
        *,
        select: frozenset[bytes],
        returns: frozenset[bytes],
    ) -> list[ListedMailbox]:
        """LIST in RFC 5258's extended form (selection and return options, several patterns).

        Candidates are the existing folders, the subscribed names (which may no longer
        exist: \\NonExistent, §3.1) and their superiors. With RECURSIVEMATCH a name that
        matches a pattern but not the selection is listed with CHILDINFO when one of its
        descendants meets the selection and is not itself listed (§3.5; as Dovecot, so
        the client is told of children it would not otherwise see).
        """
        if len(ref_name) + sum(len(p) for p in patterns) > MAX_LIST_PATTERN:
            raise ListPatternTooLong()
        delimiter = self.mailbox_set.delimiter
        wanted = [p for p in patterns if p]
        if not wanted:
            # RFC 9051 §6.3.9: an empty pattern asks for the hierarchy delimiter.
            return [ListedMailbox("", delimiter, [b"Noselect"])]
        tree = await self.mailbox_set.list_mailboxes()
        entries = {entry.name: entry for entry in tree.list()}
        subscribed: frozenset[str] = frozenset()
        if select & {b"SUBSCRIBED"} or b"SUBSCRIBED" in returns:
            async with Subscriptions.with_read(self.mailbox_set._path) as subs:
                subscribed = frozenset(subs.subscribed)
        matchers = [ListPattern(ref_name + p, delimiter) for p in wanted]

        def matches(name: str) -> bool:
            return any(m.matches(name, ignore_case=name == "INBOX") for m in matchers)

        by_subscription = b"SUBSCRIBED" in select
        special_only = b"SPECIAL-USE" in select

        def meets_selection(name: str) -> bool:
            if by_subscription:
                return name in subscribed and (not special_only or name in SPECIAL_FOLDERS)
            return name in entries and (not special_only or name in SPECIAL_FOLDERS)

        candidates = set(entries) | subscribed
        for name in subscribed:
            parts = name.split(delimiter)
            candidates.update(delimiter.join(parts[:i]) for i in range(1, len(parts)))
        recursive = b"RECURSIVEMATCH" in select
        listed: list[ListedMailbox] = []
        for name in sorted(candidates, key=lambda n: (n != "INBOX", n)):
            if not matches(name):
                continue
            childinfo = False
            if not meets_selection(name):
                if not recursive:
                    continue
                prefix = name + delimiter
                childinfo = any(
                    other.startswith(prefix) and meets_selection(other) and not matches(other)
                    for other in candidates
                )
                if not childinfo:
                    continue
            entry = entries.get(name)
            attrs: list[bytes] = []
            if entry is None:
                attrs.append(b"NonExistent")  # implies \\Noselect (RFC 5258 §3.4)
            elif not entry.exists:
                attrs.append(b"Noselect")
            if b"CHILDREN" in returns and entry is not None:
                attrs.append(b"HasChildren" if entry.has_children else b"HasNoChildren")
            if name in subscribed and (by_subscription or b"SUBSCRIBED" in returns):
                attrs.append(b"Subscribed")
            if name in SPECIAL_FOLDERS:
                attrs.append(SPECIAL_FOLDERS[name].lstrip("\\").encode())
            listed.append(
                ListedMailbox(
                    name,
                    delimiter,
                    attrs,
                    childinfo=(b"SUBSCRIBED",) if childinfo else (),
                    selectable=entry is not None and entry.exists,
                )
            )
        return listed

    def selected_modseqs(self, selected: SelectedMailbox) -> ModSeqs:
        """The selected folder's mod-sequences as stored now (RFC 7162)."""
        mbx = self.mailbox_set._cache.get(selected.lookup)
        if isinstance(mbx, WatchedMailboxData):
            return mbx.modseqs
        return ModSeqs()

    def selected_uids(self, selected: SelectedMailbox) -> tuple[int, int]:
        """The selected folder's (UIDVALIDITY, UIDNEXT) as of its last reset."""
        mbx = self.mailbox_set._cache.get(selected.lookup)
        if isinstance(mbx, WatchedMailboxData):
            return mbx._uid_validity, mbx._next_uid
        return 0, 1

    async def highest_modseq(self, name: str) -> int:
        """A folder's HIGHESTMODSEQ (RFC 7162 §3.1.2.1); MailboxNotFound if it is gone."""
        try:
            mbx = await self.mailbox_set.get_mailbox(name)
        except KeyError as exc:
            raise MailboxNotFound(name) from exc
        return mbx.modseqs.highest if isinstance(mbx, WatchedMailboxData) else 1

    def defined_keywords(self, selected: SelectedMailbox) -> frozenset[Flag]:
        """The keywords the selected mailbox defines now (its keyword file, re-read if changed)."""
        mbx = self.mailbox_set._cache.get(selected.lookup)
        if isinstance(mbx, WatchedMailboxData):
            return mbx.maildir_flags.keywords
        return frozenset()

    async def search_mailbox(
        self, selected: SelectedMailbox, keys: frozenset[Any]
    ) -> tuple[Iterable[tuple[int, Any]], SelectedMailbox]:
        # pymap's loop, with the criteria bounded in number and evaluated off the loop in
        # batches: a large mailbox or a long list of keys must not hold the event loop (and
        # so every other connection of every tenant) for seconds.
        if search_key_count(keys) > MAX_SEARCH_KEYS:
            raise SearchTooLarge()
        mbx = await self._get_selected(selected)
        req = FetchRequirement.reduce(key.requirement for key in keys)
        ret: list[tuple[int, Any]] = []
        params = SearchParams(selected, disabled=self.config.disable_search_keys)
        search = SearchCriteriaSet(keys, params)
        config = self.config
        assert isinstance(config, MailplaneConfig)
        loop = asyncio.get_running_loop()
        batch: list[tuple[int, Any, Any]] = []

        def evaluate(todo: list[tuple[int, Any, Any]]) -> list[tuple[int, Any]]:
            return [(seq, msg) for seq, msg, content in todo if search.matches(seq, msg, content)]

        async for seq, msg in mbx.find(search.sequence_set, selected):
            batch.append((seq, msg, await msg.load_content(req)))
            if len(batch) >= self.SEARCH_BATCH:
                ret += await loop.run_in_executor(config.search_executor, evaluate, batch)
                batch = []
        if batch:
            ret += await loop.run_in_executor(config.search_executor, evaluate, batch)
        return ret, await mbx.update_selected(selected)


@dataclass(slots=True)
class ListedMailbox:
    """One LIST-EXTENDED answer: name, delimiter, attributes, RFC 5258 §3.5 CHILDINFO."""

    name: str
    delimiter: str | None
    attributes: Sequence[bytes]
    childinfo: tuple[bytes, ...] = ()
    selectable: bool = False


# RFC 9051 sets no limit; real clients send a handful of keys. Each costs CPU per message.
MAX_SEARCH_KEYS = 200


def search_key_count(keys: Iterable[Any]) -> int:
    """Every search key, nested ones included (parenthesised lists, OR's two operands)."""
    count = 0
    pending = list(keys)
    while pending:
        key = pending.pop()
        count += 1
        if key.value == b"KEYSET":
            pending.extend(key.filter_key_set)
        elif key.value == b"OR":
            pending.extend(key.filter_key_or)
    return count


class SearchTooLarge(MailboxError):
    """NO [LIMIT]: more search keys than the implementation limit (RFC 5530 §3)."""

    def __init__(self) -> None:
        super().__init__(
            None,
            b"Too many search keys (at most %d)." % MAX_SEARCH_KEYS,
            ResponseCode.of(b"LIMIT"),
        )


class LinearListTree(ListTree):
    """pymap's tree of folder names, matching LIST patterns with `ListPattern`."""

    def list_matching(self, ref_name: str, filter_: str) -> Iterable[ListEntry]:
        pattern = ListPattern(ref_name + filter_, DELIMITER)
        for entry in self.list():
            # RFC 9051 §5.1: INBOX is case-insensitive, other names are not.
            if pattern.matches(entry.name, ignore_case=entry.name == "INBOX"):
                yield entry


class MailplaneMailboxSet(MailboxSet):
    """pymap's set of folders: names checked, linear LIST, `WatchedMailboxData`.

    Every name-taking operation goes through `mailbox_name_check` before pymap's layout
    sees it; pymap's own answers for CREATE of an existing folder (an uncaught KeyError)
    and RENAME of a missing one (OK, having done nothing) are replaced by NO
    [ALREADYEXISTS] and NO [NONEXISTENT] (RFC 5530 §3).
    """

    def __init__(
        self, maildir: Maildir, layout: MaildirLayout[Any], config: MailplaneConfig
    ) -> None:
        super().__init__(maildir, layout)
        self._config = config

    def _exists(self, name: str) -> bool:
        return name == "INBOX" or os.path.isdir(self._layout.get_path(name, self.delimiter))

    async def list_subscribed(self) -> ListTree:
        async with Subscriptions.with_read(self._path) as subs:
            subscribed = frozenset(subs.subscribed)
        mailboxes = [
            name for name in self._layout.list_folders(self.delimiter) if name in subscribed
        ]
        return LinearListTree(self.delimiter).update("INBOX", *mailboxes)

    async def list_mailboxes(self) -> ListTree:
        mailboxes = self._layout.list_folders(self.delimiter)
        return LinearListTree(self.delimiter).update("INBOX", *mailboxes)

    async def set_subscribed(self, name: str, subscribed: bool) -> None:
        # The subscriptions file is one name per line: the check keeps CR/LF out of it.
        await super().set_subscribed(mailbox_name_check(name), subscribed)

    async def add_mailbox(self, name: str) -> ObjectId:
        name = mailbox_name_check(name, create=True)
        if self._exists(name):
            raise MailboxConflict(name)
        # RFC 9051 §6.3.4: the server creates the superior names a new name needs.
        parts = name.split(self.delimiter)
        for depth in range(1, len(parts)):
            parent = self.delimiter.join(parts[:depth])
            if not self._exists(parent):
                self._layout.add_folder(parent, self.delimiter)
        try:
            self._layout.add_folder(name, self.delimiter)
        except FileExistsError:  # created by another session since the check above
            raise MailboxConflict(name) from None
        path = self._layout.get_path(name, self.delimiter)
        async with UidList.with_init(path) as uidl:
            global_uid = uidl.global_uid
        return ObjectId(global_uid)

    async def delete_mailbox(self, name: str) -> None:
        name = mailbox_name_check(name)
        if name == "INBOX":
            raise MailboxNameInvalid(name, "INBOX cannot be deleted")
        if not self._exists(name):
            raise KeyError(name)
        self._cache.pop(name, None)
        await super().delete_mailbox(name)

    async def rename_mailbox(self, before: str, after: str) -> None:
        before, after = mailbox_name_check(before), mailbox_name_check(after)
        if before == "INBOX":
            raise NotSupportedError("Renaming INBOX is not supported.")
        if not self._exists(before):
            raise KeyError(before)
        if self._exists(after):
            raise MailboxConflict(after)
        if after.startswith(before + self.delimiter):
            raise MailboxNameInvalid(after, "a folder cannot be moved into itself")
        for name in [n for n in self._cache if n == before or n.startswith(before + "/")]:
            del self._cache[name]
        self._layout.rename_folder(before, after, self.delimiter)

    async def get_mailbox(self, name: str) -> MailboxData:
        # Same as pymap's, with names checked and our MailboxData subclass.
        name = mailbox_name_check(name)
        if name == "INBOX":
            maildir = self._inbox_maildir
        else:
            try:
                maildir = self._layout.get_folder(name, self.delimiter)
            except FileNotFoundError as exc:
                raise KeyError(name) from exc
        mbx = self._cache.get(name)
        if mbx is None:
            path = self._layout.get_path(name, self.delimiter)
            async with UidList.with_init(path) as uidl:
                mailbox_id = ObjectId(uidl.global_uid)
            mbx = WatchedMailboxData(mailbox_id, maildir, path, self._config.idle_poll_interval)
            self._cache[name] = mbx
        return await mbx.reset()


# Parsed dovecot-uidlist files, shared by every session of the process: under load each
# of ten sessions on one mailbox re-parsed the same file after every change (16 % of the
# server's time in imaptest's stress run). pymap replaces the file whole (write, then
# rename), so (mtime, size, inode) names one content; readers never modify the records.
_UIDLISTS: OrderedDict[str, tuple[tuple[int, int, int], dict[int, Record]]] = OrderedDict()
_UIDLISTS_MAX = 1024  # folders kept parsed


def uidlist_records(folder: str) -> dict[int, Record]:
    """The records of `folder`'s dovecot-uidlist by UID (do not modify the result)."""
    path = UidList.get_file(folder)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {}
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    cached = _UIDLISTS.get(path)
    if cached is not None and cached[0] == stamp:
        _UIDLISTS.move_to_end(path)
        return cached[1]
    records = {rec.uid: rec for rec in UidList.file_read(folder).records}
    _UIDLISTS[path] = (stamp, records)
    if len(_UIDLISTS) > _UIDLISTS_MAX:
        _UIDLISTS.popitem(last=False)
    return records


# Maildir unique names start "<seconds>.M<microseconds>P<pid>Q<counter>" (ours and the
# stdlib's): the delivery time, to the microsecond, then the sequence within the process.
_UNIQUE_NAME = re.compile(r"(\d+)\.M(\d+)P\d+Q(\d+)")


def _arrival_order(key: str) -> tuple[int, int, int, str]:
    found = _UNIQUE_NAME.match(key)
    if found is None:  # another writer's naming: after the recognised ones, by name
        return (2**63, 0, 0, key)
    return (int(found.group(1)), int(found.group(2)), int(found.group(3)), key)


# pymap guards dovecot-uidlist with a lock *file* whose presence means "locked": a waiter
# polls with sleeps growing to 1 s (17 tries, ~10 s in all, then TimeoutError), nobody
# queues, and every command takes the lock (pymap rewrites the uidlist before each one).
# Ten imaptest clients on one mailbox kept losing the race: STORE and EXPUNGE took 0.5-30 s
# each, and some failed with TimeoutError. Here waiters in this process queue on an asyncio
# lock (first come, first served, woken the moment it is free) and the file is held with
# flock(2) against other processes, which the kernel releases if a process dies.
_UIDLIST_LOCK = "mailplane-uidlist.lock"
_path_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def path_lock(path: str) -> AsyncIterator[None]:
    """Exclusive use of `path` (a lock file), fair within the process, flock across them."""
    locks = _path_locks.setdefault(asyncio.get_running_loop(), {})
    lock = locks.setdefault(path, asyncio.Lock())
    async with lock:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            delay = 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:  # another process holds it: rare, and brief
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.05)
            yield
        finally:
            os.close(fd)  # releases the flock
    if not lock.locked() and not getattr(lock, "_waiters", None):
        locks.pop(path, None)  # nobody holds or awaits it (flock keeps it safe regardless)


def _uidlist_lock(cls: type[UidList], path: str) -> Any:
    return path_lock(os.path.join(path, _UIDLIST_LOCK))


def uidlist_lock_install() -> None:
    """Make pymap's UidList (every read and write of dovecot-uidlist) use `path_lock`."""
    UidList.read_lock = classmethod(_uidlist_lock)  # type: ignore[method-assign,assignment]
    UidList.write_lock = classmethod(_uidlist_lock)  # type: ignore[method-assign,assignment]


uidlist_lock_install()


# Records by their dovecot-uidlist line. pymap parses the whole file into frozen dataclasses
# at every read and every locked update (each APPEND, each reset that numbers a new file):
# under imaptest's stress run that was a quarter of the server's time, for lines that had
# not changed since the last read. A line names one record exactly, so it is parsed once.
_RECORD_BY_LINE: dict[str, Record] = {}
_RECORD_BY_LINE_MAX = 200_000  # lines kept (a few hundred bytes each); then start again


def _uidlist_read(self: UidList, fp: Any) -> None:
    """pymap's `UidList.read`, each distinct line parsed once per process."""
    cache = _RECORD_BY_LINE
    records = self._records
    for line in fp:
        rec = cache.get(line)
        if rec is None:
            rec = UidList._read_line(line)
            if len(cache) >= _RECORD_BY_LINE_MAX:
                cache.clear()
            cache[line] = rec
        records[rec.uid] = rec
    # pymap's read went through set(), whose touch() is a no-op before the file is
    # watched (reads happen before): nothing to mark here.


def uidlist_read_install() -> None:
    """Make pymap's UidList parse each dovecot-uidlist line once (`_uidlist_read`)."""
    UidList.read = _uidlist_read  # type: ignore[method-assign]


uidlist_read_install()


def message_content_exists(message: Any) -> bool:
    """Whether a message's file is still there (another session may have expunged it)."""
    maildir, key = getattr(message, "_maildir", None), getattr(message, "_key", None)
    if maildir is None or key is None:
        return True
    if isinstance(maildir, TocMaildir):
        return maildir.content_exists(key)  # renamed since the listing: found again
    try:
        return os.path.exists(os.path.join(maildir._path, maildir._lookup(key)))
    except KeyError:
        return False


# Maildir keeps keywords as the letters a-z in the file name, mapped to names by the
# mailbox's dovecot-keywords file: 26 at most per mailbox.
MAX_KEYWORDS = 26


class KeywordsFull(MailboxError):
    """NO [LIMIT]: the mailbox already defines every keyword its Maildir can hold."""

    def __init__(self) -> None:
        super().__init__(
            None,
            b"This mailbox has no room for another keyword (at most %d)." % MAX_KEYWORDS,
            ResponseCode.of(b"LIMIT"),
        )


class _Snapshot(MailboxSnapshot):
    """pymap's snapshot; FLAGS lists the defined flags, never the `\\*` of PERMANENTFLAGS."""

    @property
    def flags(self) -> frozenset[Flag]:
        return super().flags - {Wildcard}


class WatchedMailboxData(MailboxData):
    """pymap's folder state, with change detection by directory mtimes.

    - IDLE waits until new/ or cur/ changes (or DONE), then re-scans.
    - `reset()` (which pymap runs before every command) brings the Maildir's table of
      contents up to date (`TocMaildir.toc_sync`: a listing only if new/ or cur/ changed,
      off the loop) and rewrites dovecot-uidlist only when a key without a UID appeared.
    - Message metadata comes from that table: no file-system call per message, and an
      expunged message still in dovecot-uidlist is a dictionary miss, not a re-listing.
    - UID records are parsed once per uidlist change, for every session of the process
      (`uidlist_records`), instead of once per message (pymap: O(n²)).
    - Per-message loops give other connections a turn every `YIELD_EVERY` messages.
    IDLE's mtime stamps younger than `_SETTLE` seconds are not trusted: two changes within
    one file-system timestamp tick would look like one.
    """

    _SETTLE = 1_000_000_000  # ns
    YIELD_EVERY = 64

    def __init__(self, mailbox_id: ObjectId, maildir: Maildir, path: str, poll: float) -> None:
        super().__init__(mailbox_id, maildir, path)
        self._poll = poll
        self._folder = path
        self._scanned: tuple[int, int] | None = None
        self._flags_stamp: tuple[int, int, int] | None = None
        self._steps = 0

    def _stamp(self) -> tuple[int, int]:
        try:
            new = os.stat(os.path.join(self._folder, "new")).st_mtime_ns
            cur = os.stat(os.path.join(self._folder, "cur")).st_mtime_ns
        except FileNotFoundError:
            return (0, 0)
        return (new, cur)

    def _settled(self, stamp: tuple[int, int]) -> bool:
        return time.time_ns() - max(stamp) > self._SETTLE

    async def reset(self) -> MailboxData:
        maildir = self._maildir
        if isinstance(maildir, TocMaildir):
            # Once per command: the listing (only if new/ or cur/ changed) runs off the loop.
            await maildir.toc_sync()
            stamp = (maildir.keys_version, 0)
            if stamp == self._scanned:
                return self
            infos = maildir.toc_infos()
        else:
            stamp = self._stamp()
            if stamp == self._scanned and self._settled(stamp):
                return self
            infos = await self._get_keys()
        # pymap's reset, with new messages numbered in arrival order: pymap numbers them
        # in directory-listing order (hash order on ext4), which gave the oldest message of
        # a folder UID 3. RFC 9051 §2.3.1.1: UIDs ascend in the order messages were added.
        numbered: list[int] = []
        async with UidList.with_write(self._path) as uidl:
            keys = dict(infos)
            for rec in uidl.records:
                keys.pop(rec.key, None)
            for key in sorted(keys, key=_arrival_order):
                if isinstance(maildir, TocMaildir) and not maildir.content_exists(key):
                    # Expunged by another session since our listing: a UID now would bring
                    # back a message that no longer exists (one stat per new key only).
                    continue
                filename = key + ":" + keys[key]
                fields = {
                    "E": str(ObjectId.random_email_id()),
                    "T": str(ObjectId.random_thread_id()),
                }
                uidl.set(Record(uidl.next_uid, fields, filename))
                numbered.append(uidl.next_uid)
                uidl.next_uid += 1
        if numbered:
            await self.modseq_bump(numbered)  # delivered by another writer: new to IMAP
        self._uid_validity = uidl.uid_validity
        self._next_uid = uidl.next_uid
        self._scanned = stamp
        return self

    # -- mod-sequences (RFC 7162 CONDSTORE; storage in imap/modseq.py) ----------------------

    @property
    def modseqs(self) -> ModSeqs:
        """This folder's mod-sequences as stored now (another session's changes included)."""
        return modseqs_read(self._path)

    async def modseq_bump(
        self, uids: Iterable[int], *, expunged: Iterable[int] = ()
    ) -> dict[int, int]:
        """New mod-sequences for `uids` (changed or added) and the `expunged` UIDs."""
        async with path_lock(modseq_lock_path(self._path)):
            return modseq_bump(self._path, uids, expunged=expunged, live=self._uid_records().keys())

    def _with_modseq(self, msg: OffLoopMessage, modseqs: ModSeqs | None = None) -> OffLoopMessage:
        msg.modseq = (modseqs or self.modseqs).of(msg.uid)
        return msg

    async def delete(self, uids: Iterable[int]) -> None:
        """pymap's expunge; each expunged message raises HIGHESTMODSEQ (RFC 7162 §3.1)."""
        wanted = list(uids)
        records, maildir = self._uid_records(), self._maildir
        before = {
            uid
            for uid in wanted
            if uid in records
            and (not isinstance(maildir, TocMaildir) or maildir.toc_has([records[uid].key]))
        }  # not those another session expunged already
        await super().delete(wanted)
        if before:
            await self.modseq_bump((), expunged=sorted(before))

    def _uid_records(self) -> dict[int, Record]:
        """dovecot-uidlist's records by UID, parsed again only when the file changed."""
        return uidlist_records(self._path)

    async def _get_maildir_msg(
        self, uid: int, *, fresh: bool = False
    ) -> tuple[Record, MaildirMessage]:
        """A message's record and metadata; `fresh` checks its file name on disk first.

        Without `fresh` the metadata comes from the table of contents listed at the start
        of the command (FETCH of flags, dates); a command that renames or reads the file
        asks for `fresh`, so another session's rename since the listing is seen.
        """
        record = self._uid_records()[uid]  # KeyError: expunged, as in pymap
        maildir = self._maildir
        if fresh and isinstance(maildir, TocMaildir):
            maildir.lookup_fresh(record.key)
        return record, maildir.get_message_metadata(record.key)

    async def _yield_sometimes(self) -> None:
        """Let other connections run every `YIELD_EVERY` messages of a long command.

        pymap's per-message coroutines never suspend, so STORE or FETCH over thousands of
        messages would otherwise hold the event loop for the whole command.
        """
        self._steps += 1
        if self._steps % self.YIELD_EVERY == 0:
            await asyncio.sleep(0)

    async def messages(self) -> AsyncIterator[Message]:
        # pymap's, with the uidlist parsed once per change and metadata from the table:
        # no file-system call per message (it ran before every command's answer).
        records = self._uid_records()
        maildir = self._maildir
        if isinstance(maildir, TocMaildir) and not maildir.toc_has(r.key for r in records.values()):
            # A record whose file the command's listing lacks: expunged, or written after
            # the listing (another session's APPEND, numbered since). Hiding the second kind
            # while a later UID shows would renumber messages when it appears (imaptest:
            # "UID changed for sequence 25"); a listing taken after the uidlist was read
            # holds every record's file that still exists. Once per call, and only if the
            # directories changed since the last listing.
            await maildir.toc_sync()
        flags = self.maildir_flags
        modseqs = self.modseqs
        for uid, rec in list(records.items()):
            try:
                maildir_msg = maildir.get_message_metadata(rec.key)
            except (KeyError, FileNotFoundError):
                continue
            await self._yield_sometimes()
            msg = OffLoopMessage.from_maildir(
                uid,
                maildir_msg,
                maildir,
                rec.key,
                self._get_object_id(rec, "E"),
                self._get_object_id(rec, "T"),
                flags,
            )
            yield self._with_modseq(msg, modseqs)

    async def get(self, uid: int, cached_msg: Any) -> Message:
        # pymap's, with `OffLoopMessage` and a turn for other connections now and then.
        await self._yield_sometimes()
        try:
            record, maildir_msg = await self._get_maildir_msg(uid)
        except (KeyError, FileNotFoundError):
            return OffLoopMessage.copy_expunged(cached_msg)
        msg = OffLoopMessage.from_maildir(
            uid,
            maildir_msg,
            self._maildir,
            record.key,
            self._get_object_id(record, "E"),
            self._get_object_id(record, "T"),
            self.maildir_flags,
        )
        return self._with_modseq(msg)

    # Keywords (RFC 9051 §2.3.2). pymap reads dovecot-keywords once and never writes it, and
    # PERMANENTFLAGS had no "\\*": a keyword a client stored was silently dropped. Here the
    # file is re-read when it changes (another session may define a keyword) and a new
    # keyword is added to it (under a lock, written whole and renamed into place) before
    # any message carries its letter.

    def _keywords_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(MaildirFlags.get_file(self._path))
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    @property
    def maildir_flags(self) -> MaildirFlags:
        stamp = self._keywords_stamp()
        if self._flags is None or stamp != self._flags_stamp:
            self._flags = MaildirFlags.file_read(self._path)
            self._flags_stamp = stamp
        return self._flags

    @property
    def permanent_flags(self) -> frozenset[Flag]:
        flags = self.maildir_flags
        if len(flags.keywords) < MAX_KEYWORDS:
            return flags.permanent_flags | {Wildcard}  # new keywords may be created
        return flags.permanent_flags

    def keywords_define(self, flags: Iterable[Flag]) -> None:
        """Give every keyword in `flags` a letter in dovecot-keywords (KeywordsFull if none)."""
        known = self.maildir_flags.permanent_flags
        wanted = sorted({f for f in flags if f not in known and not f.is_system})
        if not wanted:
            return
        path = MaildirFlags.get_file(self._path)
        with open(path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            names: dict[int, str] = {}
            try:
                with open(path, encoding="ascii") as current:
                    for line in current:
                        index, _, name = line.strip().partition(" ")
                        if index.isdigit() and name:
                            names[int(index)] = name
            except FileNotFoundError:
                pass
            present = {Flag(name) for name in names.values()}
            for flag in wanted:
                if flag in present:
                    continue
                free = next((i for i in range(MAX_KEYWORDS) if i not in names), None)
                if free is None:
                    raise KeywordsFull()
                names[free] = str(flag)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="ascii") as out:
                out.writelines(f"{i} {name}\n" for i, name in sorted(names.items()))
            os.replace(tmp, path)
        self._flags = None

    def _flags_for(self, source: MailboxData, info_flags: str) -> str:
        """A message's Maildir flag letters from `source`, re-lettered for this mailbox."""
        flags = source.maildir_flags.from_maildir(info_flags)
        self.keywords_define(flags)
        return self.maildir_flags.to_maildir(flags)

    async def append(self, append_msg: Any, *, recent: bool = False) -> Any:
        """pymap's APPEND, storing the literal byte for byte.

        pymap builds a stdlib `MaildirMessage` from the literal, which parses it as email
        and writes it back through the email generator: the stored message was not the one
        the client sent (imaptest: the trailing space of a "--foo " boundary line was gone,
        and with it the MIME structure), and RFC 9051 §6.3.12 APPEND stores the message
        as given. Here the bytes go to disk as received (line ends as CRLF, as everywhere).
        """
        self.keywords_define(append_msg.flag_set)
        email_id = ObjectId.random_email_id()
        thread_id = ObjectId.random_thread_id()
        maildir_msg = _RawMessage()
        maildir_msg.raw = _LINE_END.sub(b"\r\n", bytes(append_msg.literal))
        maildir_msg.set_flags(self.maildir_flags.to_maildir(append_msg.flag_set))
        maildir_msg.set_subdir("new" if recent else "cur")
        maildir_msg.set_date((append_msg.when or datetime.now()).timestamp())
        async with self.messages_lock.write_lock():
            key = self._maildir.add(maildir_msg)
            filename = key + ":" + maildir_msg.get_info()
        async with UidList.with_write(self._path) as uidl:
            new_rec = Record(uidl.next_uid, {"E": str(email_id), "T": str(thread_id)}, filename)
            uidl.next_uid += 1
            uidl.set(new_rec)
        await self.modseq_bump([new_rec.uid])
        msg = OffLoopMessage.from_maildir(
            new_rec.uid, maildir_msg, self._maildir, key, email_id, thread_id, self.maildir_flags
        )
        return self._with_modseq(msg)

    async def update(self, uid: int, cached_msg: Any, flag_set: frozenset[Flag], mode: Any) -> Any:
        """pymap's STORE of one message, reading the current flags from the file's name.

        The new flags are computed from the name on disk (`fresh`), not from the listing
        at the start of the command, so a flag another session set since is kept.
        """
        self.keywords_define(flag_set)
        await self._yield_sometimes()
        maildir = self._maildir
        try:
            record, maildir_msg = await self._get_maildir_msg(uid, fresh=True)
        except (KeyError, FileNotFoundError):
            msg = OffLoopMessage.copy_expunged(cached_msg)
            msg.permanent_flags = mode.apply(msg.permanent_flags, flag_set)
            return msg
        flags = self.maildir_flags
        old_flags = flags.from_maildir(maildir_msg.get_flags())
        new_flags = mode.apply(old_flags, flag_set)
        maildir_msg.set_flags(flags.to_maildir(new_flags))
        changed = False
        with contextlib.suppress(KeyError, FileNotFoundError):
            async with self.messages_lock.write_lock():
                maildir.update_metadata(record.key, maildir_msg)
                changed = new_flags != old_flags
        if changed:
            # RFC 7162 §3.1: a flag change, and only a change, gets a new mod-sequence.
            await self.modseq_bump([uid])
        msg = OffLoopMessage.from_maildir(
            uid,
            maildir_msg,
            maildir,
            record.key,
            self._get_object_id(record, "E"),
            self._get_object_id(record, "T"),
            flags,
        )
        return self._with_modseq(msg)

    async def snapshot(self) -> MailboxSnapshot:
        snap = await super().snapshot()
        return _Snapshot(
            snap.mailbox_id,
            snap.readonly,
            snap.uid_validity,
            snap.permanent_flags,
            snap.session_flags,
            snap.exists,
            snap.recent,
            snap.unseen,
            snap.first_unseen,
            snap.next_uid,
        )

    async def copy(self, uid: int, destination: MailboxData, *, recent: bool = False) -> int | None:
        # pymap 0.36.7 copies only the metadata-only message (flags, date): the copy's body
        # is empty. Same steps as pymap's, with the stored bytes carried over, and keywords
        # re-lettered for the destination (each mailbox numbers its own keywords).
        try:
            record, metadata = await self._get_maildir_msg(uid, fresh=True)
            raw = self._maildir.get_bytes(record.key)
        except (KeyError, FileNotFoundError):
            return None
        copy_msg = _RawMessage(metadata)
        copy_msg.raw = raw
        if isinstance(destination, WatchedMailboxData):
            copy_msg.set_flags(destination._flags_for(self, metadata.get_flags()))
        copy_msg.set_subdir("new" if recent else "cur")
        async with destination.messages_lock.write_lock():
            dest_key = destination._maildir.add(copy_msg)
            dest_filename = dest_key + ":" + copy_msg.get_info()
        async with UidList.with_write(destination._path) as uidl:
            new_rec = Record(uidl.next_uid, record.fields, dest_filename)
            uidl.next_uid += 1
            uidl.set(new_rec)
        if isinstance(destination, WatchedMailboxData):
            await destination.modseq_bump([new_rec.uid])
        return new_rec.uid

    async def move(self, uid: int, destination: MailboxData, *, recent: bool = False) -> int | None:
        """RFC 6851 MOVE as a copy then a removal of the source file.

        pymap's move takes the destination's and the source's write locks together; when
        they are the same mailbox (MOVE into the selected mailbox, which RFC 6851 §3.3
        allows and which gives the message a new UID) the second acquisition waited for
        the first forever and the session never answered. A rename would also keep the
        keyword letters of the wrong mailbox. The copy is durable before the original goes.
        """
        new_uid = await self.copy(uid, destination, recent=recent)
        if new_uid is None:
            return None
        try:
            record, _metadata = await self._get_maildir_msg(uid)
        except (KeyError, FileNotFoundError):
            return new_uid
        removed = False
        async with self.messages_lock.write_lock():
            with contextlib.suppress(KeyError, FileNotFoundError):
                self._maildir.remove(record.key)
                removed = True
        if removed:
            await self.modseq_bump((), expunged=[uid])
        return new_uid

    # \Recent (RFC 3501 §2.3.2; RFC 9051 keeps it for IMAP4rev1 clients): a message is
    # recent in exactly one session, the first to see it. pymap tested membership of each
    # record in a generator (`rec.key in claim_new()`), which consumed the generator, so
    # most claimed messages never got \Recent; and it claimed only at SELECT, so mail
    # arriving while a session had the mailbox selected was recent nowhere.

    async def claim_recent(self, selected: SelectedMailbox) -> None:
        async with self.messages_lock.write_lock():
            keys = set(self._maildir.claim_new())
        if not keys:
            return
        self._scanned = None  # the files just moved: number any that had no UID yet
        await self.reset()
        async with UidList.with_read(self._path) as uidl:
            for rec in uidl.records:
                if rec.key in keys:
                    selected.session_flags.add_recent(rec.uid)

    async def update_selected(
        self, selected: SelectedMailbox, *, wait_on: Event | None = None
    ) -> SelectedMailbox:
        if wait_on is not None:
            stamp = self._stamp()
            while not wait_on.is_set():
                await wait_on.wait(timeout=self._poll)
                if self._stamp() != stamp or not self._settled(stamp):
                    before = self._next_uid
                    await self.reset()  # assigns UIDs to files delivered into new/
                    if self._stamp() != stamp or self._next_uid != before:
                        break
                    stamp = self._stamp()
        if not selected.readonly:
            await self.claim_recent(selected)
        return await super().update_selected(selected)


class MailplaneBackend(BackendInterface):
    """Registered with pymap's backend plugin registry as "mailplane"."""

    def __init__(self, login: Login, config: MailplaneConfig) -> None:
        super().__init__()
        self._login = login
        self._config = config
        self._status = HealthStatus(True)

    @property
    def login(self) -> Login:
        return self._login

    @property
    def config(self) -> MailplaneConfig:
        return self._config

    @property
    def status(self) -> HealthStatus:
        return self._status

    @classmethod
    def add_subparser(cls, name: str, subparsers: Any) -> Any:
        parser = subparsers.add_parser(name, help="Mailplane database logins, Maildir storage")
        return parser

    @classmethod
    async def init(cls, args: Namespace, **overrides: Any) -> tuple[MailplaneBackend, Any]:
        from django.conf import settings

        config = MailplaneConfig.build(
            storage_root=settings.MAILPLANE["STORAGE_ROOT"],
            **overrides,
        )
        return cls(Login(config), config), config

    async def start(self, stack: AsyncExitStack) -> None:
        stack.callback(self._config.auth_executor.shutdown, wait=False)
        stack.callback(self._config.search_executor.shutdown, wait=False)
