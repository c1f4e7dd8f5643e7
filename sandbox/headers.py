"""The headers by which the gateway tells the sandbox whom a request acts for."""

from __future__ import annotations

__all__ = ["ACCOUNT_HEADER", "KEY_ID_HEADER", "PERMISSIONS_HEADER"]

ACCOUNT_HEADER = "X-Gateway-Account-Id"
KEY_ID_HEADER = "X-Gateway-Key-Id"
PERMISSIONS_HEADER = "X-Gateway-Permissions"  # comma-separated permission names
