"""The general rules, cell by cell and file by file, parsed back with the csv module."""

from __future__ import annotations

import csv
import io
import zipfile
from types import SimpleNamespace

import pytest

from mailplane.exports.layouts import LAYOUTS, SOURCES, Layout, MailboxRecord
from mailplane.exports.writer import cell_text, layout_row, render_parts, zip_parts


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        (True, "TRUE"),
        (False, "FALSE"),
        (0, "0"),
        (465, "465"),
        ("plain", "plain"),
        ('=HYPERLINK("x")', '\'=HYPERLINK("x")'),
        ("+1 555", "'+1 555"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("a=b", "a=b"),
        # Compatibility forms that NFKC folds into a formula prefix (issue 8 defect 8):
        # full-width = + - @ and the small equals sign.
        ("\uff1dHYPERLINK(1)", "'\uff1dHYPERLINK(1)"),
        ("\uff0b1", "'\uff0b1"),
        ("\uff0d1", "'\uff0d1"),
        ("\uff20SUM(A1)", "'\uff20SUM(A1)"),
        ("\ufe66cmd", "'\ufe66cmd"),
        ("a\uff1db", "a\uff1db"),
    ],
)
def test_cell_text(value, expected):
    assert cell_text(value) == expected


def test_secrets_are_written_verbatim():
    assert cell_text("-Secret-Pass-1", secret=True) == "-Secret-Pass-1"


def _record(**mailbox_fields) -> MailboxRecord:
    defaults = dict(
        pk=7,
        address="jo@acme.test",
        local_part="jo",
        first_name="",
        last_name="",
        display_name="",
        password="=Pass-Word-123",
        signature="",
        reply_to="",
        daily_limit=50,
        warmup_enabled=False,
        warmup_per_day=20,
        warmup_daily_rampup=2,
    )
    defaults.update(mailbox_fields)
    mailbox = SimpleNamespace(**defaults)
    return MailboxRecord(
        mailbox=mailbox,  # type: ignore[arg-type]
        smtp_host="smtp.acme.test",
        smtp_port=465,
        imap_host="imap.acme.test",
        imap_port=993,
    )


def test_every_layout_names_known_sources_and_unique_headers():
    for layout in LAYOUTS.values():
        assert len(set(layout.header)) == len(layout.header), layout.name
        for _, source in layout.columns:
            assert source is None or source in SOURCES, (layout.name, source)


def test_password_never_neutralised_other_text_is():
    record = _record(display_name="=cmd", signature="@evil")
    row = dict(
        zip(LAYOUTS["smartlead"].header, layout_row(LAYOUTS["smartlead"], record), strict=True)
    )
    assert row["password"] == "=Pass-Word-123"
    assert row["from_name"] == "'=cmd"
    assert row["signature"] == "'@evil"


def test_quoting_round_trips_commas_quotes_and_newlines():
    name = 'Doe, "JJ"\nJr.'
    (part,) = render_parts(LAYOUTS["reply.io"], [_record(display_name=name)])
    text = part.decode("utf-8")
    assert text.endswith("\r\n") and not text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[1][2] == name
    assert rows[1][6] == "TRUE"  # SMTP SSL on 465


def test_split_by_rows_and_by_bytes():
    layout = Layout("t", (("Email", "email"), ("Sig", "signature")), max_rows=2, max_bytes=60)
    records = [_record(address=f"u{i}@a.test") for i in range(5)]
    parts = render_parts(layout, records)
    assert [len(list(csv.reader(io.StringIO(p.decode())))) - 1 for p in parts] == [2, 2, 1]
    big = [_record(signature="x" * 40), _record(signature="y" * 40)]
    assert len(render_parts(layout, big)) == 2  # 2 rows fit the count but not 60 bytes


def test_no_records_still_gives_the_header():
    (part,) = render_parts(LAYOUTS["instantly"], [])
    assert next(csv.reader(io.StringIO(part.decode()))) == LAYOUTS["instantly"].header


def test_zip_names_parts_in_order():
    archive = zipfile.ZipFile(io.BytesIO(zip_parts([b"a", b"b"], stem="x")))
    assert archive.namelist() == ["x-part-01-of-2.csv", "x-part-02-of-2.csv"]
    assert archive.read("x-part-02-of-2.csv") == b"b"
