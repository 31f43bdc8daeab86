"""Running Debian's rspamd for MI Shield, with a private configuration in the data
directory: the packaged rules (/etc/rspamd) plus our overrides, one scanner worker bound to
loopback, no controller, proxy or fuzzy workers, logs on the console (the supervisor's).

rspamd reads `$LOCAL_CONFDIR/local.d` and `override.d` after its own configuration
(https://rspamd.com/doc/configuration/): `--var` points those, and its state, here.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

_OVERRIDES = {
    "local.d/worker-normal.inc": 'bind_socket = "127.0.0.1:{port}";\ncount = 1;\n',
    "override.d/worker-controller.inc": "enabled = false;\n",
    "override.d/worker-proxy.inc": "enabled = false;\n",
    "override.d/worker-fuzzy.inc": "enabled = false;\n",
    "local.d/logging.inc": 'type = "console";\nlevel = "error";\n',
    # A network without a resolver for the blocklists answers nothing: give up quickly.
    "local.d/options.inc": "dns {\n  timeout = 0.5s;\n  retransmits = 1;\n}\n",
}


def rspamd_command(*, root: Path, port: int, binary: str = "rspamd") -> list[str]:
    """Write the private configuration under `root` and return the command that runs it."""
    for sub in ("local.d", "override.d", "db", "run", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, text in _OVERRIDES.items():
        (root / name).write_text(text.replace("{port}", str(port)))
    command = [binary, "--no-fork", "-c", "/etc/rspamd/rspamd.conf"]
    if os.geteuid() == 0:
        # rspamd refuses to run its workers as root unless told whom to run them as.
        user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
        command += ["--insecure", "-u", user, "-g", group]
    for name, value in (
        ("LOCAL_CONFDIR", root),
        ("DBDIR", root / "db"),
        ("RUNDIR", root / "run"),
        ("LOGDIR", root / "log"),
    ):
        command += ["--var", f"{name}={value}"]
    return command
