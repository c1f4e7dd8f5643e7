"""deploy/ trusts exact proxy addresses only, and its haproxy replaces X-Forwarded-For.

A trusted range lets anything inside it forge a client's address (a client that sends
`X-Forwarded-For: 10.9.9.9` passes an allowlist for 10.9.9.9 when 10.0.0.0/8 is trusted), and
a balancer that appends to X-Forwarded-For hands the client's own entries on. The last test
runs the real haproxy with deploy/haproxy/haproxy.cfg's frontends in front of a recorder.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.haproxy import haproxy_binary
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
HAPROXY_CFG = DEPLOY / "haproxy" / "haproxy.cfg"
TEXT_SUFFIXES = {".yml", ".yaml", ".cfg", ".md", ".example", ".json", ".py", ""}
_ASSIGNMENT = re.compile(r"GATEWAY_TRUSTED_PROXIES\s*[:=]\s*(.*)")
_DEFAULT = re.compile(r"\$\{[A-Z_]+:?-([^}]*)\}")
_CIDR = re.compile(r"(?<![\w.:])(\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F]*:[0-9a-fA-F:]+)/(\d{1,3})\b")


def deploy_text_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*")
                  if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.name == "smoke"))


def compose() -> dict[str, Any]:
    document = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def wider_than_one_address(value: str) -> list[str]:
    """The entries of a GATEWAY_TRUSTED_PROXIES value that are ranges, not one address.

    A `${VAR:-default}` is read as its default; an entry that is no network is reported too.
    """
    value = _DEFAULT.sub(lambda m: m.group(1), value.strip().strip("\"'"))
    wide = []
    for item in value.replace(",", " ").split():
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            wide.append(f"{item} (not an address)")
            continue
        if network.prefixlen != network.max_prefixlen:
            wide.append(item)
    return wide


def test_the_checker_sees_ranges() -> None:
    assert wider_than_one_address("${GATEWAY_TRUSTED_PROXIES:-172.16.0.0/12}") == [
        "172.16.0.0/12"]
    assert wider_than_one_address("10.0.0.0/8") == ["10.0.0.0/8"]
    assert wider_than_one_address('"10.1.2.3/32, fd00::1/128"') == []
    assert wider_than_one_address("fd00::/64") == ["fd00::/64"]


def test_no_trusted_proxy_setting_in_deploy_is_a_range() -> None:
    found = {}
    for path in deploy_text_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = _ASSIGNMENT.search(line)
            if match and not line.lstrip().startswith("#"):
                found[f"{path.relative_to(ROOT)}:{number}"] = match.group(1)
    assert found, "no GATEWAY_TRUSTED_PROXIES setting found in deploy/"
    wide = {where: wider_than_one_address(value) for where, value in found.items()}
    assert not {where: w for where, w in wide.items() if w}, wide


def test_no_range_anywhere_in_deploy_but_the_compose_network() -> None:
    """A private range written anywhere in deploy/ (a comment, a doc, a manifest) is the seed
    of a copied trusted range: the only ranges allowed are the compose network's own."""
    ipam = compose()["networks"]["default"]["ipam"]["config"]
    allowed = {entry[key] for entry in ipam for key in ("subnet", "ip_range") if key in entry}
    ranges = {}
    for path in deploy_text_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for address, prefix in _CIDR.findall(line):
                try:
                    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
                except ValueError:
                    continue
                text = f"{address}/{prefix}"
                if network.prefixlen != network.max_prefixlen and text not in allowed:
                    ranges[f"{path.relative_to(ROOT)}:{number}"] = text
    assert not ranges, ranges


def test_compose_trusts_exactly_haproxy() -> None:
    document = compose()
    services = document["services"]
    subnet = ipaddress.ip_network(document["networks"]["default"]["ipam"]["config"][0]["subnet"])
    handed_out = ipaddress.ip_network(
        document["networks"]["default"]["ipam"]["config"][0]["ip_range"])
    haproxy_ip = ipaddress.ip_address(
        services["haproxy"]["networks"]["default"]["ipv4_address"])
    assert haproxy_ip in subnet
    # Docker hands ip_range out to the other containers: haproxy's address must lie outside.
    assert haproxy_ip not in handed_out
    for name in ("gateway", "admin"):
        assert services[name]["environment"]["GATEWAY_TRUSTED_PROXIES"] == f"{haproxy_ip}/32"
    # The admin UI is reached through haproxy only, so its client IP is haproxy's header.
    assert "ports" not in services["admin"]
    published = " ".join(services["haproxy"]["ports"])
    assert ":8080" in published and ":8081" in published


