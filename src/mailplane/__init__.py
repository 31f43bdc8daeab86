"""Mailplane: self-hostable email infrastructure.

Control plane (Django + DRF + Celery) and data plane (asyncio SMTP/IMAP/delivery services)
share one database; see the package tree for one package per concern.
"""

from mailplane.celery import app as celery_app

__all__ = ["celery_app"]
