"""The Celery application: provisioning, DNS checks, exports and periodic jobs."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailplane.settings")

from mailplane.jobs import transport

transport.install()  # the embedded broker stops within a fraction of a second

app = Celery("mailplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
