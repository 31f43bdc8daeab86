"""Build an export: the caller's mailboxes, through one layout, as downloadable file(s).

A read (it changes nothing), so a selector: scoped to the organization, another
account's project or an unknown layout or page is NotFound."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from mailplane.core.errors import NotFound
from mailplane.exports.layouts import LAYOUTS, Layout, MailboxRecord
from mailplane.exports.writer import render_parts, zip_parts
from mailplane.mailboxes.selectors import mailbox_list
from mailplane.projects.selectors import project_get
from mailplane.tenancy.models import Organization
from mailplane.tenancy.selectors import organization_mail_hosts


@dataclass(frozen=True, slots=True)
class ExportFile:
    """What the client downloads, and how many parts the whole export has."""

    filename: str
    content_type: str
    content: bytes
    parts: int
    part: int | None  # the part this file is, when one part of several was asked for


def export_layout(*, name: str) -> Layout:
    layout = LAYOUTS.get(name.lower())
    if layout is None:
        raise NotFound(f"no export layout {name!r}; layouts: {', '.join(LAYOUTS)}")
    return layout


def export_build(
    *,
    organization: Organization,
    layout_name: str,
    project: int | None = None,
    page: int | None = None,
) -> ExportFile:
    """One CSV; or, when the layout must be split and no page was asked for, a zip of parts."""
    layout = export_layout(name=layout_name)
    if project is not None:
        project_get(organization=organization, project_id=project)  # NotFound if not theirs
    smtp_host, imap_host = organization_mail_hosts(organization=organization)
    conf = settings.MAILPLANE
    mailboxes = mailbox_list(organization=organization, project=project).select_related("project")
    records = (
        MailboxRecord(
            mailbox=mailbox,
            smtp_host=smtp_host,
            smtp_port=int(conf["SMTP_PORT"]),
            imap_host=imap_host,
            imap_port=int(conf["IMAP_PORT"]),
        )
        for mailbox in mailboxes.iterator(chunk_size=500)
    )
    parts = render_parts(layout, records)
    stem = f"mailplane-{layout.name.replace('.', '-')}-{timezone.now():%Y%m%d}"
    if page is not None:
        if not 1 <= page <= len(parts):
            raise NotFound(f"page {page} does not exist: this export has {len(parts)} part(s)")
        name = stem if len(parts) == 1 else f"{stem}-part-{page}-of-{len(parts)}"
        return ExportFile(
            f"{name}.csv", "text/csv; charset=utf-8", parts[page - 1], len(parts), page
        )
    if len(parts) == 1:
        return ExportFile(f"{stem}.csv", "text/csv; charset=utf-8", parts[0], 1, None)
    return ExportFile(
        f"{stem}.zip", "application/zip", zip_parts(parts, stem=stem), len(parts), None
    )
