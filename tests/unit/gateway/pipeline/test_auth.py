"""Steps `check_client_blocked`, `parse_key`, `lookup_key`, and the keep-alive shortcut: a key
proven on a connection is not hashed again while the cache holds that very record."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

import gateway.pipeline.auth as auth_module
from gateway.http.errors import ClientIpBlocked, KeyInvalid, KeyMissing
from gateway.keys.tokens import generate_key_id, generate_token
from gateway.pipeline.auth import check_client_blocked, lookup_key, parse_key
from gateway.pipeline.context import ConnectionState, RequestContext
from tests.support.pipeline import FakeServices, Minted, context


@pytest.fixture
def services() -> FakeServices:
    return FakeServices()


@pytest.fixture
def verified(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The key ids whose secret was checked against its hash, in order."""
    calls: list[str] = []
    real = auth_module.verify_secret

    def counting(secret: str, stored: bytes, version: int, peppers: object) -> bool:
        calls.append(secret)
        return real(secret, stored, version, peppers)  # type: ignore[arg-type]

    monkeypatch.setattr(auth_module, "verify_secret", counting)
    yield calls


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def authenticate(ctx: RequestContext) -> None:
    """`parse_key` then `lookup_key`, awaiting only when the lookup must wait."""
    parse_key(ctx)
    pending = lookup_key(ctx)
    if pending is not None:
        await pending


def forged(minted: Minted) -> str:
    """A well-formed token with `minted`'s key id and another secret (a valid checksum)."""
    token, _ = generate_token(minted.record.key_id)
    assert token != minted.token
    return token


# --- check_client_blocked ------------------------------------------------------------------

def test_no_blocks_is_a_no_op(services: FakeServices) -> None:
    assert not services.guard.has_blocks
    assert check_client_blocked(context(services)) is None


def test_a_blocked_address_is_refused_with_retry_after(services: FakeServices) -> None:
    services.guard.on_block_message(f"198.51.100.7 {time.time() + 30.2}")
    with pytest.raises(ClientIpBlocked) as refused:
        check_client_blocked(context(services, ip="198.51.100.7"))
    assert refused.value.retry_after == 31
    assert refused.value.headers() == {"Retry-After": "31"}
    check_client_blocked(context(services, ip="198.51.100.8"))  # another address: not blocked


def test_an_ipv6_block_matches_the_canonical_text(services: FakeServices) -> None:
    services.guard.on_block_message(f"2001:db8::1 {time.time() + 10}")
    with pytest.raises(ClientIpBlocked):
        check_client_blocked(context(services, ip="2001:0db8:0000::0001"))


def test_an_expired_block_is_lifted(services: FakeServices) -> None:
    services.guard.on_block_message(f"198.51.100.7 {time.time() - 1}")
    check_client_blocked(context(services, ip="198.51.100.7"))
    assert not services.guard.has_blocks


# --- parse_key -----------------------------------------------------------------------------

def test_no_authorization_is_missing_credentials(services: FakeServices) -> None:
    with pytest.raises(KeyMissing):
        parse_key(context(services))


@pytest.mark.parametrize("value", [
    "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token kg_x", "kg_abc",
    "Bearer kg_aaaaaaaaaaaaaaaa_" + "a" * 59, "Bearer " + "x" * 500, "Bearer kg_\u00e9",
])
def test_malformed_values_are_invalid_without_io(services: FakeServices, value: str) -> None:
    with pytest.raises(KeyInvalid):
        parse_key(context(services, authorization=(value,)))
    assert services.bottom.loads == 0


def test_a_token_with_a_wrong_checksum_is_invalid(services: FakeServices) -> None:
    minted = services.mint()
    broken = minted.token[:-1] + ("a" if minted.token[-1] != "a" else "b")
    with pytest.raises(KeyInvalid):
        parse_key(context(services, authorization=(bearer(broken),)))


