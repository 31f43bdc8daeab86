"""Outbound delivery: claim due queue rows, run each through a checklist, hand it to a provider.

Read top to bottom: `claims` (the queue manager's atomic, leased claims), `processor` (the
checklist: suppression, local delivery, route, signing, send, record), `providers` (native
MX, Mailgun, SendGrid, SMTP smarthost behind one Protocol), `retry` (bounded backoff),
`dsn` (RFC 3464 reports), `bounces` (VERP addresses and inbound DSN matching), `worker`
(the long-running asyncio service, `python -m mailplane.delivery`).
"""
