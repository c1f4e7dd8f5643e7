"""Start-up checks (gateway/ops/startup.py): ports, the embedded-mode rule, the database probe."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest

from gateway.config.settings import Settings
from gateway.ops.startup import (
    PortClaim,
    StartupError,
    claim_ports,
    database_problem,
    embedded_problems,
    missing_modules,
    port_problem,
    route_problems,
    secret_problems,
)
from tests.support.services import free_port

UNSET = "error: GATEWAY_DATABASE_URL and GATEWAY_REDIS_URL are not set"


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_claimed_ports_are_held_until_closed() -> None:
    port = free_port()
    held = claim_ports([PortClaim(port, "the gateway's", "--port")])
    try:
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
    finally:
        held["--port"].close()


def test_every_busy_port_is_named_and_nothing_stays_held() -> None:
    with _listening() as a, _listening() as b:
        free, busy_a, busy_b = free_port(), a.getsockname()[1], b.getsockname()[1]
        claims = [PortClaim(busy_a, "the gateway's", "--port"),
                  PortClaim(free, "the status port's", "--status-port"),
                  PortClaim(busy_b, "the admin UI's", "--admin-port")]
        with pytest.raises(StartupError) as caught:
            claim_ports(claims, ["error: something else first"])
    assert caught.value.lines == [
        "error: something else first",
        f"error: port {busy_a} is in use (the gateway's; change it with --port)",
        f"error: port {busy_b} is in use (the admin UI's; change it with --admin-port)",
    ]
    with socket.socket() as again:  # the free one was let go when the others failed
        again.bind(("127.0.0.1", free))


def test_problems_alone_refuse_and_let_the_ports_go() -> None:
    port = free_port()
    with pytest.raises(StartupError) as caught:
        claim_ports([PortClaim(port, "the gateway's", "--port")], ["x.yaml:3: bad"])
    assert caught.value.lines == ["x.yaml:3: bad"]
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))


def test_a_port_given_twice() -> None:
    port = free_port()
    with pytest.raises(StartupError) as caught:
        claim_ports([PortClaim(port, "the gateway's", "--port"),
                     PortClaim(port, "the status port's", "--status-port")])
    assert caught.value.lines == [
        f"error: port {port} is given twice (--port and --status-port; change one of them)"]


def test_port_problems_say_what_to_change() -> None:
    claim = PortClaim(80, "the gateway's", "--port", "0.0.0.0")  # noqa: S104
    assert port_problem(claim, OSError(errno.EACCES, "Permission denied")) == (
        "port 80 needs privileges this user does not have (the gateway's; change it with --port)")
    assert port_problem(PortClaim(8080, "the gateway's", "--port", "192.0.2.1"),
                        OSError(errno.EADDRNOTAVAIL, "Cannot assign")) == (
        "address 192.0.2.1 is not an address of this machine (change it with --host)")
    with pytest.raises(StartupError) as caught:
        claim_ports([PortClaim(free_port(), "the gateway's", "--port", "192.0.2.1")])
    assert caught.value.lines == [
        "error: address 192.0.2.1 is not an address of this machine (change it with --host)"]


def test_serve_and_admin_refuse_embedded_mode_in_a_container(tmp_path: Path) -> None:
    marker = tmp_path / ".dockerenv"
    marker.write_text("")
    settings = Settings(data_dir=tmp_path / "data")
    for command in ("serve", "admin"):
        assert embedded_problems(settings, command, markers=[marker]) == [
            f"{UNSET}: `gateway {command}` in a container needs your PostgreSQL and Redis "
            "(embedded mode is for gateway dev)"]
    # gateway dev, and the ops commands beside it, use embedded mode in a container too.
    for command in ("dev", "keys", "users", "migrate"):
        assert embedded_problems(settings, command, markers=[marker]) == []
    no_marker = [tmp_path / "absent"]
    assert embedded_problems(settings, "serve", markers=no_marker) == []
    with_urls = settings.replace(database_url="postgresql://h/db", redis_url="redis://h")
    assert embedded_problems(with_urls, "serve", markers=[marker]) == []
    assert not (tmp_path / "data").exists()  # checked, not created


def test_an_unwritable_data_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for folder in (tmp_path / "file", tmp_path / "file" / "deeper" / "data"):
        [line] = embedded_problems(Settings(data_dir=folder), "keys", markers=[])
        assert line == (f"{UNSET}, and embedded mode cannot use its data folder: "
                        f"GATEWAY_DATA_DIR {folder} is not writable (Not a directory); set "
                        "GATEWAY_DATA_DIR to a writable folder, or set both URLs")


def test_missing_modules() -> None:
    assert missing_modules(["json", "no_such_module_for_keygate"]) == [
        "no_such_module_for_keygate"]


def test_secrets_are_required_with_urls_only() -> None:
    with_urls = Settings(database_url="postgresql://h/db", redis_url="redis://h")
    assert secret_problems(with_urls) == ["error: GATEWAY_SECRET_KEY is not set",
                                          "error: GATEWAY_KEY_PEPPER is not set"]
    assert secret_problems(Settings()) == []  # embedded: gateway dev's own


def test_route_problems_are_the_loaders_lines(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("permissions: {read: Read}\nupstreams: {default: 'http://x:1'}\n"
                      "routes:\n  - {path: /a, methods: [FETCH], public: true}\n")
    assert route_problems(Settings(routes_path=routes)) == [
        f"{routes}:4: routes[0].methods[0]: unknown method 'FETCH'"]
    assert route_problems(Settings(routes_path=tmp_path / "none.yaml"))[0].startswith(
        str(tmp_path / "none.yaml"))


def test_database_problem_hides_the_password() -> None:
    port = free_port()
    line = database_problem(f"postgresql://u:PASSWORD@127.0.0.1:{port}/db", 2.0)
    assert line == (f"GATEWAY_DATABASE_URL (postgresql://u:***@127.0.0.1:{port}/db) could not "
                    "be reached: Connection refused")
