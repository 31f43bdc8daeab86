"""`mailplane serve`'s web server as it is started: request timeout, control socket, and
owner-only state (issue 8 defects 4 and 9).
"""

from __future__ import annotations

import argparse
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mailplane.cli import serve
from tests.support.fixtures import wait_for
from tests.support.http_client import http_call
from tests.support.live_service import free_port, live_service

ROOT = Path(__file__).resolve().parents[2]


def _web_command(port: int, *, threads: int) -> list[str]:
    """The gunicorn command `serve` runs, serving the runaway test app instead."""
    argv = serve._web(argparse.Namespace(host="127.0.0.1", port=port, web_workers=1))
    argv[argv.index("mailplane.wsgi:application")] = "tests.support.runaway_app:application"
    argv[argv.index("--threads") + 1] = str(threads)
    return argv


def _wait_for_pid(base: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return http_call(base, "GET", "/pid", timeout=2).body.decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def _served_runaway_app(tmp_path: Path, **timeouts: str) -> Iterator[str]:
    """gunicorn as `serve` runs it (one worker, two threads) serving the runaway app."""
    port = free_port()
    env = {**os.environ, **timeouts, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    with (tmp_path / "gunicorn.log").open("wb") as log:
        proc = subprocess.Popen(
            _web_command(port, threads=2), env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=40)


@pytest.mark.timeout(90)
def test_a_runaway_request_cannot_hold_a_worker(tmp_path):
    """Both threads of the only worker spin for ever; without a request timeout the next
    request would wait for ever too. The worker retires and a fresh one answers."""
    with _served_runaway_app(tmp_path, MAILPLANE_HTTP_REQUEST_TIMEOUT="1") as base:
        first_pid = _wait_for_pid(base, timeout=30)
        outcomes: list[str] = []

        def spin() -> None:
            try:
                reply = http_call(base, "GET", "/spin", timeout=30)
                outcomes.append(f"answered {reply.status}")
            except (OSError, ConnectionError) as exc:  # the retired worker closes it
                outcomes.append(type(exc).__name__)

        spinners = [threading.Thread(target=spin) for _ in range(2)]
        for thread in spinners:
            thread.start()
        time.sleep(0.3)  # both threads of the worker are now taken
        # A request the stuck worker had already accepted is lost with it (reset), as
        # with any worker that dies; the client's retry is served by the fresh worker.
        started = time.monotonic()
        pid = None
        while pid is None:
            assert time.monotonic() - started < 10, "no worker answered within 10 s"
            try:
                pid = http_call(base, "GET", "/pid", timeout=3).body.decode()
            except (OSError, ConnectionError):
                time.sleep(0.1)
        assert pid != first_pid
        for thread in spinners:
            thread.join(10)
        assert len(outcomes) == 2 and not any(o.startswith("answered 2") for o in outcomes)
    assert "retiring worker" in (tmp_path / "gunicorn.log").read_text()


def _stall(base: str, head: bytes) -> socket.socket:
    """A client that sends `head` and then nothing, keeping the connection open."""
    port = int(base.rsplit(":", 1)[1])
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    client.sendall(head)
    return client


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("head", "what"),
    [
        (b"GET /pid HTTP/1.1\r\nHost: x\r\n", "a request head that never ends"),
        (b"GET /p", "a request line that never ends"),
        (
            b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc",
            "a body that never comes",
        ),
    ],
)
def test_slow_clients_cannot_hold_the_threads(tmp_path, head, what):
    """Four stalled clients on a worker with two threads: without read timeouts every
    thread waits for them and nobody else is served (slowloris). Their connections are
    closed, and the same worker serves the next client."""
    with _served_runaway_app(
        tmp_path, MAILPLANE_HTTP_READ_TIMEOUT="1", MAILPLANE_HTTP_REQUEST_TIMEOUT="2"
    ) as base:
        first_pid = _wait_for_pid(base, timeout=30)
        stalled = [_stall(base, head) for _ in range(4)]
        try:
            reply = http_call(base, "GET", "/pid", timeout=15)
            assert reply.status == 200, what
            assert reply.seconds < 10, (what, reply.seconds)
            assert reply.body.decode() == first_pid  # freed threads, not a new worker
            for client in stalled:
                assert _closed_by_server(client), what
        finally:
            for client in stalled:
                client.close()


def _closed_by_server(client: socket.socket) -> bool:
    try:
        return client.recv(100) == b""
    except ConnectionResetError:
        return True


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.timeout(180)
def test_control_sockets_live_in_each_data_directory(tmp_path):
    """gunicorn's default control socket is one per user (~/.gunicorn/gunicorn.ctl), and
    each instance removes the last one's: two instances fought over it."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": ""}
    with (
        live_service(tmp_path / "one", "web", env=env) as (first, _),
        live_service(tmp_path / "two", "web", env=env) as (second, _),
    ):
        for svc in (first, second):
            control = svc.data_dir / f"gunicorn-{svc.ports['HTTP']}.ctl"
            # The arbiter binds its control socket after it starts serving HTTP, so the
            # port being open does not mean the socket is there yet.
            wait_for(control.is_socket, timeout=30, what=f"{control} to be a socket")
            assert _mode(control) == 0o600
            shown = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "gunicorn.ctl.cli",
                    "-s",
                    str(control),
                    "-c",
                    "show workers",
                    "-j",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert shown.returncode == 0, shown.stderr
            assert "pid" in shown.stdout
        assert not (home / ".gunicorn").exists()


@pytest.mark.timeout(180)
def test_state_is_private_to_its_owner(tmp_path):
    """The SQLite database (raw mail, password hashes), the key, the queue: 0600 files in
    0700 directories, whatever the umask of the shell that started `mailplane`."""
    old = os.umask(0o022)  # what most shells have; the children inherit it
    try:
        with live_service(tmp_path, "web,worker") as (svc, _):
            key = svc.cli("org", "create", "--name", "Private", "--email", "o@p.test")
            key = key.split()[-1]
            project = http_call(
                svc.base, "POST", "/api/projects/", key=key, json_body={"name": "p"}
            )
            assert project.status == 201, project.body
            seen = []
            for path in [svc.data_dir, *svc.data_dir.rglob("*")]:
                try:
                    if path.is_socket():
                        continue  # gunicorn's control socket: checked above (0600)
                    mode = _mode(path)
                except FileNotFoundError:
                    continue  # SQLite's -shm/-wal files come and go with connections
                seen.append(path.name)
                assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
            assert {"mailplane.sqlite3", "secret.key", "queue"} <= set(seen), seen
    finally:
        os.umask(old)


def test_private_state_tightens_an_existing_install(tmp_path):
    """Files made before the mask (an older install) are made private when serve starts."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    database = data / "mailplane.sqlite3"
    for path in (database, data / "mailplane.sqlite3-wal", data / "secret.key"):
        path.write_text("x")
        path.chmod(0o644)
    old = os.umask(0o022)
    try:
        serve.private_state(data_dir=data, sqlite_path=database)
        assert os.umask(0o022) == serve.PRIVATE_UMASK
    finally:
        os.umask(old)
    assert _mode(data) == 0o700
    for name in ("mailplane.sqlite3", "mailplane.sqlite3-wal", "secret.key"):
        assert _mode(data / name) == 0o600


@pytest.mark.timeout(60)
def test_the_servers_own_refusals_are_in_the_error_shape(tmp_path):
    """gunicorn refuses some requests before the application sees them; the client gets
    the API's error shape for those too, not gunicorn's HTML page."""
    with _served_runaway_app(tmp_path) as base:
        _wait_for_pid(base, timeout=30)
        for path, headers, status in [
            ("/" + "a" * 5000, {}, 414),  # request line over limit_request_line (4094)
            ("/pid", {"X-Bad": "a\x7fb"}, 400),  # DEL is not allowed in a field value
        ]:
            reply = http_call(base, "GET", path, headers=headers)
            assert reply.status == status
            assert reply.headers["content-type"] == "application/json"
            error = reply.json()["error"]
            assert set(error) == {"code", "message", "details"}
            assert error["details"]["request"] == [error["message"]]
