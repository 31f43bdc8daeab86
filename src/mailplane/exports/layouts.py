"""The layouts, in one declarative table: change a platform's header here and nowhere else.

Headers come from shared/reference/csv-exports.md (with the confidence given there). Each
column names a *source*: a key of `SOURCES` (what a mailbox knows) or None for a column we
have no value for, which stays empty as the importers expect for unknown optional values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailplane.mailboxes.models import Mailbox

Cell = str | int | bool | None


@dataclass(frozen=True, slots=True)
class MailboxRecord:
    """A mailbox plus the tenant's connection settings: everything a cell may draw from."""

    mailbox: Mailbox
    smtp_host: str
    smtp_port: int
    imap_host: str
    imap_port: int


Source = Callable[[MailboxRecord], Cell]

SOURCES: dict[str, Source] = {
    "id": lambda r: r.mailbox.pk,
    "email": lambda r: r.mailbox.address,
    "local_part": lambda r: r.mailbox.local_part,
    "domain": lambda r: r.mailbox.domain.name,
    "full_name": lambda r: r.mailbox.display_name,
    "first_name": lambda r: r.mailbox.first_name,
    "last_name": lambda r: r.mailbox.last_name,
    "password": lambda r: r.mailbox.password,
    "smtp_host": lambda r: r.smtp_host,
    "smtp_port": lambda r: r.smtp_port,
    # The exported ports are always our implicit-TLS listeners (RFC 8314 §3.3: 465 and 993
    # in production, unprivileged ones in embedded mode), never the STARTTLS ones.
    "smtp_ssl": lambda r: True,
    "imap_host": lambda r: r.imap_host,
    "imap_port": lambda r: r.imap_port,
    "imap_ssl": lambda r: True,
    "reply_to": lambda r: r.mailbox.reply_to,
    "signature": lambda r: r.mailbox.signature,
    "daily_limit": lambda r: r.mailbox.daily_limit,
    "warmup_enabled": lambda r: r.mailbox.warmup_enabled,
    "warmup_per_day": lambda r: r.mailbox.warmup_per_day,
    "warmup_daily_rampup": lambda r: r.mailbox.warmup_daily_rampup,
    "sent_this_cycle": lambda r: r.mailbox.sent_this_cycle,
    "status": lambda r: r.mailbox.status,
    "project": lambda r: r.mailbox.project.name if r.mailbox.project else None,
    "relay_server": lambda r: r.mailbox.relay_server_id,
    "created_at": lambda r: r.mailbox.created_at.isoformat(),
}


