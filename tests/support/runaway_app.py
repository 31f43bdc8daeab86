"""A WSGI app with a request that never ends, to test the web server's request timeout.

`/spin` loops for ever (as password generation did in issue 8), `/pid` answers with the
worker's process id.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/spin":
        while True:  # pure Python, holding its thread, as a runaway view does
            pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
