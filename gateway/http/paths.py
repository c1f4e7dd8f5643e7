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


@functools.lru_cache(maxsize=4096)  # the same few endpoints are called over and over
def normalise_path(raw_path: str) -> str:
    """The normalised path of a raw request path (no query); raise `IllegalChars`."""
    if not raw_path.startswith("/"):
        raise IllegalChars
    if _ENCODED_DANGEROUS.search(raw_path) or not _ALLOWED.fullmatch(raw_path):
        raise IllegalChars
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
