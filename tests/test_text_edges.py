"""Edges of avcot.text that a dropped loop or a shifted bound would change (found by tests/tools/mutate.py)."""
from __future__ import annotations

import pytest

from avcot.text import cer, normalize_zh, tokenize_zh


@pytest.mark.parametrize(("raw", "expected"), [
    # '.' between e and a combining acute is a word joiner and is dropped; only a second NFKC pass then
    # composes e + U+0301 into é (U+00E9): the fixed-point loop is what makes this one character
    ("e.\u0301", "\u00e9"),
    ("E.\u0301", "\u00e9"),  # lower-cased before the pass that composes
    ("ｅ-\u0301x", "\u00e9x"),  # full-width e folded by NFKC, hyphen joiner dropped, then composed
])
def test_normalize_composes_across_dropped_joiners(raw: str, expected: str) -> None:
    assert normalize_zh(raw) == expected
    assert normalize_zh(normalize_zh(raw)) == normalize_zh(raw)  # idempotent on exactly these cases


def test_cer_of_a_decomposed_accent_against_the_composed_one_is_zero() -> None:
    result = cer("e.\u0301", "\u00e9")
    assert (result.errors, result.ref_len, result.cer) == (0, 1, 0.0)


def test_tokens_of_a_composed_word_are_one_token() -> None:
    assert tokenize_zh("cafe.\u0301 实验") == ["caf\u00e9", "实", "验"]


@pytest.mark.parametrize(("raw", "expected"), [
    ("1,000", "1000"),  # comma between digits joins a number
    ("a,1", "a 1"),  # ... but not after a letter
    ("1,a", "1 a"),  # ... nor before a letter
    ("x.", "x"),  # a joiner at the end is dropped and splits nothing
    (".x", "x"),  # ... and at the start (no word before it)
    ("a..b", "a b"),  # the second '.' is not followed by a word character: the pair splits
])
def test_word_joiner_edges(raw: str, expected: str) -> None:
    assert normalize_zh(raw) == expected
