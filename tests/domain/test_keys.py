"""The key format: generated keys parse, and any deviation is caught offline."""

from __future__ import annotations

import hashlib

import pytest

from app.domain.keys import (
    KEY_LENGTH,
    MalformedApiKey,
    checksum,
    digest,
    generate_api_key,
    is_valid_prefix,
    parse_api_key,
)


def test_generated_key_parses_back_to_its_prefix() -> None:
    key = generate_api_key()
    assert key.plaintext.startswith(key.prefix + "_")
    assert key.prefix.startswith("game_") and is_valid_prefix(key.prefix)
    assert len(key.plaintext) == KEY_LENGTH
    assert parse_api_key(key.plaintext) == key


def test_generated_keys_are_distinct() -> None:
    keys = {generate_api_key().plaintext for _ in range(1_000)}
    assert len(keys) == 1_000


def test_every_single_character_change_is_rejected() -> None:
    key = generate_api_key().plaintext
    for position in range(len(key)):
        replacement = "A" if key[position] != "A" else "B"
        tampered = key[:position] + replacement + key[position + 1 :]
        with pytest.raises(MalformedApiKey):
            parse_api_key(tampered)


@pytest.mark.parametrize(
    "text",
    ["", "game_", "x" * 42, "game_AbCd1234_" + "a" * 28 + "\n", "GAME_AbCd1234_" + "a" * 28],
)
def test_malformed_shapes_are_rejected(text: str) -> None:
    with pytest.raises(MalformedApiKey):
        parse_api_key(text)


def test_a_key_with_a_recomputed_checksum_but_wrong_alphabet_is_rejected() -> None:
    body = "game_AbCd1234_" + "-" * 22
    with pytest.raises(MalformedApiKey):
        parse_api_key(body + checksum(body))


def test_digest_is_sha256_hex_of_the_plaintext() -> None:
    key = generate_api_key().plaintext
    assert digest(key) == hashlib.sha256(key.encode()).hexdigest()


def test_plaintext_is_not_in_the_repr() -> None:
    key = generate_api_key()
    assert key.plaintext not in repr(key)
