"""Ending a long-running service process once its orderly shutdown is done."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def exit_now(code: int = 0) -> NoReturn:
    """Exit without the interpreter's teardown.

    Call it only after the service has stopped listening, finished what it acknowledged and
    closed its connections: what is left is freeing Django's, Celery's and psycopg's module
    graph, which takes about a second on a busy machine and would push a stop past the 2 s
    that `mailplane serve` allows before it kills a service (cli/serve.py stop_children).
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
