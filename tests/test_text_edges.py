"""Edges of avcot.text that a dropped loop or a shifted bound would change (found by tests/tools/mutate.py)."""
from __future__ import annotations

import sys
import types
from typing import get_args

import pytest

from avcot import text
from avcot.text import (
    SCORINGS, Scoring, cer, normalize_zh, scored_tokens, to_simplified, tokenize_zh,
    wenet_align_tokens, wenet_tokens,
)


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


@pytest.mark.parametrize(("raw", "expected"), [
    ("a1,000", "a1000"),  # the comma follows a digit (the word's last character), so it joins
    ("1a,2", "1a 2"),  # ... the word starts with a digit but ends with a letter: the comma splits
])
def test_comma_joins_only_after_a_digit_at_the_end_of_the_word(raw: str, expected: str) -> None:
    assert normalize_zh(raw) == expected


def test_scorings_lists_every_scoring_and_each_is_accepted() -> None:
    assert set(SCORINGS) == set(get_args(Scoring))  # the eval CLI offers exactly these
    assert all(scored_tokens("实验 ab", scoring=s) for s in SCORINGS)


def test_installed_opencc_is_used_with_its_t2s_config(monkeypatch) -> None:
    """With opencc importable, to_simplified is OpenCC('t2s').convert (not the small built-in table)."""
    made: list[str] = []

    class FakeOpenCC:
        def __init__(self, config: str) -> None:
            made.append(config)

        def convert(self, s: str) -> str:
            return s.replace("乾", "干")  # a pair the built-in table does not have

    monkeypatch.setitem(sys.modules, "opencc", types.SimpleNamespace(OpenCC=FakeOpenCC))
    text._opencc_t2s.cache_clear()
    try:
        assert to_simplified("乾淨") == "干淨"  # 淨 is in the table, but the converter replaces the table
        assert made == ["t2s"]
    finally:
        text._opencc_t2s.cache_clear()


def test_traditional_characters_stay_unless_t2s_is_asked_for() -> None:
    assert tokenize_zh("這個") == ["這", "個"]  # default: no conversion (the reference may be traditional)
    assert tokenize_zh("這個", t2s=True) == ["这", "个"]
    assert normalize_zh("這個") == "這個" and normalize_zh("這個", t2s=True) == "这个"
    assert wenet_tokens("這個") == ["這", "個"] and wenet_tokens("這個", t2s=True) == ["这", "个"]


@pytest.mark.parametrize(("raw", "expected"), [
    # compute-cer.py runs a chunk on over characters with ord < 128 and stops at the first >= 128
    ("a\x7fb", ["A\x7fB"]),  # DEL (127) is ASCII: one chunk, not alphanumeric, so one token
    ("a\x80b", ["A", "\x80B"]),  # U+0080 (a control, not skipped) ends 'a' and starts a chunk of its own
])
def test_wenet_chunks_stop_at_the_first_non_ascii_character(raw: str, expected: list[str]) -> None:
    assert wenet_tokens(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("圆周率3.14", ["圆", "周", "率", "3.14"]),  # each Lo character is a chunk of its own, even before ASCII
    ("实验。 好", ["实", "验", "好"]),  # a dropped mark and the space after it both start no chunk
])
def test_wenet_lo_characters_and_skipped_marks(raw: str, expected: list[str]) -> None:
    assert wenet_tokens(raw) == expected


def test_wenet_skips_unassigned_code_points() -> None:
    # U+0378 is unassigned (category Cn): compute-cer.py skips it like a space
    assert wenet_tokens("实\u0378验") == ["实", "验"]


def test_wenet_alignment_prefers_deletion_on_a_three_way_tie() -> None:
    # ref "ab", hyp "ba": at the last cell deletion, insertion and substitution all cost 2; compute-cer.py
    # keeps the deletion (first), so the path ends by deleting 'b' after matching 'a'
    assert wenet_align_tokens(["a", "b"], ["b", "a"]) == [("", "b", "ins"), ("a", "a", "equal"), ("b", "", "del")]


def test_the_two_scorings_align_a_shifted_pair_differently() -> None:
    # 你好 -> 好吗 costs 2 either way; jiwer (avcot scoring) takes two substitutions, compute-cer.py's
    # tie-break (wenet scoring) a deletion, a hit and an insertion
    avcot, wenet = text.cer("你好", "好吗"), text.cer("你好", "好吗", scoring="wenet")
    assert (avcot.substitutions, avcot.deletions, avcot.insertions, avcot.hits) == (2, 0, 0, 0)
    assert (wenet.substitutions, wenet.deletions, wenet.insertions, wenet.hits) == (0, 1, 1, 1)
    assert text.align("你好", "好吗", scoring="wenet") == [("你", "", "del"), ("好", "好", "equal"), ("", "吗", "ins")]


def test_align_tokens_with_an_empty_side() -> None:
    assert text.align_tokens([], ["a", "b"]) == [("", "a", "ins"), ("", "b", "ins")]
    assert text.align_tokens(("a",), []) == [("a", "", "del")]
    assert text.align_tokens([], []) == [] and text.cer("", "").errors == 0
    assert text.align_tokens(["x", "b"], ["a", "b"]) == [("x", "a", "sub"), ("b", "b", "equal")]


def test_scoring_defaults_are_avcot_without_t2s() -> None:
    assert text.scored_tokens("們好") == text.tokenize_zh("們好") == ["們", "好"]  # no t2s unless asked
    assert text.cer("们", "們").cer == 1.0 and text.cer("们", "們", t2s=True).cer == 0.0
    assert text.align("们", "們") == [("们", "們", "sub")]
    assert text.corpus_cer(["们"], ["們"]).errors == 1 and text.corpus_cer(["们"], ["們"], t2s=True).errors == 0
