"""Mailbox CSV exports for outreach tools (SmartLead, Instantly, Reply.io, Woodpecker, ...).

layouts  the one table of layouts: each platform's header row and where each cell comes from
writer   the rules every export follows: UTF-8, RFC 4180 quoting, TRUE/FALSE, empty unknowns,
         formula-injection neutralisation, splitting into parts for size-limited importers
selectors export_build: the caller's mailboxes through a layout, as one or more CSV files

A plain package, not a Django app: it owns no models.
"""
