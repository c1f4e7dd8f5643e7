"""Request paths: refuse anything whose meaning depends on decoding, normalise the rest.

What is matched is exactly what is forwarded, so the gateway and the upstream can never
disagree about which endpoint a request is for.
"""

from __future__ import annotations

import functools
import re

from gateway.http.errors import IllegalChars

__all__ = ["normalise_path"]

# SECURITY: encoded separators, dots, NUL and '%' itself (double encoding) change meaning once
# decoded; ';' starts path parameters some servers honour; backslashes are separators to some.
_ENCODED_DANGEROUS = re.compile(r"%(?:2[fFeE5]|5[cC]|00)")
# RFC 3986 pchar plus '/', with '%' only as the start of a well-formed escape.
_ALLOWED = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,=:@/]|%[0-9A-Fa-f]{2})*")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
# Unreserved characters (RFC 3986 section 2.3) but '.', whose escape is refused above.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~")


def _decode_unreserved(match: re.Match[str]) -> str:
    """An escape of an unreserved character as the character (section 6.2.2.2); any other
    escape kept as sent."""
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else match.group(0)


@functools.lru_cache(maxsize=4096)  # the same few endpoints are called over and over
def normalise_path(raw_path: str) -> str:
    """The normalised path of a raw request path (no query); raise `IllegalChars`."""
    if not raw_path.startswith("/"):
        raise IllegalChars
    if _ENCODED_DANGEROUS.search(raw_path) or not _ALLOWED.fullmatch(raw_path):
        raise IllegalChars
    if "%" in raw_path:
        # SECURITY: `%63ancel-all-after` is `cancel-all-after`: matched (and forwarded) as
        # the upstream will read it, never taken for a parameter by a literal route.
        raw_path = _ESCAPE.sub(_decode_unreserved, raw_path)
    # RFC 3986 section 5.2.4 dot-segment removal; empty segments (repeated slashes) dropped.
    segments: list[str] = []
    for segment in raw_path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return "/" + "/".join(segments)