def test_kubernetes_ships_no_trusted_range() -> None:
    configmap = yaml.safe_load((DEPLOY / "kubernetes" / "settings-configmap.yaml").read_text())
    assert wider_than_one_address(configmap["data"]["GATEWAY_TRUSTED_PROXIES"]) == []


def haproxy_sections(text: str) -> list[tuple[str, list[str]]]:
    """(header, lines) of each section, comments and blank lines left out."""
    sections: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not raw[0].isspace():
            sections.append((line.strip(), []))
        else:
            sections[-1][1].append(line.strip())
    return sections


def test_haproxy_replaces_rather_than_appends() -> None:
    sections = haproxy_sections(HAPROXY_CFG.read_text())
    everything = [line for _, lines in sections for line in lines]
    assert not [line for line in everything if line.startswith("option forwardfor")]
    frontends = {header: lines for header, lines in sections if header.startswith("frontend")}
    assert set(frontends) == {"frontend keygate", "frontend admin"}
    for header, lines in frontends.items():
        rules = [line for line in lines if line.startswith("http-request")]
        assert "http-request del-header X-Forwarded- -m beg" in rules, header
        assert "http-request set-header X-Forwarded-For %[src]" in rules, header
        assert any(r.startswith("http-request set-header X-Forwarded-Proto") for r in rules)
        # Dropping comes first, or it would drop what haproxy just set.
        first_set = next(i for i, r in enumerate(rules) if "set-header" in r)
        assert all(i < first_set for i, r in enumerate(rules) if "del-header" in r), header


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, list[str]]] = []

    def do_GET(self) -> None:
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        self.seen.append(headers)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[int]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def local_config(text: str, ports: dict[str, int], backend_port: int) -> str:
    """deploy's haproxy.cfg with each frontend bound to a loopback port and every backend
    replaced by the recorder; the global, defaults and frontend rules stay as shipped."""
    out = []
    for header, lines in haproxy_sections(text):
        if header.startswith("resolvers"):
            continue
        if header.startswith("global"):
            # Logging and the connection ceiling (file descriptors) are the host's business.
            lines = [line for line in lines if not line.startswith(("log ", "maxconn "))]
        if header.startswith("backend"):
            lines = [f"server recorder 127.0.0.1:{backend_port}"]
        if header.startswith("frontend"):
            port = ports[header.split()[1]]
            lines = [f"bind 127.0.0.1:{port}" if line.startswith("bind ") else line
                     for line in lines]
        out.append(header)
        out.extend(f"    {line}" for line in lines)
    return "\n".join(out) + "\n"


def test_haproxy_drops_a_forged_x_forwarded_for(tmp_path: Path, recorder: int) -> None:
    ports = {"keygate": free_port(), "admin": free_port()}
    config = tmp_path / "haproxy.cfg"
    config.write_text(local_config(HAPROXY_CFG.read_text(), ports, recorder))
    process = subprocess.Popen([haproxy_binary(), "-db", "-f", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for name, port in ports.items():
            deadline = time.monotonic() + 10
            while True:
                try:
                    conn = HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/", headers={
                        "X-Forwarded-For": "10.9.9.9", "X-Forwarded-Proto": "https",
                        "X-Forwarded-Host": "evil.example", "X-Forwarded-Port": "443",
                        "Forwarded": "for=10.9.9.9", "X-Real-IP": "10.9.9.9"})
                    assert conn.getresponse().status == 200, name
                    conn.close()
                    break
                except ConnectionError:
                    assert process.poll() is None and time.monotonic() < deadline
                    time.sleep(0.05)
            seen = _Recorder.seen[-1]
            assert seen["x-forwarded-for"] == ["127.0.0.1"], (name, seen)
            assert seen["x-forwarded-proto"] == ["http"], (name, seen)
            assert seen["x-forwarded-host"] == [f"127.0.0.1:{port}"], (name, seen)
            for dropped in ("x-forwarded-port", "forwarded", "x-real-ip"):
                assert dropped not in seen, (name, seen)
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode(errors="replace")
    assert process.returncode in (0, -15, 143), output
