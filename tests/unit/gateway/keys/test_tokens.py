"""Tokens and key hashes (gateway/keys/tokens.py): pure, no I/O."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.keys.tokens import (
    TOKEN_PREFIX,
    ParsedToken,
    generate_key_id,
    generate_token,
    hash_secret,
    is_key_id,
    parse_token,
    verify_secret,
)

ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


@pytest.fixture(scope="module")
def issued() -> tuple[str, str, str]:
    key_id = generate_key_id()
    token, secret = generate_token(key_id)
    return key_id, token, secret


def test_generate_then_parse_roundtrips(issued: tuple[str, str, str]) -> None:
    key_id, token, secret = issued
    assert parse_token(token) == ParsedToken(key_id, secret)


def test_token_shape(issued: tuple[str, str, str]) -> None:
    key_id, token, secret = issued
    assert token.startswith(f"{TOKEN_PREFIX}{key_id}_{secret}")
    assert len(key_id) == 16 and is_key_id(key_id)
    assert len(secret) * 5 >= 256  # at least 256 bits of base32
    assert len(token) == len("kg_") + 16 + 1 + 52 + 7


def test_tokens_and_ids_are_fresh_each_time() -> None:
    ids = {generate_key_id() for _ in range(50)}
    assert len(ids) == 50
    key_id = generate_key_id()
    assert generate_token(key_id)[1] != generate_token(key_id)[1]


def test_every_single_character_typo_is_rejected(issued: tuple[str, str, str]) -> None:
    _, token, _ = issued
    tried = 0
    for i, original in enumerate(token):
        for replacement in ALPHABET + "_":
            if replacement == original:
                continue
            typo = token[:i] + replacement + token[i + 1:]
            assert parse_token(typo) is None, (i, replacement)
            tried += 1
    assert tried > 2000


def test_swapped_neighbours_are_rejected(issued: tuple[str, str, str]) -> None:
    _, token, _ = issued
    for i in range(len(TOKEN_PREFIX), len(token) - 1):
        if token[i] != token[i + 1]:
            swapped = token[:i] + token[i + 1] + token[i] + token[i + 2:]
            assert parse_token(swapped) is None, i


@pytest.mark.parametrize("cut", [1, 7, 8, 40])
def test_truncated_token_is_rejected(issued: tuple[str, str, str], cut: int) -> None:
    assert parse_token(issued[1][:-cut]) is None


def test_extended_token_is_rejected(issued: tuple[str, str, str]) -> None:
    assert parse_token(issued[1] + "a") is None


@pytest.mark.parametrize("prefix", ["kh_", "KG_", "kg-", "", "xkg_"])
def test_wrong_prefix_is_rejected(issued: tuple[str, str, str], prefix: str) -> None:
    assert parse_token(prefix + issued[1][len(TOKEN_PREFIX):]) is None


def test_uppercase_is_rejected(issued: tuple[str, str, str]) -> None:
    token = issued[1]
    assert parse_token(token.upper()) is None
    assert parse_token(token[:-1] + token[-1].upper()) is None


@pytest.mark.parametrize("wrap", [" {}", "{} ", "{}\n", "\t{}", "Bearer {}"])
def test_whitespace_and_scheme_are_rejected(issued: tuple[str, str, str], wrap: str) -> None:
    assert parse_token(wrap.format(issued[1])) is None


def test_inner_whitespace_is_rejected(issued: tuple[str, str, str]) -> None:
    token = issued[1]
    assert parse_token(token[:30] + " " + token[31:]) is None


@pytest.mark.parametrize("garbage", ["", "kg_", "kg__", "x" * 79, "kg_" + "a" * 76])
def test_garbage_is_rejected(garbage: str) -> None:
    assert parse_token(garbage) is None


def test_is_key_id() -> None:
    assert is_key_id("abcdefgh234567ab")
    assert not is_key_id("abcdefgh234567a")  # 15 characters
    assert not is_key_id("abcdefgh234567abc")
    assert not is_key_id("ABCDEFGH234567AB")
    assert not is_key_id("abcdefgh01234567")  # 0 and 1 are not base32


def test_parsed_token_repr_redacts_the_secret(issued: tuple[str, str, str]) -> None:
    key_id, token, secret = issued
    parsed = parse_token(token)
    assert parsed is not None
    for text in (repr(parsed), str(parsed), f"{parsed}", repr([parsed])):
        assert secret not in text
        assert key_id in text
        assert "redacted" in text


def test_hash_secret_is_hmac_sha256_keyed_by_the_pepper() -> None:
    digest = hash_secret("secret", "pepper")
    assert digest == hmac.new(b"pepper", b"secret", hashlib.sha256).digest()
    assert len(digest) == 32
    assert hash_secret("secret", "other pepper") != digest
    assert hash_secret("secreu", "pepper") != digest


@pytest.mark.parametrize("pepper", ["", "p", "x" * 64, "y" * 65, "z" * 200, "pépère-ключ"])
def test_hash_secret_matches_hmac_for_every_pepper_length(pepper: str) -> None:
    # The precomputed HMAC states must agree with the standard library for keys shorter
    # than, equal to and longer than SHA-256's block (those are hashed first).
    for secret in ("", "secret", "a" * 52):
        expected = hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).digest()
        assert hash_secret(secret, pepper) == expected


def test_verify_secret_accepts_the_right_secret(issued: tuple[str, str, str]) -> None:
    secret = issued[2]
    stored = hash_secret(secret, "p1")
    assert verify_secret(secret, stored, 1, {1: "p1"})


def test_verify_secret_refuses_a_wrong_secret(issued: tuple[str, str, str]) -> None:
    secret = issued[2]
    stored = hash_secret(secret, "p1")
    wrong = ("b" if secret[0] == "a" else "a") + secret[1:]
    assert not verify_secret(wrong, stored, 1, {1: "p1"})
    assert not verify_secret(secret, stored[:-1], 1, {1: "p1"})
    assert not verify_secret(secret, b"", 1, {1: "p1"})


def test_verify_secret_refuses_an_unknown_hash_version(issued: tuple[str, str, str]) -> None:
    secret = issued[2]
    stored = hash_secret(secret, "p1")
    assert not verify_secret(secret, stored, 2, {1: "p1"})
    assert not verify_secret(secret, stored, 1, {})


def test_verify_secret_uses_the_pepper_of_the_hash_version(issued: tuple[str, str, str]) -> None:
    secret = issued[2]
    stored = hash_secret(secret, "p1")
    # Right secret, wrong version: version 2's pepper does not make this hash.
    assert not verify_secret(secret, stored, 2, {1: "p1", 2: "p2"})


def test_pepper_rotation_keeps_old_hashes_valid(issued: tuple[str, str, str]) -> None:
    secret = issued[2]
    old_hash = hash_secret(secret, "old pepper")
    new_hash = hash_secret(secret, "new pepper")
    peppers = {1: "old pepper", 2: "new pepper"}
    assert verify_secret(secret, old_hash, 1, peppers)
    assert verify_secret(secret, new_hash, 2, peppers)
    # Once the old pepper is retired, hashes made with it stop verifying.
    assert not verify_secret(secret, old_hash, 1, {2: "new pepper"})
    assert verify_secret(secret, new_hash, 2, {2: "new pepper"})
