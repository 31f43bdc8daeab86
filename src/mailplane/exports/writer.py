"""The rules every export follows, applied to whatever a layout yields.

- UTF-8 without a BOM (importers read a BOM as part of the first header name) and RFC 4180
  quoting by the csv module: CRLF line ends, fields with commas, quotes or line breaks quoted,
  quotes doubled (RFC 4180 §2.5-2.7).
- Booleans as TRUE / FALSE; None as an empty cell (never "-" or "N/A").
- Text cells starting with = + - @ (or tab / CR, as OWASP lists) get a leading single quote
  so a spreadsheet shows them instead of evaluating them (CSV formula injection). The test
  is made on the NFKC form, since spreadsheets also evaluate compatibility forms such as a
  full-width equals sign (U+FF1D). Passwords are the exception: a changed password no longer logs
  in; the password rules forbid a password to start with these, and forbid the spaces,
  double quotes and ampersands a harmful formula needs.
"""

from __future__ import annotations

import csv
import io
import unicodedata
import zipfile
from collections.abc import Iterable

from mailplane.exports.layouts import SECRET_SOURCES, SOURCES, Cell, Layout, MailboxRecord
from mailplane.mailboxes.passwords import FORMULA_PREFIXES


def cell_text(value: Cell, *, secret: bool = False) -> str:
    """One cell as written: booleans spelled out, unknowns empty, formulas defused."""
    if value is None:
        return ""
    if isinstance(value, bool):  # before int: bool is an int
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if not secret and unicodedata.normalize("NFKC", text).startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def layout_row(layout: Layout, record: MailboxRecord) -> list[str]:
    return [
        ""
        if source is None
        else cell_text(SOURCES[source](record), secret=source in SECRET_SOURCES)
        for _, source in layout.columns
    ]


def _csv_line(cells: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue().encode("utf-8")


def render_parts(layout: Layout, records: Iterable[MailboxRecord]) -> list[bytes]:
    """The CSV file(s): one, or as many as the layout's row and size limits require.

    Always at least one part, so an account without mailboxes still gets the header row.
    """
    header = _csv_line(layout.header)
    parts: list[bytearray] = [bytearray(header)]
    rows_in_part = 0
    for record in records:
        line = _csv_line(layout_row(layout, record))
        full = layout.max_rows is not None and rows_in_part >= layout.max_rows
        too_big = (
            layout.max_bytes is not None
            and rows_in_part > 0
            and len(parts[-1]) + len(line) > layout.max_bytes
        )
        if full or too_big:
            parts.append(bytearray(header))
            rows_in_part = 0
        parts[-1] += line
        rows_in_part += 1
    return [bytes(part) for part in parts]


def zip_parts(parts: list[bytes], *, stem: str) -> bytes:
    """Several parts as one download: <stem>-part-01-of-03.csv, ... in a zip."""
    buffer = io.BytesIO()
    width = max(2, len(str(len(parts))))
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for number, part in enumerate(parts, start=1):
            archive.writestr(f"{stem}-part-{number:0{width}d}-of-{len(parts)}.csv", part)
    return buffer.getvalue()
