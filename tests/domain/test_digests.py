"""Key digests: CPython's own sha256 where the interpreter has it, always hashlib's digest."""

from __future__ import annotations

import hashlib
import sys

import pytest

from app.domain.digests import BUILTIN_SHA256_MODULES, builtin_sha256, sha256


@pytest.mark.parametrize(
    "text",
    ["", "game_AbCd1234_", "x" * 55, "y" * 64, "z" * 200, "clé ☃ \x00"],
    ids=["empty", "short", "one-block edge", "two blocks", "long", "non-ascii"],
)
def test_the_digest_is_hashlibs_sha256_for_any_text(text: str) -> None:
    data = text.encode("utf-8")
    assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()


def test_the_service_hashes_with_cpythons_own_sha256_not_openssls() -> None:
    expected = "_sha2" if sys.version_info >= (3, 12) else "_sha256"
    assert expected in BUILTIN_SHA256_MODULES
    assert getattr(sha256, "__module__", None) == expected
    assert sha256 is not hashlib.sha256


def test_without_a_builtin_module_hashlibs_sha256_is_the_fallback() -> None:
    assert builtin_sha256(("no_such_module_here",)) is hashlib.sha256


def test_an_importable_module_without_sha256_is_skipped() -> None:
    assert builtin_sha256(("math",)) is hashlib.sha256
    assert builtin_sha256(("math", *BUILTIN_SHA256_MODULES)) is sha256