def test_two_keys_in_one_request_are_refused(services: FakeServices) -> None:
    one, two = services.mint(), services.mint()
    with pytest.raises(KeyInvalid):
        parse_key(context(services, authorization=(bearer(one.token), bearer(two.token))))
    # The same key twice is still two Authorization headers: refused, not picked.
    with pytest.raises(KeyInvalid):
        parse_key(context(services, authorization=(bearer(one.token), bearer(one.token))))


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_scheme_is_case_insensitive_and_spaces_trimmed(
        services: FakeServices, scheme: str) -> None:
    minted = services.mint()
    ctx = context(services, authorization=(f"{scheme} {minted.token}  ",))
    parse_key(ctx)
    assert ctx.token is not None and ctx.token.key_id == minted.record.key_id


# --- lookup_key ----------------------------------------------------------------------------

async def test_a_cold_key_waits_then_a_warm_key_answers_at_once(services: FakeServices) -> None:
    minted = services.mint()
    ctx = context(services, authorization=(bearer(minted.token),))
    parse_key(ctx)
    pending = lookup_key(ctx)
    assert pending is not None, "a cold key must be looked up"
    await pending
    assert ctx.key is not None and ctx.key.key_id == minted.record.key_id
    again = context(services, authorization=(bearer(minted.token),))
    parse_key(again)
    assert lookup_key(again) is None, "a warm key answers without awaiting"
    assert again.key is ctx.key


async def test_unknown_and_deleted_keys_are_invalid(services: FakeServices) -> None:
    unknown, _ = generate_token(generate_key_id())
    with pytest.raises(KeyInvalid):
        await authenticate(context(services, authorization=(bearer(unknown),)))
    minted = services.mint()
    await services.warm(minted)
    del services.bottom.records[minted.record.key_id]
    services.memory.invalidate(minted.record.key_id)
    with pytest.raises(KeyInvalid):
        await authenticate(context(services, authorization=(bearer(minted.token),)))


async def test_a_forged_secret_for_a_real_key_id_is_invalid(services: FakeServices) -> None:
    minted = services.mint()
    await services.warm(minted)
    with pytest.raises(KeyInvalid):
        await authenticate(context(services, authorization=(bearer(forged(minted)),)))


async def test_a_key_under_an_old_pepper_version_with_no_pepper_is_invalid(
        services: FakeServices) -> None:
    import dataclasses

    minted = services.mint()
    services.bottom.records[minted.record.key_id] = dataclasses.replace(
        minted.record, hash_version=7)
    with pytest.raises(KeyInvalid):
        await authenticate(context(services, authorization=(bearer(minted.token),)))


# --- the keep-alive shortcut ---------------------------------------------------------------

async def test_the_same_value_on_the_same_connection_is_verified_once(
        services: FakeServices, verified: list[str]) -> None:
    minted = services.mint()
    conn = ConnectionState()
    for _ in range(3):
        ctx = context(services, authorization=(bearer(minted.token),), connection=conn)
        await authenticate(ctx)
        assert ctx.key is not None and ctx.key.key_id == minted.record.key_id
    assert len(verified) == 1
    assert conn.authorization == bearer(minted.token)


async def test_another_connection_verifies_again(
        services: FakeServices, verified: list[str]) -> None:
    minted = services.mint()
    for conn in (ConnectionState(), ConnectionState(), None):
        await authenticate(context(services, authorization=(bearer(minted.token),),
                                   connection=conn))
    assert len(verified) == 3


async def test_a_refilled_record_forces_verification_again(
        services: FakeServices, verified: list[str]) -> None:
    """An invalidation (a change to the key) and a refill bring a new record: the shortcut,
    tied to the record it was proven against, no longer applies, and the new record (here
    with other permissions) is the one the request gets."""
    import dataclasses

    minted = services.mint(("read",))
    conn = ConnectionState()
    await authenticate(context(services, authorization=(bearer(minted.token),),
                               connection=conn))
    services.bottom.records[minted.record.key_id] = dataclasses.replace(
        minted.record, permissions=frozenset({"read", "trade"}))
    services.memory.invalidate(minted.record.key_id)
    ctx = context(services, authorization=(bearer(minted.token),), connection=conn)
    await authenticate(ctx)
    assert len(verified) == 2
    assert ctx.key is not None and ctx.key.permissions == {"read", "trade"}
    assert conn.key is ctx.key


