"""admin_ui.tokens: link tokens are random, stored hashed, and their states are decided purely."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from admin_ui.tokens import LinkState, hash_link_token, is_link_token, link_state, new_link_token

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=30)


def test_new_tokens_are_random_and_only_their_hash_is_kept() -> None:
    token, stored = new_link_token()
    other, _ = new_link_token()
    assert token != other
    assert is_link_token(token)
    assert stored == hashlib.sha256(token.encode()).digest() == hash_link_token(token)
    assert token.encode() not in stored


def test_token_shape() -> None:
    assert not is_link_token("")
    assert not is_link_token("a" * 42)
    assert not is_link_token("a" * 44)
    assert not is_link_token("a" * 42 + "/")
    assert is_link_token("A" * 43)


def test_states() -> None:
    assert link_state(used_at=None, superseded_at=None, expires_at=LATER, now=NOW) \
        is LinkState.VALID
    assert link_state(used_at=None, superseded_at=None, expires_at=NOW, now=NOW) \
        is LinkState.EXPIRED
    assert link_state(used_at=None, superseded_at=NOW, expires_at=LATER, now=NOW) \
        is LinkState.SUPERSEDED
    # Used beats the rest: the user learns the key was already shown.
    assert link_state(used_at=NOW, superseded_at=NOW, expires_at=NOW, now=LATER) \
        is LinkState.USED
    # Superseded beats expired: the newer email is the thing to open.
    assert link_state(used_at=None, superseded_at=NOW, expires_at=NOW, now=LATER) \
        is LinkState.SUPERSEDED
