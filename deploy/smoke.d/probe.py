"""deploy/smoke's client inside the compose network, run by `python - MODE ...` in a container
of the Keygate image (standard library only, so any Python 3.11 runs it).

Modes (each prints one JSON document on stdout):
  get URL TOKEN [NAME:VALUE ...]      one GET; its status, error code and headers
  rotate PATH TOKEN COUNT URL...      COUNT GETs of PATH, the gateways in turn
  revoke PATH TOKEN URL...            warm every gateway's cache with the key, print READY,
                                      then poll each gateway until it refuses the key
Every request opens a connection of its own, so a gateway's worker processes all take some.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

__all__ = ["main"]

_CONFIRMATIONS = 6  # refusals in a row before a gateway counts as having dropped the key
_WARM_UP = 12  # accepted requests per gateway before the deletion
_POLL_PAUSE = 0.002
_REVOKE_TIMEOUT = 15.0


def request(url: str, token: str | None, headers: dict[str, str] | None = None
            ) -> dict[str, Any]:
    """One GET on a fresh connection: status, error code, headers, and the time it came back."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=5)
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    try:
        conn.request("GET", parts.path or "/", headers=sent)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    code = ""
    try:
        document = json.loads(body)
        if isinstance(document, dict):
            code = str(document.get("error") or "")
    except ValueError:
        pass
    return {"status": response.status, "code": code, "at": time.time(),
            "headers": {k.lower(): v for k, v in response.getheaders()}}


def rotate(path: str, token: str, count: int, urls: list[str]) -> list[dict[str, Any]]:
    answers = []
    for index in range(count):
        base = urls[index % len(urls)]
        answer = request(base + path, token)
        answers.append({"gateway": index % len(urls) + 1, "status": answer["status"],
                        "code": answer["code"],
                        "remaining": answer["headers"].get("x-ratelimit-remaining"),
                        "retry_after": answer["headers"].get("retry-after")})
    return answers


def _poll(url: str, token: str, found: dict[str, Any]) -> None:
    deadline = time.monotonic() + _REVOKE_TIMEOUT
    in_a_row = 0
    while time.monotonic() < deadline:
        answer = request(url, token)
        found["polls"] += 1
        if answer["status"] == 200:
            found["last_accepted"] = answer["at"]
            found["first_refused"] = None
            in_a_row = 0
        else:
            if found["first_refused"] is None:
                found["first_refused"] = answer["at"]
                found["code"] = answer["code"]
            in_a_row += 1
            if in_a_row >= _CONFIRMATIONS:
                found["done"] = True
                return
        time.sleep(_POLL_PAUSE)


def revoke(path: str, token: str, urls: list[str]) -> list[dict[str, Any]]:
    for url in urls:
        for _ in range(_WARM_UP):
            answer = request(url + path, token)
            if answer["status"] != 200:
                raise SystemExit(f"warm-up at {url}: {answer['status']} {answer['code']}")
    results = [{"gateway": i + 1, "polls": 0, "last_accepted": None, "first_refused": None,
                "code": "", "done": False} for i in range(len(urls))]
    threads = [threading.Thread(target=_poll, args=(url + path, token, found))
               for url, found in zip(urls, results, strict=True)]
    for thread in threads:
        thread.start()
    print("READY", flush=True)
    for thread in threads:
        thread.join()
    return results


def main(argv: list[str]) -> int:
    mode, args = argv[0], argv[1:]
    result: object
    if mode == "get":
        headers = dict(item.split(":", 1) for item in args[2:])
        result = request(args[0], args[1] or None, headers)
    elif mode == "rotate":
        result = rotate(args[0], args[1], int(args[2]), args[3:])
    elif mode == "revoke":
        result = revoke(args[0], args[1], args[2:])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