async def test_a_deleted_key_fails_on_a_connection_that_proved_it(
        services: FakeServices, verified: list[str]) -> None:
    minted = services.mint()
    conn = ConnectionState()
    value = bearer(minted.token)
    await authenticate(context(services, authorization=(value,), connection=conn))
    del services.bottom.records[minted.record.key_id]
    services.memory.invalidate(minted.record.key_id)
    for _ in range(2):  # the connection keeps no way around the deletion
        with pytest.raises(KeyInvalid):
            await authenticate(context(services, authorization=(value,), connection=conn))


async def test_a_cache_expiry_and_reload_forces_verification_again(
        services: FakeServices, verified: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    minted = services.mint()
    conn = ConnectionState()
    await authenticate(context(services, authorization=(bearer(minted.token),),
                               connection=conn))
    later = time.monotonic() + 3600
    monkeypatch.setattr(time, "monotonic", lambda: later)
    await authenticate(context(services, authorization=(bearer(minted.token),),
                               connection=conn))
    assert len(verified) == 2


async def test_a_forged_secret_on_a_connection_that_proved_the_key(
        services: FakeServices, verified: list[str]) -> None:
    """The right key id with another secret, on a connection where the real key was proven:
    a new value, so a full check, and refused; the real key still works after it."""
    minted = services.mint()
    conn = ConnectionState()
    await authenticate(context(services, authorization=(bearer(minted.token),),
                               connection=conn))
    with pytest.raises(KeyInvalid):
        await authenticate(context(services, authorization=(bearer(forged(minted)),),
                                   connection=conn))
    assert len(verified) == 2
    ctx = context(services, authorization=(bearer(minted.token),), connection=conn)
    await authenticate(ctx)
    assert ctx.key is not None


async def test_a_forged_secret_on_a_connection_that_proved_another_key(
        services: FakeServices, verified: list[str]) -> None:
    """A connection (a proxy carrying several clients) proved key A; a request presents
    key B's id with a forged secret: checked in full, and refused."""
    one, two = services.mint(), services.mint()
    await services.warm(two)
    conn = ConnectionState()
    await authenticate(context(services, authorization=(bearer(one.token),), connection=conn))
    with pytest.raises(KeyInvalid):
        await authenticate(context(services, authorization=(bearer(forged(two)),),
                                   connection=conn))
    with pytest.raises(KeyInvalid):
        await authenticate(context(services, authorization=(bearer(forged(one)),),
                                   connection=conn))
    # B's real token on the same connection is checked, then becomes the proven one.
    ctx = context(services, authorization=(bearer(two.token),), connection=conn)
    await authenticate(ctx)
    assert ctx.key is not None and ctx.key.key_id == two.record.key_id
    assert conn.key is ctx.key and conn.authorization == bearer(two.token)
    assert len(verified) == 4


async def test_the_shortcut_compares_the_whole_value(
        services: FakeServices, verified: list[str]) -> None:
    """A value that differs from the proven one only in the scheme's case or in spacing is
    not the proven value: parsed and verified again (and accepted: it is the same key)."""
    minted = services.mint()
    conn = ConnectionState()
    for value in (f"Bearer {minted.token}", f"bearer {minted.token}", f"Bearer {minted.token} "):
        await authenticate(context(services, authorization=(value,), connection=conn))
    assert len(verified) == 3


async def test_non_ascii_values_never_reach_the_constant_time_compare(
        services: FakeServices) -> None:
    minted = services.mint()
    conn = ConnectionState()
    await authenticate(context(services, authorization=(bearer(minted.token),),
                               connection=conn))
    with pytest.raises(KeyInvalid):  # not a TypeError from hmac.compare_digest
        parse_key(context(services, authorization=("Bearer kg_\u00e9\u00e9",), connection=conn))


async def test_concurrent_cold_lookups_share_one_load(services: FakeServices) -> None:
    minted = services.mint()
    contexts = [context(services, authorization=(bearer(minted.token),)) for _ in range(5)]
    await asyncio.gather(*(authenticate(ctx) for ctx in contexts))
    assert services.bottom.loads == 1
    assert len({id(ctx.key) for ctx in contexts}) == 1
