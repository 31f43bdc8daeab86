"""A WSGI app with requests that never end, to test the web server's timeouts.

`/spin` loops for ever (as password generation did in issue 8); `/read` reads the whole
request body (a slow client makes it wait); anything else answers with the worker's
process id.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO")
    if path == "/spin":
        while True:  # pure Python, holding its thread, as a runaway view does
            pass
    if path == "/read":
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
