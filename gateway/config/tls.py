"""TLS termination in the gateway and the admin UI, when a certificate is configured.

Behind a TLS-terminating load balancer, leave the certificate unset: the balancer's
`X-Forwarded-Proto` is believed when it comes from `trusted_proxies`.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["TlsError", "server_context", "upstream_context"]


class TlsError(Exception):
    """The certificate or its key could not be loaded; the message names the file."""


def server_context(cert: Path, key: Path | None = None) -> ssl.SSLContext:
    """A server-side context: TLS 1.2+, the library's secure defaults, HTTP/1.1 by ALPN.

    `cert` is a PEM with the certificate chain (and the key, when `key` is None).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(str(cert), str(key) if key is not None else None)
    except FileNotFoundError as exc:
        raise TlsError(f"{exc.filename or cert}: file not found") from exc
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"{cert}{f' / {key}' if key else ''}: not a usable PEM certificate "
                       f"and key: {exc}") from exc
    return context


def upstream_context(cafile: Path | None = None) -> ssl.SSLContext:
    """A client-side context for https upstreams: certificates and host names verified, against
    the system's authorities or the PEM bundle `cafile` (a private authority)."""
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"{cafile}: not a usable PEM bundle of certificates: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context