@dataclass(frozen=True, slots=True)
class Layout:
    """One platform's CSV: header → source, and how many accounts its importer takes."""

    name: str
    columns: tuple[tuple[str, str | None], ...]
    # Woodpecker's importer takes at most 200 accounts and 200 KB per file.
    max_rows: int | None = None
    max_bytes: int | None = None

    @property
    def header(self) -> list[str]:
        return [title for title, _ in self.columns]


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            "smartlead",
            (
                ("from_name", "full_name"),
                ("from_email", "email"),
                ("user_name", "email"),
                ("password", "password"),
                ("smtp_host", "smtp_host"),
                ("smtp_port", "smtp_port"),
                ("imap_host", "imap_host"),
                ("imap_port", "imap_port"),
                ("max_email_per_day", "daily_limit"),
                ("custom_tracking_url", None),
                ("warmup_enabled", "warmup_enabled"),
                ("total_warmup_per_day", "warmup_per_day"),
                ("daily_rampup", "warmup_daily_rampup"),
                ("reply_rate_percentage", None),
                ("bcc", None),
                ("signature", "signature"),
                ("different_reply_to_address", "reply_to"),
                # Blank means "same as SMTP", which they are.
                ("imap_user_name", None),
                ("imap_password", None),
            ),
        ),
        Layout(
            "instantly",
            (
                ("Email", "email"),
                ("First Name", "first_name"),
                ("Last Name", "last_name"),
                ("IMAP Username", "email"),
                ("IMAP Password", "password"),
                ("IMAP Host", "imap_host"),
                ("IMAP Port", "imap_port"),
                ("SMTP Username", "email"),
                ("SMTP Password", "password"),
                ("SMTP Host", "smtp_host"),
                ("SMTP Port", "smtp_port"),
                ("Daily Limit", "daily_limit"),
                ("Warmup Enabled", "warmup_enabled"),
                ("Warmup Limit", "warmup_per_day"),
                ("Warmup Increment", "warmup_daily_rampup"),
            ),
        ),
        Layout(
            "reply.io",
            (
                ("Email", "email"),
                ("Daily Limit", "daily_limit"),
                ("Sender Name", "full_name"),
                ("SMTP Host", "smtp_host"),
                ("SMTP Port", "smtp_port"),
                ("SMTP Password", "password"),
                ("SMTP SSL (Optional)", "smtp_ssl"),
                ("IMAP Host", "imap_host"),
                ("IMAP Port", "imap_port"),
                ("IMAP Password", "password"),
            ),
        ),
        Layout(
            "woodpecker",
            (
                ("SMTP email", "email"),
                ("SMTP login", "email"),
                ("SMTP password", "password"),
                ("SMTP server", "smtp_host"),
                ("SMTP port", "smtp_port"),
                ("SMTP from name", "full_name"),
                ("IMAP email", "email"),
                ("IMAP password", "password"),
                ("IMAP server", "imap_host"),
                ("IMAP port", "imap_port"),
                ("Footer", "signature"),
                ("BCC", None),
                ("Open tracking domain", None),
                ("Click tracking domain", None),
                ("Unsubscribe tracking domain", None),
                ("Sending wait time from", None),
                ("Sending wait time to", None),
                ("Daily sending limit", "daily_limit"),
            ),
            max_rows=200,
            max_bytes=200 * 1000,
        ),
        Layout(
            "emailbison",
            (
                ("Name", "full_name"),
                ("Email", "email"),
                ("Password", "password"),
                ("IMAP Server", "imap_host"),
                ("IMAP Port", "imap_port"),
                ("SMTP Server", "smtp_host"),
                ("SMTP Port", "smtp_port"),
                ("Daily Limit", "daily_limit"),
                ("SMTP Secure", "smtp_ssl"),
                ("IMAP Secure", "imap_ssl"),
            ),
        ),
        Layout(
            "salesforge",
            (
                ("address", "email"),
                ("firstName", "first_name"),
                ("lastName", "last_name"),
                ("imapHost", "imap_host"),
                ("imapUsername", "email"),
                ("imapPassword", "password"),
                ("imapPort", "imap_port"),
                ("smtpHost", "smtp_host"),
                ("smtpUsername", "email"),
                ("smtpPassword", "password"),
                ("smtpPort", "smtp_port"),
                ("Signature", "signature"),
                ("trackingDomain", None),
            ),
        ),
        # Every field a mailbox has, for tools without a layout of their own.
        Layout(
            "custom",
            (
                ("id", "id"),
                ("email", "email"),
                ("local_part", "local_part"),
                ("domain", "domain"),
                ("first_name", "first_name"),
                ("last_name", "last_name"),
                ("password", "password"),
                ("smtp_username", "email"),
                ("smtp_host", "smtp_host"),
                ("smtp_port", "smtp_port"),
                ("smtp_ssl", "smtp_ssl"),
                ("imap_username", "email"),
                ("imap_host", "imap_host"),
                ("imap_port", "imap_port"),
                ("imap_ssl", "imap_ssl"),
                ("reply_to", "reply_to"),
                ("signature", "signature"),
                ("project", "project"),
                ("relay_server", "relay_server"),
                ("status", "status"),
                ("daily_limit", "daily_limit"),
                ("warmup_enabled", "warmup_enabled"),
                ("warmup_per_day", "warmup_per_day"),
                ("warmup_daily_rampup", "warmup_daily_rampup"),
                ("sent_this_cycle", "sent_this_cycle"),
                ("created_at", "created_at"),
            ),
        ),
    )
}

# Columns whose cells are credentials: written verbatim, never neutralised (see writer).
SECRET_SOURCES = frozenset({"password"})
