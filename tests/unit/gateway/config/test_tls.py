"""gateway.config.tls: a server context from a PEM certificate and key; clear errors otherwise."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from gateway.config.tls import TlsError, server_context
from tests.support.tls import self_signed


def test_context_from_cert_and_key(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    context = server_context(cert, key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match=r"nope\.pem: file not found"):
        server_context(tmp_path / "nope.pem")


def test_key_that_does_not_match(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    _, other_key = self_signed(tmp_path / "other")
    with pytest.raises(TlsError, match="not a usable PEM"):
        server_context(cert, other_key)
