"""Needs: nothing but the package: `gateway dev` brings up embedded PostgreSQL and Redis.

What `make run` runs, on free ports and a fresh data folder, while the default ports are held
by someone else (a `make run` beside `make test`); then `gateway users create` and
`gateway keys create` in a second process attach to its servers, as a user would do beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import psutil
import pytest

from tests.support.services import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORTS = (8080, 8081, 8082, 9000, 1025)  # gateway, admin UI, status, sandbox, mail sink


@pytest.fixture
def default_ports_taken() -> Iterator[None]:
    """Every default port busy: ours if free, or already someone else's (that is fine too)."""
    with contextlib.ExitStack() as held:
        for port in DEFAULT_PORTS:
            sock = held.enter_context(socket.socket())
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
                sock.listen()
        for port in DEFAULT_PORTS:
            with socket.socket() as probe, pytest.raises(OSError):
                probe.bind(("127.0.0.1", port))
        yield


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_dev_stack_on_embedded_defaults(tmp_path: Path, default_ports_taken: None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATA_DIR"] = str(tmp_path / "data")
    ports = {name: free_port() for name in ("port", "admin", "status", "sandbox", "mail")}
    log = (tmp_path / "dev.log").open("w+")
    dev = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "dev", "--port", str(ports["port"]),
         "--admin-port", str(ports["admin"]), "--status-port", str(ports["status"]),
         "--sandbox-port", str(ports["sandbox"]), "--mail-port", str(ports["mail"])],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    gateway = f"http://127.0.0.1:{ports['port']}"
    try:
        deadline = time.monotonic() + 60
        while "Keygate is running" not in (tmp_path / "dev.log").read_text():
            assert dev.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.monotonic() < deadline, "gateway dev did not start in 60 s"
            time.sleep(0.2)
        printed = (tmp_path / "dev.log").read_text()
        assert f"http://127.0.0.1:{ports['admin']}/" in printed
        assert f"smtp://127.0.0.1:{ports['mail']}" in printed
        assert f"status            http://127.0.0.1:{ports['status']}/\n" in printed

        status, body = _get(f"{gateway}/public/v1/time")
        assert status == 200 and "epoch_millis" in json.loads(body)
        # Served as `gateway serve` serves it: even the parser's refusals are the contract's.
        with socket.create_connection(("127.0.0.1", ports["port"]), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n")
            answer = b"".join(iter(lambda: raw.recv(4096), b""))
        assert answer.startswith(b"HTTP/1.1 400") or answer.startswith(b"HTTP/1.0 400")
        assert b'"error": "ILLEGAL_CHARS"' in answer and b"X-Request-Id: " in answer
        assert _get(f"http://127.0.0.1:{ports['admin']}/login")[0] == 200
        assert _get(f"http://127.0.0.1:{ports['admin']}/dev/mailbox.json")[0] == 200
        assert _get(f"http://127.0.0.1:{ports['status']}/readyz")[0] == 200
        status, body = _get(f"http://127.0.0.1:{ports['status']}/")
        assert status == 200 and b'href="/metrics"' in body

        # The sink takes mail quietly: its library's INFO lines (one per SMTP step) are not
        # what an operator of `make run` needs to read.
        message = EmailMessage()
        message["From"], message["To"] = "dev@example.com", "sink-test@example.com"
        message["Subject"] = "through the sink"
        message.set_content("hello")
        with smtplib.SMTP("127.0.0.1", ports["mail"], timeout=10) as smtp:
            smtp.send_message(message)
        mailbox = json.loads(_get(f"http://127.0.0.1:{ports['admin']}/dev/mailbox.json")[1])
        assert [m["subject"] for m in mailbox if m["to"] == "sink-test@example.com"] == [
            "through the sink"]

        def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT,
                                  env=env, input=stdin, capture_output=True, text=True,
                                  timeout=60)

        assert cli("users", "create", "--email", "dev@example.com",
                   stdin="a long password\n").returncode == 0
        made = cli("keys", "create", "--email", "dev@example.com", "--name", "bot",
                   "--permissions", "read")
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        status, body = _get(f"{gateway}/public/v1/account/balances", token)
        assert status == 200 and b"balances" in body
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(30)
        except subprocess.TimeoutExpired:
            dev.kill()
            pytest.fail("gateway dev did not stop on Ctrl-C")
    output = (tmp_path / "dev.log").read_text()
    assert dev.returncode == 0, output
    assert " INFO mail.log" not in output and "Traceback" not in output, output
    # Ctrl-C stopped the embedded servers it started (pgserver stops its server a moment later).
    deadline = time.monotonic() + 10
    while _servers_under(tmp_path / "data") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _servers_under(tmp_path / "data") == []


def _servers_under(folder: Path) -> list[str]:
    """Command lines of the processes that serve from `folder`."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if str(folder) in cmdline and "gateway.cli" not in cmdline:
            found.append(cmdline)
    return found
