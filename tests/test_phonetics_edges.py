"""Edges of avcot.phonetics that a wrong offset, bound or branch would change (found by tests/tools/mutate.py)."""
from __future__ import annotations

import pytest

from avcot.phonetics import (
    Span,
    ambiguous_spans,
    diff_blocks,
    homophones,
    near_homophone,
    pinyin,
    split_syllable,
    syllables,
)
from avcot.text import align_tokens, normalize_zh


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
    # the same inside a sentence: the block of two substitutions starts at token 2
    assert ambiguous_spans("他说我实", "他说你试") == [Span(3, 4, 3, 4, "实", "试", "shi")]


def test_homophone_runs_on_both_sides_of_a_non_homophone_inside_one_block() -> None:
    # tokens 2-4 are all substituted (实我室 -> 试你事): 实/试 and 室/事 read alike, 我/你 does not
    spans = ambiguous_spans("他说实我室", "他说试你事")
    assert spans == [Span(2, 3, 2, 3, "实", "试", "shi"), Span(4, 5, 4, 5, "室", "事", "shi")]


@pytest.mark.parametrize(("a", "b", "readings"), [
    ("知", "资", "zhi / zi"),
    ("吃", "词", "chi / ci"),
    ("是", "四", "shi / si"),
    ("男", "蓝", "nan / lan"),
    ("湖", "福", "hu / fu"),
    ("想", "先", "xiang / xian"),
    ("光", "关", "guang / guan"),
    ("山", "伤", "shan / shang"),
    ("风", "分", "feng / fen"),
    ("星", "新", "xing / xin"),
])
def test_each_listed_confusion_is_a_near_homophone(a: str, b: str, readings: str) -> None:
    # one pair per confusion the module lists (flat/retroflex, n/l, f/h, front/back nasals), both ways
    assert f"{pinyin(a, tones=False)} / {pinyin(b, tones=False)}" == readings
    assert near_homophone(a, b) and near_homophone(b, a)


@pytest.mark.parametrize(("a", "b"), [
    ("吃", "七"),  # chi / qi: ch ~ q is not a listed confusion
    ("安", "参"),  # an / can: a zero initial is not c
    ("想", "香港"),  # one syllable against two
    ("", "你"),
])
def test_other_differences_are_not_near_homophones(a: str, b: str) -> None:
    assert not near_homophone(a, b)


def test_syllables_default_to_tone_digits() -> None:
    assert syllables("差拨") == ("chai1", "bo1")
    assert syllables("差拨 iPhone", tones=False) == ("chai", "bo", "iphone")


def test_near_homophones_ignore_tones() -> None:
    # 吃 chi1 / 词 ci2 and 想 xiang3 / 先 xian1 differ in tone as well: still near-homophones
    assert pinyin("吃词想先") == "chi1 ci2 xiang3 xian1"
    assert near_homophone("吃", "词") and near_homophone("想", "先")


def test_split_syllable_of_a_syllabic_nasal_has_no_initial() -> None:
    # 呣 m, 嗯 n: the whole syllable is the final (an initial needs a final after it)
    assert split_syllable("m") == ("", "m")
    assert split_syllable("n") == ("", "n")


def test_lexicon_files_a_heteronym_phrase_under_its_first_reading() -> None:
    # pypinyin lists 朝阳 as [zhāo or cháo] yáng: the lexicon uses the first reading, so it is a candidate
    # for another "zhao yang" word and not for a "chao yang" one
    assert "朝阳" in homophones("昭阳")
    assert "朝阳" not in homophones("潮阳")


def test_toned_lexicon_spells_the_neutral_tone_5() -> None:
    # 吗 and 嘛 both read ma5 (neutral) in pypinyin's data; the toned key of a lookup is ("ma5",) too
    assert pinyin("吗") == "ma5"
    assert "嘛" in homophones("吗", tones=True)


def test_diff_blocks_hand_alignments() -> None:
    # a b c / a x c: one substitution block at token 1 on both sides
    assert diff_blocks(3, 3, align_tokens(list("abc"), list("axc"))) == [(1, 2, 1, 2)]
    # a b c d / a c d e: b deleted (block 1-2 in a, empty at 1 in b), e inserted at the end (empty at 4 in a)
    assert diff_blocks(4, 4, align_tokens(list("abcd"), list("acde"))) == [(1, 2, 1, 1), (4, 4, 3, 4)]
    assert diff_blocks(2, 2, align_tokens(list("ab"), list("ab"))) == []


def test_insertion_in_the_second_output_shifts_its_offsets() -> None:
    # 嗯 exists in b only (an insertion): 实/试 is token 2 of a and token 3 of b
    assert ambiguous_spans("我在实验室", "嗯我在试验室") == [Span(2, 3, 3, 4, "实", "试", "shi")]


def test_trailing_homophone_after_an_insertion() -> None:
    # the last block starts at token 3 of a and token 2 of b and runs to the end of both
    assert ambiguous_spans("嗯他说是", "他说事") == [Span(3, 4, 2, 3, "是", "事", "shi")]
