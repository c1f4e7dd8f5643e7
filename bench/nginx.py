"""nginx twice: the fast upstream (a small JSON answer) and the proxy_pass reference."""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from pathlib import Path

from bench.procs import Child, Server, free_port, wait_http

__all__ = ["UPSTREAM_BODY", "Nginx", "nginx_binary"]

UPSTREAM_BODY = '{"ok":true}'


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if found is None:
        raise RuntimeError("nginx is not installed (bench/setup.sh installs it)")
    return found


def _config(prefix: Path, workers: int, server: str, *, access_log: bool) -> str:
    temp = prefix / "tmp"
    # Run as root (the benchmark's case), nginx would hand its workers to `nobody`.
    user = "user root;\n" if os.geteuid() == 0 else ""
    log = f"access_log {prefix}/access.log;" if access_log else "access_log off;"
    return f"""{user}daemon off;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    {log}
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
{server}
}}
"""


class Nginx(Server):
    """One nginx master in the foreground, its config and logs in `prefix`."""

    def __init__(self, name: str, prefix: Path, workers: int, server: str, *,
                 access_log: bool, port: int, cpus: Collection[int] | None = None) -> None:
        self.name = name
        self.port = port
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "tmp").mkdir(exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(_config(prefix, workers, server, access_log=access_log))
        self.child = Child(name, [nginx_binary(), "-c", str(conf), "-p", str(prefix)],
                           prefix / "stdout.log", cpus=cpus)
        wait_http(f"{self.url}/", child=self.child)

    @classmethod
    def upstream(cls, prefix: Path, workers: int = 1,
                 cpus: Collection[int] | None = None) -> Nginx:
        """Answers every request with a small JSON body, at once."""
        port = free_port()
        server = f"""    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type application/json;
        location / {{ return 200 '{UPSTREAM_BODY}'; }}
    }}"""
        return cls("nginx-upstream", prefix, workers, server, access_log=False, port=port,
                   cpus=cpus)

    @classmethod
    def proxy(cls, prefix: Path, workers: int, upstream_port: int,
              cpus: Collection[int] | None = None) -> Nginx:
        """proxy_pass to the upstream over HTTP/1.1 keep-alive, access log on (its default)."""
        port = free_port()
        server = f"""    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
        return cls(f"nginx-proxy-w{workers}", prefix, workers, server, access_log=True,
                   port=port, cpus=cpus)
