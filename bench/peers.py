"""Throw-away C peers for same-run comparisons: Postfix, OpenDKIM and Dovecot instances.

Each instance lives in its own temporary directory (its config, queue, sockets, logs), listens
only on its own 127.x.y.z address, and is stopped and removed afterwards. Nothing here reads or
writes /etc/postfix, /etc/dovecot or /etc/opendkim, or starts the system services: Postfix runs
as `postfix -c DIR`, Dovecot as `dovecot -c FILE`, OpenDKIM as `opendkim -x FILE`. Needs root
(Postfix and Dovecot drop privileges to their own users) and the Debian packages `postfix`,
`opendkim`, `dovecot-imapd`.
"""

from __future__ import annotations

import crypt  # SHA512-CRYPT hashes for the passwd-file (deprecated module, in 3.11 still)
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

# Addresses the peers listen on, clear of those the bench sinks use (127.66.0.x).
POSTFIX_ADDRESS = "127.77.0.2"
DOVECOT_ADDRESS = "127.77.0.3"
OPENDKIM_ADDRESS = "127.77.0.4"


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"{what} needs root (Postfix and Dovecot drop to their own users)")


def require_programs(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise SystemExit(
            f"missing {', '.join(missing)}: apt-get install -y postfix opendkim dovecot-imapd"
        )


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_listening(host: str, port: int, *, timeout: float = 30, what: str = "") -> None:
    """Poll until a TCP connect to host:port succeeds (bounded: raises after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what or 'peer'} not listening on {host}:{port}") from None
            time.sleep(0.05)


def pids_of(pattern_dir: Path) -> list[int]:
    """Live processes whose command line or cwd names `pattern_dir` (an instance's dir)."""
    found = []
    key = str(pattern_dir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if key in cmdline:
            found.append(int(entry.name))
    return found


def rss_kib(pids: Iterable[int]) -> int:
    """Summed VmRSS of live processes (the ones gone meanwhile count 0)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def children_of(root_pids: Iterable[int]) -> list[int]:
    """root_pids and all their descendants (from /proc/*/stat's ppid field)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat[1])
    wanted = set(root_pids)
    changed = True
    while changed:
        changed = False
        for pid, ppid in parent.items():
            if ppid in wanted and pid not in wanted:
                wanted.add(pid)
                changed = True
    return sorted(wanted)


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of live processes, including their reaped children
    (fields 14-17 of /proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def rsa2048_sign_ms() -> float:
    """One RSA-2048 signature, as `openssl speed rsa2048` times it (the machine's yardstick)."""
    out = subprocess.run(
        ["openssl", "speed", "-seconds", "1", "rsa2048"], capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("rsa 2048"):
            return float(line.split()[3].rstrip("s")) * 1000
    return float("nan")


# -- Postfix -----------------------------------------------------------------------------------

_MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """One private Postfix instance: `postfix -c <dir>/etc`, queue under <dir>/queue.

    `smtpd` lines are master.cf entries for the listeners (each `ADDR:PORT inet ... smtpd
    -o ...`); `main` adds to or overrides the base main.cf settings. Queue files are fsync'd
    by cleanup(8) before smtpd answers 250, as in any Postfix (durable ingest)."""

    def __init__(self, main: dict[str, str], smtpd: list[str], *, address: str = POSTFIX_ADDRESS):
        self.dir = Path(tempfile.mkdtemp(prefix="mailplane-peer-postfix-"))
        self.dir.chmod(0o755)
        self.etc = self.dir / "etc"
        self.etc.mkdir()
        self.address = address
        settings = {
            "queue_directory": str(self.dir / "queue"),
            "data_directory": str(self.dir / "data"),
            "meta_directory": "/etc/postfix",  # read-only: postfix-files, dynamicmaps.cf
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.bench.local",
            "mydestination": "",
            "relayhost": "",
            "alias_maps": "",
            "alias_database": "",
            # Postfix checks inet_interfaces against the configured interface addresses, and
            # 127.77.x is only routed, not configured; master.cf binds each listener to its
            # own address anyway.
            "inet_interfaces": "all",
            "inet_protocols": "ipv4",
            "smtp_bind_address": address,
            "mynetworks": "127.0.0.0/8",
            "maillog_file": str(self.dir / "maillog"),
            "maillog_file_prefixes": str(self.dir),
            "compatibility_level": "3.6",
            "default_process_limit": "200",
            "in_flow_delay": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtpd_tls_session_cache_database": "",
            "smtp_tls_session_cache_database": "",
            "message_size_limit": str(50 * 1024 * 1024),
            "biff": "no",
            "smtputf8_enable": "no",
            **main,
        }
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        (self.etc / "master.cf").write_text(_MASTER_CF + "".join(line + "\n" for line in smtpd))
        (self.dir / "queue").mkdir(mode=0o755)
        (self.dir / "data").mkdir(mode=0o700)
        shutil.chown(self.dir / "data", "postfix", "postfix")
        self.run("postfix", "set-permissions")  # creates the queue's subdirectories

    def run(self, *argv: str, check: bool = True) -> str:
        """Run a Postfix command against this instance (`-c <etc>` after the program)."""
        proc = subprocess.run(
            [argv[0], "-c", str(self.etc), *argv[1:]], capture_output=True, text=True, check=False
        )
        if check and proc.returncode:
            # Postfix logs to stderr only on a terminal; otherwise see maillog_file.
            raise RuntimeError(
                f"{' '.join(argv)} failed: {proc.stderr or proc.stdout or ''} "
                f"(run `script -qc 'postfix -c {self.etc} check' /dev/null` to see why)"
            )
        return proc.stdout

    def start(self) -> Postfix:
        self.run("postfix", "start")
        return self

    def stop(self) -> None:
        self.run("postfix", "stop", check=False)
        deadline = time.monotonic() + 20
        pid_file = self.dir / "queue" / "pid" / "master.pid"
        while pid_file.exists() and time.monotonic() < deadline:
            try:
                os.kill(int(pid_file.read_text().split()[0]), 0)
            except (OSError, ValueError):
                break
            time.sleep(0.1)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def pids(self) -> list[int]:
        pid_file = self.dir / "queue" / "pid" / "master.pid"
        try:
            master = int(pid_file.read_text().split()[0])
        except (OSError, ValueError):
            return []
        return children_of([master])

    def queued(self) -> int:
        """Messages in any queue (incoming, active, deferred, hold), counted from the files."""
        total = 0
        for name in ("maildrop", "incoming", "active", "deferred", "hold"):
            base = self.dir / "queue" / name
            if base.exists():
                total += sum(len(files) for _, _, files in os.walk(base))
        return total

    def wait_queued(self, count: int, *, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.queued() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Postfix holds only {self.queued()} of {count} messages")
            time.sleep(0.1)

    def wait_empty(self, *, timeout: float = 600, poll: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while self.queued():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Postfix queue still holds {self.queued()} messages")
            time.sleep(poll)


# -- OpenDKIM --------------------------------------------------------------------------------


class OpenDKIM:
    """OpenDKIM as a signing milter for `domain` with `selector`, from its own config file,
    on inet:<port>@OPENDKIM_ADDRESS (relaxed/relaxed, rsa-sha256: what Mailplane signs)."""

    def __init__(self, *, domain: str, selector: str, private_key_pem: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mailplane-peer-opendkim-"))
        self.dir.chmod(0o755)
        self.port = free_port(OPENDKIM_ADDRESS)
        self.socket = f"inet:{self.port}@{OPENDKIM_ADDRESS}"  # OpenDKIM's spelling
        self.milter = f"inet:{OPENDKIM_ADDRESS}:{self.port}"  # Postfix's (smtpd_milters)
        key = self.dir / "dkim.key"
        key.write_text(private_key_pem)
        shutil.chown(key, "opendkim", "opendkim")
        key.chmod(0o600)
        self.conf = self.dir / "opendkim.conf"
        self.conf.write_text(
            f"Mode s\nDomain {domain}\nSelector {selector}\nKeyFile {key}\n"
            "Canonicalization relaxed/relaxed\nSignatureAlgorithm rsa-sha256\n"
            f"Socket {self.socket}\nPidFile {self.dir / 'opendkim.pid'}\n"
            "UserID opendkim:opendkim\nBackground no\nSyslog no\nUMask 007\n"
            "InternalHosts 0.0.0.0/0\nRequireSafeKeys no\nOversignHeaders From\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OpenDKIM:
        self.proc = subprocess.Popen(
            ["opendkim", "-x", str(self.conf), "-f"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "opendkim.log", "wb"),  # noqa: SIM115
        )
        wait_listening(OPENDKIM_ADDRESS, self.port, what="opendkim")
        return self

    def pids(self) -> list[int]:
        return children_of([self.proc.pid]) if self.proc else []

    def remove(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- Dovecot ---------------------------------------------------------------------------------


class Dovecot:
    """A private Dovecot (`dovecot -c <dir>/dovecot.conf -F`): Maildir under <dir>/mail/<user>,
    users from a passwd-file (SHA512-CRYPT, auth cache on, as a verification cache like ours),
    all mail owned by `nobody`. imap-login in Dovecot's documented high-performance mode
    (service_count = 0, one process per CPU) since the bench opens thousands of connections;
    hibernation of IDLE sessions on after 5 s (imap_hibernate_timeout), as large sites run it.
    `auth_socket` is a SASL socket Postfix can authenticate through (smtpd_sasl_type = dovecot).
    """

    def __init__(
        self,
        *,
        users: dict[str, str],
        cert: Path,
        key: Path,
        imaps_port: int = 0,
        address: str = DOVECOT_ADDRESS,
        protocols: str = "imap",
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mailplane-peer-dovecot-"))
        self.dir.chmod(0o755)
        self.address = address
        self.protocols = protocols
        self.port = imaps_port or free_port(address)
        nobody = pwd.getpwnam("nobody")
        self.uid, self.gid = nobody.pw_uid, nobody.pw_gid
        (self.dir / "mail").mkdir()
        os.chown(self.dir / "mail", self.uid, self.gid)
        lines = [
            f"{u}:{crypt.crypt(p, crypt.mksalt(crypt.METHOD_SHA512))}::::::"
            for u, p in users.items()
        ]
        (self.dir / "users").write_text("\n".join(lines) + "\n")
        self.auth_socket = self.dir / "run" / "auth-client"
        cpus = os.cpu_count() or 1
        (self.dir / "dovecot.conf").write_text(
            f"""
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
protocols = {protocols}
listen = {address}
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_cache_size = 10M
auth_cache_ttl = 1 hour
passdb {{
  driver = passwd-file
  args = scheme=SHA512-CRYPT {self.dir}/users
}}
userdb {{
  driver = static
  args = uid={self.uid} gid={self.gid} home={self.dir}/mail/%u
}}
mail_location = maildir:{self.dir}/mail/%u
first_valid_uid = 1
mail_fsync = optimized
default_process_limit = 4000
default_client_limit = 8000
default_vsz_limit = 1G
imap_hibernate_timeout = 5s
protocol imap {{
  mail_max_userip_connections = 100000
}}
service anvil {{
  client_limit = 10000
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {self.port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = {cpus}
  client_limit = 8000
}}
service imap {{
  process_limit = 4000
  unix_listener imap-master {{
    mode = 0666
  }}
}}
service imap-hibernate {{
  unix_listener imap-hibernate {{
    mode = 0666
  }}
  client_limit = 8000
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
  client_limit = 8000
}}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def maildir(self, user: str, folder: str = "INBOX") -> Path:
        """Create (owned by nobody) and return the Maildir of `user`'s `folder`."""
        root = self.dir / "mail" / user
        path = root if folder == "INBOX" else root / f".{folder}"
        for sub in (root, path, path / "new", path / "cur", path / "tmp"):
            sub.mkdir(exist_ok=True)
            os.chown(sub, self.uid, self.gid)
        return path

    def deliver(self, user: str, raw: bytes, *, name: str | None = None) -> Path:
        """Maildir delivery (tmp, fsync, rename into new/): what maildir_deliver does for us."""
        box = self.maildir(user)
        name = name or f"{time.time_ns()}.P{os.getpid()}.bench"
        tmp = box / "tmp" / name
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chown(tmp, self.uid, self.gid)
        final = box / "new" / name
        os.rename(tmp, final)
        return final

    def start(self) -> Dovecot:
        self.proc = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.dir / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr.log", "wb"),  # noqa: SIM115
        )
        if "imap" in self.protocols:
            wait_listening(self.address, self.port, what="dovecot")
        else:  # auth only (SASL for Postfix): wait for its socket
            deadline = time.monotonic() + 30
            while not self.auth_socket.exists():
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"dovecot did not start: see {self.dir}/dovecot.log")
                time.sleep(0.05)
        return self

    def pids(self) -> list[int]:
        return children_of([self.proc.pid]) if self.proc else []

    def remove(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
