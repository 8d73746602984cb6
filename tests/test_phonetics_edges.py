"""Edges of avcot.phonetics that a wrong offset, bound or branch would change (found by tests/tools/mutate.py)."""
from __future__ import annotations

from avcot.phonetics import Span, ambiguous_spans
from avcot.text import normalize_zh


def test_offsets_count_the_space_between_adjacent_word_tokens() -> None:
    # normalised "iphone 13实验": iphone 0-6, the joining space at 6, "13" 7-9, 实 at 9 (not 8, which is "3")
    spans = ambiguous_spans("iPhone 13 实验", "iPhone 13 试验")
    assert spans == [Span(9, 10, 9, 10, "实", "试", "shi")]
    assert normalize_zh("iPhone 13 实验")[9:10] == "实"


def test_difference_in_the_last_character() -> None:
    # the differing run reaches the end of both sentences: the block closed after the alignment loop
    assert ambiguous_spans("他说是", "他说事") == [Span(2, 3, 2, 3, "是", "事", "shi")]


def test_difference_in_the_first_character() -> None:
    assert ambiguous_spans("是他说", "事他说") == [Span(0, 1, 0, 1, "是", "事", "shi")]


def test_leading_insertion_shifts_only_one_side() -> None:
    # 嗯 is inserted in a only: the homophone pair sits at token 3 of a and token 2 of b
    assert ambiguous_spans("嗯我在实验室", "我在试验室") == [Span(3, 4, 2, 3, "实", "试", "shi")]


def test_insertion_inside_a_run_of_substitutions_is_not_a_span() -> None:
    # unequal-length block (柴伯 vs 差一拨): the pinyin cannot agree token by token, so no span
    assert ambiguous_spans("林冲对柴伯说", "林冲对差一拨说") == []


def test_two_separate_homophone_pairs_in_one_block() -> None:
    # 实验室 -> 试验事: 验 agrees in characters; two spans, one per character pair, none for 验
    spans = ambiguous_spans("实验室工作", "试验事工作")
    assert spans == [Span(0, 1, 0, 1, "实", "试", "shi"), Span(2, 3, 2, 3, "室", "事", "shi")]


def test_a_run_of_several_homophone_characters_is_one_span() -> None:
    # the three substitutions read "shi yan shi" on both sides: one span covering all three
    assert ambiguous_spans("实验室", "试眼事") == [
        Span(0, 3, 0, 3, "实验室", "试眼事", "shi yan shi")]


def test_homophone_run_after_a_non_homophone_substitution() -> None:
    # 我 -> 你 reads differently (no span); 实 -> 试 right after it is one
    assert ambiguous_spans("我实", "你试") == [Span(1, 2, 1, 2, "实", "试", "shi")]
